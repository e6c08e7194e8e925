"""Bounded per-entity state for detection rules: an LRU map with a cap, a time-bucketed sliding
sum, and a suppression table.

All of it is pure (``now`` is passed in) and O(1) amortised per event. Memory is bounded: an LRU
map never holds more than its capacity, and every eviction is counted so an overflow shows up in
``stats()`` instead of passing silently.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedLRU(Generic[K, V]):
    """A map that keeps at most ``capacity`` entries, dropping the least recently used one.

    ``evictions`` counts entries dropped for room (not entries removed on purpose)."""

    __slots__ = ("_data", "capacity", "evictions")

    def __init__(self, *, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.evictions = 0
        self._data: OrderedDict[K, V] = OrderedDict()

    def get_or_create(self, key: K, factory: Callable[[], V]) -> V:
        """The entry for ``key`` (now the most recently used), created by ``factory`` if absent."""
        data = self._data
        value = data.get(key)
        if value is None:
            value = factory()
            data[key] = value
            if len(data) > self.capacity:
                data.popitem(last=False)
                self.evictions += 1
        else:
            data.move_to_end(key)
        return value

    def get(self, key: K) -> V | None:
        """The entry for ``key`` without touching its recency."""
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        """Set ``key`` (now the most recently used), evicting the oldest entry if over capacity."""
        data = self._data
        data[key] = value
        data.move_to_end(key)
        if len(data) > self.capacity:
            data.popitem(last=False)
            self.evictions += 1

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)


class BucketedSum:
    """Sum of amounts added within the last ``window_s`` seconds, kept in ``buckets`` time buckets
    with a running total (subtract-on-evict, resilience4j style).

    The window is exact to one bucket: it covers the current, partly elapsed bucket plus the
    ``buckets - 1`` before it, i.e. between ``window_s - width`` and ``window_s`` of history.
    Times that go backwards land in the current bucket (late events are not lost)."""

    __slots__ = ("_counts", "_last", "_n", "_width", "total")

    def __init__(self, *, window_s: float, buckets: int) -> None:
        if window_s <= 0 or buckets < 1:
            raise ValueError("window_s must be > 0 and buckets >= 1")
        self._n = buckets
        self._width = window_s / buckets
        self._counts = [0] * buckets
        self._last: int | None = None
        self.total = 0

    def _advance(self, now: float) -> int:
        idx = int(now // self._width)
        last = self._last
        if last is None:
            self._last = idx
            return idx
        if idx <= last:
            return last
        n = self._n
        counts = self._counts
        if idx - last >= n:
            for j in range(n):
                counts[j] = 0
            self.total = 0
        else:
            # Clear only the buckets that fell out of the window since the last call.
            for i in range(last + 1, idx + 1):
                j = i % n
                self.total -= counts[j]
                counts[j] = 0
        self._last = idx
        return idx

    def add(self, now: float, amount: int) -> int:
        """Add ``amount`` at ``now``; returns the total over the window ending at ``now``."""
        idx = self._advance(now)
        self._counts[idx % self._n] += amount
        self.total += amount
        return self.total

    def total_at(self, now: float) -> int:
        """The total over the window ending at ``now`` (slides the window first)."""
        self._advance(now)
        return self.total

    def clear(self) -> None:
        for j in range(self._n):
            self._counts[j] = 0
        self.total = 0


class Suppressions:
    """One alert per (rule, entity) per suppression window; bounded like every other table.

    An evicted entry can let a duplicate alert through early — counted in ``evictions``."""

    __slots__ = ("_until", "suppressed")

    def __init__(self, *, capacity: int) -> None:
        self._until: BoundedLRU[tuple[str, str], float] = BoundedLRU(capacity=capacity)
        self.suppressed = 0

    def admit(self, rule: str, entity: str, now: float, duration_s: float) -> bool:
        """True if an alert for (rule, entity) may fire now (and starts its window); False (and
        counted) if one fired less than its suppression duration ago."""
        key = (rule, entity)
        until = self._until.get(key)
        if until is not None and now < until:
            self.suppressed += 1
            return False
        if duration_s > 0:
            self._until.put(key, now + duration_s)
        return True

    @property
    def evictions(self) -> int:
        return self._until.evictions

    def __len__(self) -> int:
        return len(self._until)
