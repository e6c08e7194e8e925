"""The notification log: what each receiver was last told about each group, and whether to tell again.

Decision rules are Alertmanager's ``DedupStage.needsUpdate`` (notify/dedup_stage.go), applied to
the alerts a receiver may see (silenced and inhibited ones removed):

1. never notified: notify if anything fires;
2. a firing alert the receiver was not told about: notify;
3. nothing fires any more but the receiver was told something fired: notify (the "all resolved"
   message is logged even when no integration sends resolved alerts, to clear the entry);
4. send_resolved and a resolved alert the receiver was not told about: notify;
5. otherwise only when ``repeat_interval`` has passed since the last successful send.

One deliberate difference: the time recorded for a send is the group_interval *tick* the
notification was due at, not the wall clock after delivery. Alertmanager compares against the
delivery time, which lands a hair after the tick, so a 4h repeat with 5m ticks arrives at 4h05m;
here it arrives on the first tick at or after 4h, which is what the configuration says.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["LogEntry", "NotifyReason", "needs_update"]


class NotifyReason(StrEnum):
    """Why a notification is sent (Alertmanager's NotifyReason names)."""

    FIRST = "first_notification"
    NEW_ALERTS = "new_alerts_in_group"
    ALL_RESOLVED = "all_alerts_resolved"
    NEW_RESOLVED = "new_resolved_alerts"
    REPEAT = "repeat_interval_elapsed"


@dataclass(frozen=True, kw_only=True)
class LogEntry:
    """The last successful notification of one group to one receiver (alert fingerprints)."""

    firing: frozenset[str]
    resolved: frozenset[str]
    sent_at: float  # the tick the notification was due at
    delivered_at: float  # when delivery was confirmed (for operators; decisions use sent_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "firing": sorted(self.firing),
            "resolved": sorted(self.resolved),
            "sentAt": self.sent_at,
            "deliveredAt": self.delivered_at,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LogEntry:
        return cls(
            firing=frozenset(raw.get("firing") or ()),
            resolved=frozenset(raw.get("resolved") or ()),
            sent_at=float(raw["sentAt"]),
            delivered_at=float(raw.get("deliveredAt", raw["sentAt"])),
        )


def needs_update(
    entry: LogEntry | None,
    firing: Collection[str],
    resolved: Collection[str],
    *,
    send_resolved: bool,
    repeat_interval: float,
    tick: float,
) -> NotifyReason | None:
    """Whether (and why) a receiver should be notified about a group at ``tick``; None = no."""
    if entry is None:
        return NotifyReason.FIRST if firing else None
    if not entry.firing.issuperset(firing):
        return NotifyReason.FIRST if not entry.firing else NotifyReason.NEW_ALERTS
    if not firing:
        return NotifyReason.ALL_RESOLVED if entry.firing else None
    if send_resolved and not entry.resolved.issuperset(resolved):
        return NotifyReason.NEW_RESOLVED
    if tick - entry.sent_at >= repeat_interval:
        return NotifyReason.REPEAT
    return None
