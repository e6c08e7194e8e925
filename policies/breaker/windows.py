"""Sliding windows of call outcomes behind one interface (resilience4j ``Metrics`` style).

Two windows share the interface :class:`Window`:

- :class:`CountWindow` — the last ``size`` calls, a ring buffer;
- :class:`TimeWindow` — the calls of the last ``length_s`` seconds, in buckets of ``granularity_s``
  each, with running totals that subtract a bucket when it falls out (evicted lazily on the next
  record or snapshot, so a record is amortised O(1)).

``record(now, duration_s, code)`` adds one outcome and returns a :class:`Snapshot` of counts;
``snapshot(now)`` returns the same without recording. Both are O(1). A window built with
``latency=False`` keeps counts only (the breaker's: its decisions need no quantiles, and the
sketch update is most of a record's cost). Outcome counts per error code
and latency quantiles cost O(distinct codes + histogram buckets) to copy, so they live in a
separate :class:`WindowMetrics` (``metrics(now)``) taken once per tick by the monitor, not on
every call; the breaker's hot path uses ``add()`` and reads the running totals, allocating nothing.

Outcome codes (``None`` a success, :data:`~policies.breaker.outcomes.UNANSWERED` a call with no
answer) and the readings (:class:`~policies.breaker.outcomes.Snapshot`,
:class:`~policies.breaker.outcomes.WindowMetrics`) are in ``policies.breaker.outcomes``.

Latency quantiles come from :class:`~policies.breaker.latency_sketch.LatencySketch`, a
DDSketch-like log-bucketed histogram with relative accuracy ``alpha`` (1 % by default): buckets can
be added and subtracted, which is what lets a time bucket leave the window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from math import ceil, log
from typing import Final, Protocol

from policies.breaker.latency_sketch import DEFAULT_ALPHA, MIN_LATENCY_S, LatencySketch
from policies.breaker.outcomes import Snapshot, WindowMetrics, is_failure


class Window(Protocol):
    """What the breaker and the monitor need from a window."""

    calls: int
    failures: int
    slow_calls: int
    total_duration_s: float

    def add(self, now: float, duration_s: float, code: int | None) -> None: ...

    def record(self, now: float, duration_s: float, code: int | None) -> Snapshot: ...

    def snapshot(self, now: float) -> Snapshot: ...

    def metrics(self, now: float) -> WindowMetrics: ...


class _Totals:
    """Running totals shared by both windows; subclasses add and evict."""

    __slots__ = (
        "_failure_of",
        "calls",
        "failures",
        "outcomes",
        "sketch",
        "slow_call_s",
        "slow_calls",
        "total_duration_s",
    )

    def __init__(self, *, slow_call_s: float, alpha: float, latency: bool) -> None:
        self.slow_call_s = slow_call_s
        self.calls = 0
        self.failures = 0
        self.slow_calls = 0
        self.total_duration_s = 0.0
        self.outcomes: dict[int, int] = {}
        self.sketch = LatencySketch(alpha=alpha) if latency else None
        # Per-code failure flags, memoised: the code set is tiny and the lookup is on the hot path.
        self._failure_of: dict[int | None, bool] = {None: False}

    def _failure(self, code: int | None) -> bool:
        f = self._failure_of.get(code)
        if f is None:
            f = self._failure_of[code] = is_failure(code)
        return f

    def add(self, now: float, duration_s: float, code: int | None) -> None:
        raise NotImplementedError

    def record(self, now: float, duration_s: float, code: int | None) -> Snapshot:
        """Add one outcome and return the counts after it."""
        self.add(now, duration_s, code)
        return Snapshot(self.calls, self.failures, self.slow_calls, self.total_duration_s)

    def record_many(self, now: float, outcomes: Iterable[tuple[float, int | None]]) -> Snapshot:
        for duration_s, code in outcomes:
            self.add(now, duration_s, code)
        return Snapshot(self.calls, self.failures, self.slow_calls, self.total_duration_s)

    def _counts(self) -> Snapshot:
        return Snapshot(self.calls, self.failures, self.slow_calls, self.total_duration_s)

    def _metrics(self) -> WindowMetrics:
        return WindowMetrics(
            snapshot=self._counts(),
            outcomes=dict(self.outcomes),
            latency=self.sketch.copy() if self.sketch else None,
        )


class CountWindow(_Totals):
    """The last ``size`` calls (ring buffer). ``now`` is accepted for the common interface."""

    __slots__ = ("_codes", "_durations", "_keys", "_next", "size")

    def __init__(
        self, *, size: int, slow_call_s: float, alpha: float = DEFAULT_ALPHA, latency: bool = True
    ) -> None:
        if size < 1:
            raise ValueError(f"a count window needs at least one slot, got {size}")
        super().__init__(slow_call_s=slow_call_s, alpha=alpha, latency=latency)
        self.size = size
        self._durations: list[float] = []
        self._codes: list[int | None] = []
        self._keys: list[int | None] = []
        self._next = 0

    def add(self, now: float, duration_s: float, code: int | None) -> None:
        """Record one outcome without building a snapshot (the hot path)."""
        sketch = self.sketch
        key = sketch.key(duration_s) if sketch is not None else None
        if len(self._durations) < self.size:
            self._durations.append(duration_s)
            self._codes.append(code)
            self._keys.append(key)
        else:
            i = self._next
            self._evict(self._durations[i], self._codes[i], self._keys[i])
            self._durations[i] = duration_s
            self._codes[i] = code
            self._keys[i] = key
            self._next = (i + 1) % self.size
        self.calls += 1
        self.total_duration_s += duration_s
        if duration_s >= self.slow_call_s:
            self.slow_calls += 1
        if code is not None:
            self.outcomes[code] = self.outcomes.get(code, 0) + 1
            if self._failure(code):
                self.failures += 1
        if sketch is not None:
            sketch.add_key(key)

    def _evict(self, duration_s: float, code: int | None, key: int | None) -> None:
        self.calls -= 1
        self.total_duration_s -= duration_s
        if duration_s >= self.slow_call_s:
            self.slow_calls -= 1
        if code is not None:
            left = self.outcomes[code] - 1
            if left:
                self.outcomes[code] = left
            else:
                del self.outcomes[code]
            if self._failure(code):
                self.failures -= 1
        if self.sketch is not None:
            self.sketch.remove_key(key)

    def snapshot(self, now: float) -> Snapshot:
        return self._counts()

    def metrics(self, now: float) -> WindowMetrics:
        return self._metrics()


_NEVER: Final[int] = -(2**62)


class _Bucket:
    """One time slice of a :class:`TimeWindow`; reset in place when reused (no reallocation)."""

    __slots__ = ("calls", "epoch", "failures", "keys", "outcomes", "slow_calls", "total_duration_s")

    def __init__(self) -> None:
        self.epoch = -1
        self.calls = 0
        self.failures = 0
        self.slow_calls = 0
        self.total_duration_s = 0.0
        self.outcomes: dict[int, int] = {}
        self.keys: dict[int | None, int] = {}


@dataclass(frozen=True, slots=True)
class BucketCounts:
    """One time bucket's counts, copied out of (or into) a :class:`TimeWindow` (persistence)."""

    start_s: float
    calls: int
    slow_calls: int
    total_duration_s: float
    outcomes: Mapping[int, int]
    keys: Mapping[int | None, int]
    """Latency sketch buckets (``None``: the zero bucket); empty for a window without latencies."""


class TimeWindow(_Totals):
    """The calls of the last ``length_s`` seconds, in ``granularity_s`` buckets.

    A call at ``now`` lands in bucket ``floor(now / granularity_s)``; a bucket leaves when the
    window has moved ``length_s`` past it. A ``now`` earlier than the newest bucket (a clock step
    back, or a late batch) is counted in the newest bucket rather than dropped.
    """

    __slots__ = ("_buckets", "_head", "_head_end", "_inv_log_gamma", "granularity_s", "length_s")

    def __init__(
        self,
        *,
        length_s: float,
        slow_call_s: float,
        granularity_s: float = 1.0,
        alpha: float = DEFAULT_ALPHA,
        latency: bool = True,
    ) -> None:
        if granularity_s <= 0 or length_s < granularity_s:
            raise ValueError(f"need 0 < granularity ({granularity_s}) <= length ({length_s})")
        super().__init__(slow_call_s=slow_call_s, alpha=alpha, latency=latency)
        self.length_s = length_s
        self.granularity_s = granularity_s
        self._buckets = [_Bucket() for _ in range(math.ceil(length_s / granularity_s))]
        self._head = _Bucket()  # a placeholder before the first record; never holds calls
        self._head.epoch = _NEVER
        self._head_end = -math.inf  # a ``now`` below this lands in the head bucket (fast path)
        self._inv_log_gamma = 1.0 / math.log((1 + alpha) / (1 - alpha))

    def _advance(self, now: float) -> _Bucket:
        epoch = int(now // self.granularity_s)
        head = self._head
        if epoch <= head.epoch:
            return head
        n = len(self._buckets)
        start = max(head.epoch + 1, epoch - n + 1)
        # Each bucket between the old head and the new one is evicted once (at most all n of them
        # after a long quiet spell): amortised O(1) per record.
        for e in range(start, epoch + 1):
            b = self._buckets[e % n]
            if b.epoch >= 0 and b.calls:
                self._evict(b)
            b.epoch = e
        self._head = self._buckets[epoch % n]
        self._head_end = (epoch + 1) * self.granularity_s
        return self._head

    def _evict(self, b: _Bucket) -> None:
        self.calls -= b.calls
        self.failures -= b.failures
        self.slow_calls -= b.slow_calls
        self.total_duration_s -= b.total_duration_s
        for code, c in b.outcomes.items():
            left = self.outcomes[code] - c
            if left:
                self.outcomes[code] = left
            else:
                del self.outcomes[code]
        if self.sketch is not None:
            for key, c in b.keys.items():
                self.sketch.remove_key(key, c)
        b.calls = b.failures = b.slow_calls = 0
        b.total_duration_s = 0.0
        b.outcomes.clear()
        b.keys.clear()
        if not self.calls:
            self.total_duration_s = 0.0  # drop float drift once the window is empty

    def add(self, now: float, duration_s: float, code: int | None) -> None:
        """Record one outcome without building a snapshot (the hot path: no allocation, the sketch
        update inlined)."""
        b = self._head if now < self._head_end else self._advance(now)
        b.calls += 1
        self.calls += 1
        b.total_duration_s += duration_s
        self.total_duration_s += duration_s
        if duration_s >= self.slow_call_s:
            b.slow_calls += 1
            self.slow_calls += 1
        if code is not None:
            b.outcomes[code] = b.outcomes.get(code, 0) + 1
            self.outcomes[code] = self.outcomes.get(code, 0) + 1
            if self._failure(code):
                b.failures += 1
                self.failures += 1
        sketch = self.sketch
        if sketch is not None:
            key = ceil(log(duration_s) * self._inv_log_gamma) if duration_s > MIN_LATENCY_S else None
            keys = b.keys
            keys[key] = keys.get(key, 0) + 1
            sketch.count += 1
            if key is None:
                sketch.zero_count += 1
            else:
                counts = sketch.counts
                counts[key] = counts.get(key, 0) + 1

    def snapshot(self, now: float) -> Snapshot:
        self._advance(now)
        return self._counts()

    def metrics(self, now: float) -> WindowMetrics:
        self._advance(now)
        return self._metrics()

    def buckets(self, now: float) -> Iterator[BucketCounts]:
        """The buckets still in the window at ``now`` that hold calls, oldest first (copies)."""
        head = self._advance(now).epoch
        n = len(self._buckets)
        for e in range(head - n + 1, head + 1):
            b = self._buckets[e % n]
            if b.epoch == e and b.calls:
                yield BucketCounts(e * self.granularity_s, b.calls, b.slow_calls, b.total_duration_s,
                                   dict(b.outcomes), dict(b.keys))

    def add_counts(self, now: float, counts: BucketCounts) -> bool:
        """Put a bucket's counts back at its own time (a restore, oldest first); ``False`` when it
        is no longer in the window at ``now``. A bucket later than ``now`` lands in the newest one."""
        epoch = int(min(counts.start_s, now) // self.granularity_s)
        if epoch <= int(now // self.granularity_s) - len(self._buckets):
            return False
        b = self._head if epoch <= self._head.epoch else self._advance(epoch * self.granularity_s)
        b.calls += counts.calls
        self.calls += counts.calls
        b.slow_calls += counts.slow_calls
        self.slow_calls += counts.slow_calls
        b.total_duration_s += counts.total_duration_s
        self.total_duration_s += counts.total_duration_s
        for code, c in counts.outcomes.items():
            b.outcomes[code] = b.outcomes.get(code, 0) + c
            self.outcomes[code] = self.outcomes.get(code, 0) + c
            if self._failure(code):
                b.failures += c
                self.failures += c
        if self.sketch is not None:
            for key, c in counts.keys.items():
                b.keys[key] = b.keys.get(key, 0) + c
                self.sketch.add_key(key, c)
        return True


__all__ = ["BucketCounts", "CountWindow", "TimeWindow", "Window"]
