"""Bounded per-entity state: LRU map, bucketed sliding sum, suppression table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.security.entity_state import BoundedLRU, BucketedSum, Suppressions


def test_lru_evicts_least_recently_used_and_counts() -> None:
    """The least recently used key goes first; a read through get_or_create refreshes recency."""
    m: BoundedLRU[str, int] = BoundedLRU(capacity=2)
    m.get_or_create("a", lambda: 1)
    m.get_or_create("b", lambda: 2)
    m.get_or_create("a", lambda: 99)  # refresh a, value kept
    m.get_or_create("c", lambda: 3)  # evicts b
    assert list(m) == ["a", "c"] and m.get("a") == 1
    assert "b" not in m and m.evictions == 1
    m.put("d", 4)
    assert list(m) == ["c", "d"] and m.evictions == 2
    assert m.pop("c") == 3 and m.evictions == 2  # removal on purpose is not an eviction


def test_lru_rejects_zero_capacity() -> None:
    """A cap below one is a configuration error, not an empty map."""
    with pytest.raises(ValueError, match="capacity"):
        BoundedLRU(capacity=0)


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=5), st.integers(min_value=0, max_value=50)),
        min_size=1,
        max_size=60,
    )
)
def test_bucketed_sum_matches_naive_sum(steps: list[tuple[int, int]]) -> None:
    """The running total always equals the naive sum over the last `buckets` buckets."""
    window, buckets = 60.0, 6
    width = window / buckets
    w = BucketedSum(window_s=window, buckets=buckets)
    now = 1000.0
    seen: list[tuple[int, int]] = []  # (bucket index, amount)
    for advance_buckets, amount in steps:
        now += advance_buckets * width * 0.7  # uneven steps, sometimes within one bucket
        idx = int(now // width)
        total = w.add(now, amount)
        seen.append((idx, amount))
        assert total == sum(a for i, a in seen if i > idx - buckets)


def test_bucketed_sum_late_events_land_in_current_bucket() -> None:
    """A time that goes backwards adds to the current bucket rather than being lost."""
    w = BucketedSum(window_s=60, buckets=6)
    w.add(100.0, 5)
    assert w.add(50.0, 3) == 8
    assert w.total_at(100.0 + 61) == 0


def test_suppressions_window_and_count() -> None:
    """One admit per (rule, entity) per duration; refusals counted; other keys independent."""
    s = Suppressions(capacity=10)
    assert s.admit("r", "e", 0.0, 10.0)
    assert not s.admit("r", "e", 9.9, 10.0)
    assert s.admit("r", "other", 5.0, 10.0)
    assert s.admit("r", "e", 10.0, 10.0)
    assert s.suppressed == 1


def test_suppression_table_is_bounded() -> None:
    """The suppression table holds at most its cap; evictions are counted."""
    s = Suppressions(capacity=3)
    for i in range(5):
        s.admit("r", f"e{i}", 0.0, 100.0)
    assert len(s) == 3 and s.evictions == 2
