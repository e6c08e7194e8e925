"""Per-minute, per-service call rollups built live from a monitor's tick deltas. Pure: ``now`` is
passed in, finished minutes come back as data for the monitor actor to write.

What one minute holds (the seed's function metrics, stored as ``metrics_minute`` rows that
``policies.analysis.rollup_summary`` reads, the same rows ``drivers.generate`` writes):

- ``calls``: calls that finished in the minute (answered, or unanswered at their timeout);
  calls sfa-ops refused itself while a breaker was open are not the service's calls;
- ``outcomes``: those calls per code (``"ok"``, ``"-32603"``, …; an unanswered call under
  ``policies.breaker.outcomes.UNANSWERED``), summing to ``calls``;
- ``timeouts``: unanswered calls plus -32007 TimeoutError answers;
- ``latency_sketch``: the answered calls' durations (``policies.metrics.sketch_codec``), from which readers
  take p50/p95/p99 (an unanswered call's "duration" is its timeout, not a latency);
- ``concurrency_max``: the most calls in flight at once (the observer's count at each call);
  ``concurrency_avg``: calls in flight on average over the minute, by Little's law — the summed
  durations of the calls that finished in it (an unanswered call's up to its timeout) over the
  minute's length (sampling in-flight counts at tick ends would miss every call shorter than a tick);
- ``queue_depth``: calls still awaiting an answer at the minute's end (the backlog carried over).

With several observers each delta holds one observer's in-flight counts: concurrency and queue
depth are then those of the busiest observer, not the sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from policies.breaker.latency_sketch import LatencySketch
from policies.breaker.outcomes import UNANSWERED
from policies.metrics.sketch_codec import encode_sketch
from policies.observation.correlation import ServiceDelta

MINUTE_S = 60.0
TIMEOUT_ERROR = -32007


@dataclass(frozen=True, slots=True, kw_only=True)
class MinuteRollup:
    """One service's finished minute (fields as ``adapters.store.MetricRollup``)."""

    service: str
    minute: float
    calls: int
    outcomes: dict[str, int]
    latency_sketch: bytes
    concurrency_max: int
    concurrency_avg: float
    timeouts: int
    queue_depth: int


@dataclass(slots=True)
class _Minute:
    start: float
    calls: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    sketch: LatencySketch = field(default_factory=LatencySketch)
    timeouts: int = 0
    busy_s: float = 0.0
    peak: int = 0
    inflight: int = 0


def minute_of(now: float) -> float:
    """The start (epoch seconds) of the minute ``now`` falls in."""
    return math.floor(now / MINUTE_S) * MINUTE_S


class RollupBuilder:
    """One service's current minute; :meth:`add` returns the previous minute once a later one starts."""

    def __init__(self, *, service: str) -> None:
        self.service = service
        self._cur: _Minute | None = None

    def add(self, delta: ServiceDelta, now: float) -> MinuteRollup | None:
        """Fold one tick's delta in at ``now``; the finished minute when ``now`` starts a new one."""
        start = minute_of(now)
        done: MinuteRollup | None = None
        cur = self._cur
        if cur is not None and start > cur.start:
            done = self._finish(cur, MINUTE_S)
            cur = None
        if cur is None:
            cur = self._cur = _Minute(start=start)
        for dur, code in delta.outcomes:
            self._outcome(cur, dur, code)
        for dur, code in delta.trials:
            self._outcome(cur, dur, code)
        cur.peak = max(cur.peak, delta.max_inflight, delta.inflight)
        cur.inflight = delta.inflight
        return done

    def close(self, now: float) -> MinuteRollup | None:
        """The current minute so far (at shutdown); None when it saw nothing."""
        cur, self._cur = self._cur, None
        if cur is None:
            return None
        return self._finish(cur, min(max(now - cur.start, 1.0), MINUTE_S))

    @staticmethod
    def _outcome(m: _Minute, dur: float, code: int | None) -> None:
        dur = max(dur, 0.0)
        m.calls += 1
        m.busy_s += dur
        key = "ok" if code is None else str(code)
        m.outcomes[key] = m.outcomes.get(key, 0) + 1
        if code in (UNANSWERED, TIMEOUT_ERROR):
            m.timeouts += 1
        if code != UNANSWERED:
            m.sketch.add(dur)

    def _finish(self, m: _Minute, span_s: float) -> MinuteRollup | None:
        if m.calls == 0 and m.peak == 0 and m.inflight == 0:
            return None
        return MinuteRollup(service=self.service, minute=m.start, calls=m.calls, outcomes=dict(m.outcomes),
                            latency_sketch=encode_sketch(m.sketch) if m.sketch.count else b"",
                            concurrency_max=m.peak, concurrency_avg=round(m.busy_s / span_s, 3),
                            timeouts=m.timeouts, queue_depth=m.inflight)


__all__ = ["MINUTE_S", "MinuteRollup", "RollupBuilder", "minute_of"]
