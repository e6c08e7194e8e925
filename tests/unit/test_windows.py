"""Sliding windows: counts, eviction, failure classification and latency quantiles."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.breaker.latency_sketch import LatencySketch
from policies.breaker.outcomes import UNANSWERED, Gate, Snapshot, is_failure
from policies.breaker.windows import CountWindow, TimeWindow


@pytest.mark.parametrize(
    ("code", "failure"),
    [
        (None, False),
        (-32001, False),
        (-32002, False),
        (-32003, False),
        (-32004, False),
        (-32005, False),
        (-32006, False),
        (-32007, True),
        (-32603, True),
        (UNANSWERED, True),
        (-32503, False),
    ],
)
def test_failure_classification(code: int | None, failure: bool) -> None:
    """Caller errors are not failures; timeouts, internal errors and unanswered calls are."""
    assert is_failure(code) is failure


def test_count_window_keeps_last_n() -> None:
    """The ring buffer forgets the oldest call once full, with every total adjusted."""
    w = CountWindow(size=3, slow_call_s=1.0)
    w.record(0, 2.0, -32603)  # slow failure, evicted below
    w.record(0, 0.1, None)
    w.record(0, 0.1, -32001)
    snap = w.record(0, 0.1, None)
    assert snap == Snapshot(calls=3, failures=0, slow_calls=0, total_duration_s=pytest.approx(0.3))
    m = w.metrics(0)
    assert dict(m.outcomes) == {-32001: 1}
    assert m.successes == 2
    assert m.latency.count == 3


def test_time_window_evicts_by_time() -> None:
    """A call leaves the time window once the window has moved its length past it."""
    w = TimeWindow(length_s=10, granularity_s=1, slow_call_s=5.0)
    w.record(100.0, 6.0, -32007)
    w.record(105.5, 0.2, None)
    assert w.snapshot(109.9).calls == 2
    snap = w.snapshot(110.0)  # bucket 100 leaves when bucket 110 arrives
    assert (snap.calls, snap.failures, snap.slow_calls) == (1, 0, 0)
    assert w.snapshot(114.9).calls == 1
    assert w.snapshot(115.0) == Snapshot(0, 0, 0, 0.0)


def test_time_window_long_gap_clears_everything() -> None:
    """After a quiet spell longer than the window every bucket is gone, metrics included."""
    w = TimeWindow(length_s=5, granularity_s=1, slow_call_s=1.0)
    for t in range(5):
        w.record(float(t), 0.5, UNANSWERED)
    assert w.snapshot(4.5).failures == 5
    m = w.metrics(1000.0)
    assert m.snapshot.calls == 0 and dict(m.outcomes) == {} and m.latency.count == 0
    assert m.p95 is None


def test_time_window_late_record_goes_to_newest_bucket() -> None:
    """A record older than the newest bucket is counted, not dropped."""
    w = TimeWindow(length_s=10, granularity_s=1, slow_call_s=1.0)
    w.record(50.0, 0.1, None)
    assert w.record(40.0, 0.1, None).calls == 2


def test_gate_is_an_enum() -> None:
    """The minimum-calls gate answers with Gate members."""
    snap = Snapshot(calls=9, failures=9, slow_calls=0, total_duration_s=1.0)
    assert snap.gate(10) is Gate.BELOW_MINIMUM_CALLS
    assert snap.gate(9) is Gate.ENOUGH_CALLS
    assert snap.failure_rate == 100.0 and snap.slow_call_rate == 0.0


def test_unanswered_counts_in_outcomes() -> None:
    """Unanswered calls are failures and visible as their own outcome for response rates."""
    w = TimeWindow(length_s=120, slow_call_s=5.0)
    w.record(1.0, 30.0, UNANSWERED)
    w.record(1.0, 0.1, None)
    m = w.metrics(1.0)
    assert m.unanswered == 1 and m.snapshot.failures == 1 and m.snapshot.slow_calls == 1


def test_sketch_merge_and_subtract_roundtrip() -> None:
    """Merging a sketch and subtracting it again leaves the original counts."""
    a, b = LatencySketch(), LatencySketch()
    for v in (0.001, 0.01, 0.5, 0.0):
        a.add(v)
    for v in (0.01, 2.0):
        b.add(v)
    before = (dict(a.counts), a.zero_count, a.count)
    a.merge(b)
    assert a.count == 6
    a.subtract(b)
    assert (dict(a.counts), a.zero_count, a.count) == before


def _exact(values: list[float], q: float) -> float:
    return sorted(values)[math.floor(q * (len(values) - 1))]


latencies = st.lists(st.floats(min_value=1e-4, max_value=600.0), min_size=1, max_size=300)


@settings(max_examples=60, deadline=None)
@given(values=latencies)
def test_sketch_quantiles_within_one_percent(values: list[float]) -> None:
    """p50/p95/p99 of the sketch are within 1 % of the exact quantiles."""
    s = LatencySketch(alpha=0.01)
    for v in values:
        s.add(v)
    for q in (0.5, 0.95, 0.99):
        got = s.quantile(q)
        exact = _exact(values, q)
        assert got is not None
        assert abs(got - exact) <= 0.01 * exact * (1 + 1e-9)


@settings(max_examples=40, deadline=None)
@given(
    calls=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=30, allow_nan=False),  # time step
            st.floats(min_value=1e-4, max_value=20.0),  # duration
            st.sampled_from([None, None, -32001, -32007, -32603, UNANSWERED]),
        ),
        min_size=1,
        max_size=150,
    )
)
def test_time_window_matches_brute_force(calls: list[tuple[float, float, int | None]]) -> None:
    """Running totals and quantiles always equal a recount of the calls still in the window."""
    length, gran, slow = 60.0, 1.0, 5.0
    w = TimeWindow(length_s=length, granularity_s=gran, slow_call_s=slow)
    now = 1000.0
    log: list[tuple[int, float, int | None]] = []
    for step, duration, code in calls:
        now += step
        w.add(now, duration, code)
        log.append((int(now // gran), duration, code))
        m = w.metrics(now)
        head = int(now // gran)
        live = [(d, c) for e, d, c in log if e > head - int(length / gran)]
        assert m.snapshot.calls == len(live)
        assert m.snapshot.failures == sum(is_failure(c) for _, c in live)
        assert m.snapshot.slow_calls == sum(d >= slow for d, _ in live)
        assert m.snapshot.total_duration_s == pytest.approx(sum(d for d, _ in live), abs=1e-6)
        p95 = m.p95
        assert p95 is not None
        exact = _exact([d for d, _ in live], 0.95)
        assert abs(p95 - exact) <= 0.01 * exact * (1 + 1e-9)


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(min_value=1, max_value=20),
    calls=st.lists(
        st.tuples(st.floats(min_value=1e-4, max_value=20.0), st.sampled_from([None, -32004, -32007])),
        min_size=1,
        max_size=80,
    ),
)
def test_count_window_matches_brute_force(size: int, calls: list[tuple[float, int | None]]) -> None:
    """The count window always holds exactly the last ``size`` calls."""
    w = CountWindow(size=size, slow_call_s=5.0)
    for i, (d, c) in enumerate(calls):
        snap = w.record(0.0, d, c)
        live = calls[max(0, i + 1 - size) : i + 1]
        assert snap.calls == len(live)
        assert snap.failures == sum(is_failure(c) for _, c in live)
        assert snap.slow_calls == sum(d >= 5.0 for d, _ in live)


@pytest.mark.parametrize(
    "window",
    [
        TimeWindow(length_s=60, slow_call_s=1.0, latency=False),
        CountWindow(size=5, slow_call_s=1.0, latency=False),
    ],
)
def test_counts_only_window(window: TimeWindow | CountWindow) -> None:
    """A window built without latency keeps every count and evicts cleanly but has no quantiles."""
    for t in range(8):
        window.add(float(t * 20), 2.0, -32603)
    m = window.metrics(140.0)
    assert m.latency is None and m.p95 is None
    assert m.snapshot.calls == m.snapshot.failures == m.snapshot.slow_calls == sum(m.outcomes.values())
    assert 0 < m.snapshot.calls <= 5
