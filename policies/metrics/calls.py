"""Cumulative per-service call counts by outcome code and a call-duration histogram, built from a
monitor's tick deltas (pure: no clock, no I/O). They back ``sfa_ops_calls_total{service,code}`` and
``sfa_ops_call_duration_seconds`` (``policies.metrics.series``).

- Outcome codes: ``"ok"`` for a result, the JSON-RPC error code as a string, ``"timeout"`` for a
  call that got no answer within its timeout, and ``"-32503"`` for a call sfa-ops answered itself
  (refused while the breaker was open, or pending when the service went down).
- Durations: answered calls only (an unanswered call's "duration" is its timeout, not a latency),
  in fixed buckets from 5 ms to 30 s, Prometheus style (``le`` upper bounds, cumulative on export).
- Distinct codes are capped (:data:`MAX_CODES`); a further code is counted as -32603 and in
  ``capped`` (the correlator folds unknown codes the same way).

Counts only grow; a restarted monitor starts from zero, which Prometheus reads as a counter reset.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from policies.breaker.outcomes import UNANSWERED
from policies.observation.correlation import ServiceDelta
from protocol.errors import ErrorCode

BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Histogram upper bounds in seconds (an RPC: 5 ms .. 30 s); ``+Inf`` is implied."""
MAX_CODES = 64
OK = "ok"
TIMEOUT = "timeout"
ANSWERED_BY_SFA_OPS = str(ErrorCode.SERVICE_UNAVAILABLE.value)
_FOLDED = str(ErrorCode.INTERNAL_ERROR.value)


def code_label(code: int | None) -> str:
    """The ``code`` label of one outcome."""
    if code is None:
        return OK
    if code == UNANSWERED:
        return TIMEOUT
    return str(code)


def bucket_index(duration_s: float) -> int:
    """The bucket a duration falls in (``le`` semantics: a duration equal to a bound is in it);
    ``len(BUCKETS)`` is the ``+Inf`` bucket."""
    return bisect_left(BUCKETS, duration_s)


@dataclass(frozen=True, slots=True)
class TickCalls:
    """One tick's share: counts by code and the answered calls' durations (for exporters that
    record increments, such as ``ray.util.metrics``)."""

    codes: dict[str, int]
    durations: list[float]


@dataclass(slots=True)
class CallTotals:
    """One service's cumulative call counts and duration histogram."""

    codes: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    """Per bucket (not cumulative), the last one ``+Inf``."""
    duration_sum: float = 0.0
    capped: int = 0

    def _count(self, label: str, n: int = 1) -> str:
        if label not in self.codes and len(self.codes) >= MAX_CODES:
            self.capped += n
            label = _FOLDED
        self.codes[label] = self.codes.get(label, 0) + n
        return label

    def _outcomes(self, outcomes: Iterable[tuple[float, int | None]], tick: TickCalls) -> None:
        for duration, code in outcomes:
            label = self._count(code_label(code))
            tick.codes[label] = tick.codes.get(label, 0) + 1
            if code == UNANSWERED:
                continue
            duration = max(0.0, duration)
            self.buckets[bucket_index(duration)] += 1
            self.duration_sum += duration
            tick.durations.append(duration)

    def add(self, delta: ServiceDelta) -> TickCalls:
        """Fold one tick's delta in; returns that tick's share."""
        tick = TickCalls(codes={}, durations=[])
        self._outcomes(delta.outcomes, tick)
        self._outcomes(delta.trials, tick)
        answered = delta.fast_failed + delta.answered_unavailable
        if answered:
            label = self._count(ANSWERED_BY_SFA_OPS, answered)
            tick.codes[label] = tick.codes.get(label, 0) + answered
        return tick

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def snapshot(self) -> dict[str, Any]:
        """Plain data for the supervisor's status (read back by :func:`read_totals`)."""
        return {"codes": dict(self.codes), "buckets": list(self.buckets), "sum": self.duration_sum,
                "capped": self.capped}


def read_totals(data: Any) -> CallTotals | None:
    """A snapshot back as :class:`CallTotals`; ``None`` when it is not one (never raises)."""
    if not isinstance(data, Mapping):
        return None
    codes, buckets, total = data.get("codes"), data.get("buckets"), data.get("sum")
    if not isinstance(codes, Mapping) or not isinstance(buckets, list) or len(buckets) != len(BUCKETS) + 1:
        return None
    if not all(type(n) is int and n >= 0 for n in buckets) or not isinstance(total, int | float):
        return None
    clean = {str(k): v for k, v in list(codes.items())[:MAX_CODES + 1] if type(v) is int and v >= 0}
    return CallTotals(codes=clean, buckets=list(buckets), duration_sum=float(total))
