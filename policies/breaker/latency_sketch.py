"""Log-bucketed latency histogram (DDSketch-like) behind the windows' quantiles and the rollups.

Relative accuracy ``alpha`` (1 % by default); sketches add and subtract bucket by bucket, which is
what lets a time bucket leave a :class:`~policies.breaker.windows.TimeWindow`.
"""

from __future__ import annotations

import math
from typing import Final

DEFAULT_ALPHA: Final[float] = 0.01
MIN_LATENCY_S: Final[float] = 1e-6
"""Durations at or below this (1 µs) go to the zero bucket and are reported as 0."""


class LatencySketch:
    """Log-bucketed latency histogram (DDSketch-like): any quantile within ``alpha`` relative error.

    A value ``x`` goes to bucket ``ceil(log(x) / log(gamma))`` with ``gamma = (1+alpha)/(1-alpha)``;
    the bucket's representative ``2·gamma^k/(gamma+1)`` is within ``alpha`` of every value in it.
    Sketches merge (add) and subtract bucket by bucket.
    """

    __slots__ = ("_log_gamma", "_rep_factor", "alpha", "count", "counts", "gamma", "zero_count")

    def __init__(self, *, alpha: float = DEFAULT_ALPHA) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.alpha = alpha
        self.gamma = (1 + alpha) / (1 - alpha)
        self._log_gamma = math.log(self.gamma)
        self._rep_factor = 2.0 / (self.gamma + 1.0)
        self.counts: dict[int, int] = {}
        self.zero_count = 0
        self.count = 0

    def key(self, value: float) -> int | None:
        """The bucket of a value; ``None`` for the zero bucket."""
        if value <= MIN_LATENCY_S:
            return None
        return math.ceil(math.log(value) / self._log_gamma)

    def add_key(self, key: int | None, n: int = 1) -> None:
        if key is None:
            self.zero_count += n
        else:
            self.counts[key] = self.counts.get(key, 0) + n
        self.count += n

    def remove_key(self, key: int | None, n: int = 1) -> None:
        if key is None:
            self.zero_count -= n
        else:
            left = self.counts[key] - n
            if left:
                self.counts[key] = left
            else:
                del self.counts[key]
        self.count -= n

    def add(self, value: float) -> None:
        self.add_key(self.key(value))

    def merge(self, other: LatencySketch) -> None:
        """Add another sketch's counts (same ``alpha``)."""
        self._check_compatible(other)
        for k, n in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + n
        self.zero_count += other.zero_count
        self.count += other.count

    def subtract(self, other: LatencySketch) -> None:
        """Remove another sketch's counts; ``other`` must have been merged in before."""
        self._check_compatible(other)
        for k, n in other.counts.items():
            self.remove_key(k, n)
        self.zero_count -= other.zero_count
        self.count -= other.zero_count

    def copy(self) -> LatencySketch:
        out = LatencySketch(alpha=self.alpha)
        out.counts = dict(self.counts)
        out.zero_count = self.zero_count
        out.count = self.count
        return out

    def value_of(self, key: int) -> float:
        return self._rep_factor * self.gamma**key

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0..1) of the values added: the value at rank ``floor(q·(n-1))``
        of the sorted values, within ``alpha``; ``None`` when empty."""
        if not 0 <= q <= 1:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.count == 0:
            return None
        rank = math.floor(q * (self.count - 1))
        seen = self.zero_count
        if seen > rank:
            return 0.0
        for k in sorted(self.counts):
            seen += self.counts[k]
            if seen > rank:
                return self.value_of(k)
        return self.value_of(max(self.counts))  # unreachable while counts are consistent

    def _check_compatible(self, other: LatencySketch) -> None:
        if other.alpha != self.alpha:
            raise ValueError(f"cannot combine sketches of alpha {self.alpha} and {other.alpha}")


__all__ = ["DEFAULT_ALPHA", "MIN_LATENCY_S", "LatencySketch"]
