"""The circuit breaker's states, the transition table, its errors and what a transition or an
attempt returns (:class:`BreakerEvent`, :class:`Permission`).

Errors::

    BreakerError
     ├── IllegalTransition   a move the transition table refuses
     └── BadBreakerSnapshot  ``restore`` got data it cannot use
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from protocol.system import BreakerStateChange


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"
    METRICS_ONLY = "metrics_only"


class BreakerError(Exception):
    """Base of the circuit breaker's errors."""


class IllegalTransition(BreakerError):
    """The transition table refuses this move."""

    def __init__(self, service: str, source: BreakerState, target: BreakerState) -> None:
        super().__init__(f"{service}: circuit breaker cannot go from {source} to {target}")
        self.source = source
        self.target = target


class BadBreakerSnapshot(BreakerError):
    """A stored breaker state cannot be restored."""


_S = BreakerState
_MANUAL = frozenset({_S.FORCED_OPEN, _S.DISABLED, _S.METRICS_ONLY, _S.CLOSED})
TRANSITIONS: Mapping[BreakerState, frozenset[BreakerState]] = {
    _S.CLOSED: _MANUAL | {_S.OPEN},
    _S.OPEN: _MANUAL | {_S.HALF_OPEN},
    _S.HALF_OPEN: _MANUAL | {_S.OPEN},
    _S.FORCED_OPEN: _MANUAL,
    _S.DISABLED: _MANUAL,
    _S.METRICS_ONLY: _MANUAL,
}
"""from → allowed targets. ``closed → closed`` is a reset (fresh counters)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerEvent:
    """One state change; ``to_wire()`` is the ``system/{cluster}/circuit-breaker`` message."""

    service: str
    topic: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    failure_rate: float  # percent; the wire carries it as a fraction
    slow_call_rate: float
    retry_after_s: float | None
    timestamp: float

    def to_wire(self, cluster_id: str | None = None) -> dict[str, Any]:
        """The ``protocol.system.BreakerStateChange`` message: rates as fractions 0..1,
        ``retryAfter`` the instant calls may be retried (RFC 3339, the seed's DateTime),
        ``retryAfterSeconds`` the same as a delay; both absent unless the new state refuses calls."""
        return BreakerStateChange(
            cluster_id=cluster_id,
            service=self.service,
            topic=self.topic,
            from_state=self.from_state.value,
            to_state=self.to_state.value,
            reason=self.reason,
            failure_rate=round(self.failure_rate / 100.0, 4),
            slow_call_rate=round(self.slow_call_rate / 100.0, 4),
            retry_after=None if self.retry_after_s is None else self.timestamp + self.retry_after_s,
            retry_after_seconds=self.retry_after_s,
            timestamp=self.timestamp,
        ).to_wire()


@dataclass(frozen=True, slots=True)
class Permission:
    """Answer to ``try_acquire``: may this call go through, and if not, when to retry."""

    allowed: bool
    retry_after_s: float | None = None
    half_open_trial: bool = False
    event: BreakerEvent | None = None
    """The transition this attempt caused (open → half_open), if any."""


__all__ = [
    "TRANSITIONS",
    "BadBreakerSnapshot",
    "BreakerError",
    "BreakerEvent",
    "BreakerState",
    "IllegalTransition",
    "Permission",
]
