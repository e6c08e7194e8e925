"""What the AlertManager actor does with a due notification, pure: which integrations get it (the
receiver's own, plus the MQTT mirror of every notification on the alerts topic), which of them
still need it after a partial delivery, and when the notification counts as delivered in the
notification log (every integration settled).

A notification whose delivery settled for some integrations but not all stays undelivered, so the
dispatcher hands it out again at the group's next tick; :class:`PartialDeliveries` remembers which
integrations already took that very content (same firing and resolved fingerprints), so a retry
reaches only the ones that missed it. Content that changed meanwhile goes to every integration.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from policies.alerting.notification import Notification
from policies.alerting.receivers import Integration

__all__ = ["MIRROR_KEY", "Content", "PartialDeliveries", "Settlement", "content_of", "save_due", "with_mirror"]

Content = tuple[frozenset[str], frozenset[str]]
"""The fingerprints a notification carries: (firing, resolved)."""
MIRROR_KEY = "mirror"
"""Delivery counters of the mirror integration are kept under this name, not the receiver's."""


def content_of(n: Notification) -> Content:
    return frozenset(a.fingerprint for a in n.firing), frozenset(a.fingerprint for a in n.resolved)


def with_mirror(integrations: Sequence[Integration], mirror: Integration | None,
                topic_of: Callable[[str | None], str]) -> list[Integration]:
    """The receiver's ``integrations``, plus ``mirror`` (None: mirroring off) unless one of them
    already publishes on the mirror's topic. ``topic_of`` expands an MQTT topic template."""
    out = list(integrations)
    if mirror is None:
        return out
    topic = topic_of(mirror.settings.get("topic"))
    if not any(i.type == "mqtt" and topic_of(i.settings.get("topic")) == topic for i in out):
        out.append(mirror)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Settlement:
    """After one delivery attempt: ``delivered`` (mark it in the notification log) when every
    integration settled; ``done`` the indexes settled so far."""

    delivered: bool
    done: frozenset[int]


class PartialDeliveries:
    """Integrations that settled per (group key, receiver) for the content they settled on.
    Bounded: groups that vanish undelivered leave entries behind, the oldest go first."""

    def __init__(self, *, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._done: dict[tuple[str, str], tuple[Content, frozenset[int]]] = {}

    def done(self, n: Notification) -> frozenset[int]:
        """Indexes of the integrations that already took ``n``'s very content (not sent again)."""
        return self._done_for(n)

    def settle(self, n: Notification, total: int, settled: Iterable[int]) -> Settlement:
        """Record the integrations that settled in this attempt; the notification is delivered
        once all ``total`` have (then its entry is dropped)."""
        key = (n.group_key, n.receiver)
        done = self._done_for(n) | frozenset(settled)
        if len(done) >= total:
            self._done.pop(key, None)
            return Settlement(delivered=True, done=done)
        self._done.pop(key, None)
        self._done[key] = (content_of(n), done)
        while len(self._done) > self.max_entries:
            self._done.pop(next(iter(self._done)))
        return Settlement(delivered=False, done=done)

    def _done_for(self, n: Notification) -> frozenset[int]:
        prev = self._done.get((n.group_key, n.receiver))
        return prev[1] if prev is not None and prev[0] == content_of(n) else frozenset()

    def __len__(self) -> int:
        return len(self._done)


def save_due(*, saved_at: float, now: float, every_s: float, attempted: Collection[object]) -> bool:
    """Save the dispatcher (its notification log and timers) after any delivery attempt, else
    every ``every_s``."""
    return bool(attempted) or now - saved_at >= every_s
