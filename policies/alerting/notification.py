"""What the dispatcher hands out: notifications, ingest results and status counts (values only)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from policies.alerting.model import Alert
from policies.alerting.nflog import NotifyReason

__all__ = ["DispatchStatus", "IngestResult", "Notification"]


@dataclass(frozen=True, kw_only=True)
class Notification:
    """One message to one receiver about one group; ``due_at`` is the tick it belongs to."""

    receiver: str
    group_key: str
    route_id: str
    group_labels: Mapping[str, str]
    firing: tuple[Alert, ...]
    resolved: tuple[Alert, ...]
    due_at: float
    flushed_at: float
    reason: NotifyReason
    muted: int = 0  # alerts of the group silenced or inhibited at this tick

    @property
    def alerts(self) -> tuple[Alert, ...]:
        """Firing then resolved alerts."""
        return self.firing + self.resolved

    def for_integration(self, send_resolved: bool) -> tuple[Alert, ...]:
        """The alerts one integration gets: resolved ones only if it sends resolved alerts."""
        return self.alerts if send_resolved else self.firing

    @property
    def status(self) -> str:
        """``firing`` if any alert fires, else ``resolved`` (Alertmanager's group status)."""
        return "firing" if self.firing else "resolved"


@dataclass(frozen=True, kw_only=True)
class IngestResult:
    """What an ``ingest`` call did."""

    accepted: int
    unrouted: int  # matched no route with a receiver (a tree without a root receiver)
    new_groups: int
    refused: int = 0  # new alerts beyond the dispatcher's max_alerts (counted, not kept)
    overflowed: int = 0  # alerts that found their group table full and went to the route's overflow group


@dataclass(frozen=True, kw_only=True)
class DispatchStatus:
    """Counts for the health summary: what fires, what is muted and why."""

    groups: int
    firing: int
    unrouted: int
    silenced: int
    inhibited: int
    time_muted_groups: int
    log_entries: int
    silences_active: int
    alerts_refused: int = 0  # since start: new alerts beyond max_alerts
    groups_overflowed: int = 0  # since start: alerts put in an overflow group (group table full)
