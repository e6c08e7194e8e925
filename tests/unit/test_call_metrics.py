"""Per-service call counts by code and the duration histogram, fed with what the correlator drains."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.breaker.outcomes import UNANSWERED
from policies.metrics.calls import BUCKETS, MAX_CODES, CallTotals, bucket_index, code_label, read_totals
from policies.observation.correlation import Correlator, ServiceDelta


def call(i: object) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": i, "method": "m"}


def test_codes_and_histogram_from_correlated_calls() -> None:
    """Results count as ok, errors by code, unanswered calls as timeout; only answered calls
    enter the histogram, each in the bucket its duration falls in."""
    c = Correlator(call_timeout_s=1.0)
    for i in range(4):
        c.on_call("A", call(i), "session/s/response", None, now=0.0)
    c.on_response("session/s/response", {"id": 0, "result": 1}, now=0.004)
    c.on_response("session/s/response", {"id": 1, "result": 1}, now=0.3)
    c.on_response("session/s/response", {"id": 2, "error": {"code": -32603, "message": "x"}}, now=0.05)
    c.expire(1.0)  # id 3: no answer
    deltas, _ = c.drain()
    totals = CallTotals()
    tick = totals.add(deltas["A"])
    assert totals.codes == {"ok": 2, "-32603": 1, "timeout": 1} == tick.codes
    assert sorted(round(d, 3) for d in tick.durations) == [0.004, 0.05, 0.3]
    assert totals.count == 3 and totals.duration_sum == pytest.approx(0.354)
    assert totals.buckets[BUCKETS.index(0.005)] == 1
    assert totals.buckets[BUCKETS.index(0.05)] == 1  # le: a duration equal to a bound is in it
    assert totals.buckets[BUCKETS.index(0.5)] == 1


def test_calls_sfa_ops_answered_count_as_32503() -> None:
    """Calls refused while the breaker is open and pending calls answered when the service went
    down are -32503 (what their callers got); a lost trial is a timeout."""
    c = Correlator(call_timeout_s=30.0)
    c.on_call("A", call(1), "session/s/response", None, now=0.0)
    c.set_breaker("A", "open", open_until=100.0, trial_permits=0, epoch=1)
    c.on_call("A", call(2), "session/s/response", None, now=1.0)
    assert len(c.take_pending("A", now=2.0)) == 1
    deltas, _ = c.drain()
    assert deltas["A"].fast_failed == 1 and deltas["A"].answered_unavailable == 1
    totals = CallTotals()
    assert totals.add(deltas["A"]).codes == {"-32503": 2}
    assert totals.count == 0


def test_counts_accumulate_across_ticks_and_merged_deltas() -> None:
    """Totals only grow; a delta held while a monitor starts (merged) counts the same."""
    a = ServiceDelta("A", outcomes=[(0.01, None)], fast_failed=1)
    b = ServiceDelta("A", outcomes=[(0.02, -32001)], trials=[(0.5, UNANSWERED)], answered_unavailable=2)
    one = CallTotals()
    one.add(a)
    one.add(b)
    a.merge(b)
    merged = CallTotals()
    merged.add(a)
    assert one.snapshot() == merged.snapshot()
    assert one.codes == {"ok": 1, "-32001": 1, "timeout": 1, "-32503": 3}


def test_distinct_codes_are_capped() -> None:
    """Beyond MAX_CODES distinct codes a new one is counted as -32603 and in ``capped``."""
    totals = CallTotals()
    totals.add(ServiceDelta("A", outcomes=[(0.01, -40000 - i) for i in range(MAX_CODES + 5)]))
    assert len(totals.codes) == MAX_CODES + 1  # -32603 joins once the table is full
    assert totals.codes["-32603"] == 5 and totals.capped == 5
    assert sum(totals.codes.values()) == MAX_CODES + 5
    back = read_totals(totals.snapshot())
    assert back is not None and back.codes == totals.codes  # the folded code is read back too


@given(st.lists(st.tuples(st.floats(0, 100, allow_nan=False), st.sampled_from([None, -32603, UNANSWERED]))))
def test_snapshot_round_trips_and_buckets_sum_to_answered(outcomes: list[tuple[float, int | None]]) -> None:
    """Every answered call is in exactly one bucket; a snapshot reads back as it was."""
    totals = CallTotals()
    totals.add(ServiceDelta("A", outcomes=outcomes))
    assert totals.count == sum(1 for _, code in outcomes if code != UNANSWERED)
    assert sum(totals.codes.values()) == len(outcomes)
    back = read_totals(totals.snapshot())
    assert back is not None and back.snapshot() == {**totals.snapshot(), "capped": 0}


@pytest.mark.parametrize("data", [None, [], {"codes": {}, "buckets": [0], "sum": 0.0},
                                  {"codes": {}, "buckets": [-1] * (len(BUCKETS) + 1), "sum": 0.0},
                                  {"codes": [], "buckets": [0] * (len(BUCKETS) + 1), "sum": 0.0},
                                  {"codes": {}, "buckets": [0] * (len(BUCKETS) + 1), "sum": "x"}])
def test_read_totals_refuses_what_is_not_a_snapshot(data: object) -> None:
    """A malformed snapshot is not read (and does not raise)."""
    assert read_totals(data) is None


def test_labels_and_bucket_edges() -> None:
    assert [code_label(None), code_label(UNANSWERED), code_label(-32001)] == ["ok", "timeout", "-32001"]
    assert bucket_index(0.0) == 0 and bucket_index(0.005) == 0 and bucket_index(0.0051) == 1
    assert bucket_index(30.0) == len(BUCKETS) - 1 and bucket_index(31.0) == len(BUCKETS)


def test_correlator_reports_inflight_per_service() -> None:
    """Only services with calls awaiting an answer are listed."""
    c = Correlator(call_timeout_s=30.0)
    c.on_call("A", call(1), "r", None, now=0.0)
    c.on_call("A", call(2), "r", None, now=0.0)
    c.on_call("B", call(3), "r", None, now=0.0)
    c.on_response("r", {"id": 3, "result": 1}, now=0.1)
    assert c.inflight() == {"A": 2}
