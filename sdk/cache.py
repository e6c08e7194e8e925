"""A bounded LRU cache of call results, for methods a client marks cacheable; served (stale) while
their service is unavailable. Time is passed in."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson

CacheKey = tuple[str, str, bytes]


def cache_key(service: str, method: str, params: Any) -> CacheKey:
    """Equal params give equal keys whatever their key order."""
    return service, method, orjson.dumps(params, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


class ResultCache:
    """``put`` on success, ``get`` with a maximum age; the least recently used entry goes first."""

    def __init__(self, *, max_entries: int = 1000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max = max_entries
        self._entries: OrderedDict[CacheKey, tuple[Any, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: CacheKey, value: Any, *, now: float) -> None:
        self._entries[key] = (value, now)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def get(self, key: CacheKey, *, now: float, max_age: float) -> tuple[Any, float] | None:
        """``(value, age_seconds)`` if an entry at most ``max_age`` old exists."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, stored = entry
        age = now - stored
        if age > max_age:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value, age
