"""The health window as a saved document: same counts back, aged by its own times, bounded, and a
hostile document refused and counted without raising."""

from __future__ import annotations

import json
import math
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.breaker.outcomes import UNANSWERED, is_failure
from policies.breaker.windows import TimeWindow
from policies.health.window_state import (
    MAX_CODES,
    MAX_KEY_SPAN,
    MAX_SEGMENTS,
    dump_window,
    restore_window,
)


def window() -> TimeWindow:
    return TimeWindow(length_s=120.0, slow_call_s=2.0)


def restored(doc: object, now: float) -> tuple[TimeWindow, Any]:
    w = window()
    return w, restore_window(w, doc, now)


def counts(w: TimeWindow, now: float) -> tuple[int, int, int, dict[int, int]]:
    m = w.metrics(now)
    return m.snapshot.calls, m.snapshot.failures, m.snapshot.slow_calls, dict(m.outcomes)


CODES = st.sampled_from([None, None, None, -32603, -32001, -32007, UNANSWERED, 42])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 300.0), st.floats(0.0, 20.0), CODES), max_size=200))
def test_restore_at_the_same_moment_gives_the_same_counts(calls: list[tuple[float, float, int | None]]) -> None:
    """Dump at ``now`` and restore at ``now``: calls, failures, slow calls and outcome codes are the
    same; p95 within the coarsened sketch's relative error."""
    w = window()
    for t, dur, code in sorted(calls, key=lambda c: c[0]):
        w.add(t, dur, code)
    now = 300.0
    doc = json.loads(json.dumps(dump_window(w, now)))  # through JSON, as the store keeps it
    back, report = restored(doc, now)
    assert report.refused == 0
    assert counts(back, now) == counts(w, now)
    p95, q95 = w.metrics(now).p95, back.metrics(now).p95
    assert (p95 is None) == (q95 is None)
    if p95 is not None and q95 is not None and p95 > 0:
        shift = max((s[5] for s in doc["s"]), default=0)
        assert abs(q95 - p95) <= p95 * 0.02 * 2**shift + 1e-9


def test_restore_ages_the_calls_by_their_own_times() -> None:
    """One call a second for 120 s, restored 30 s later: the first 30 s have left the window, as in
    the window that never stopped (at most one 6-second segment later)."""
    w = window()
    for t in range(120):
        w.add(float(t), 0.01, -32603)
    doc = dump_window(w, 119.0)
    assert len(doc["s"]) == 20  # 6-second segments
    back, report = restored(doc, 150.0)
    kept = back.snapshot(150.0).calls
    assert w.snapshot(150.0).calls == 89  # epochs 31..119
    assert kept == 90 and report.refused == 0  # the segment of epochs 30..35 is kept whole
    assert report.expired == 5 and report.restored == 15
    later, report = restored(doc, 119.0 + 126.0)
    assert later.snapshot(245.0).calls == 0 and report.expired == 20


def test_busy_window_stays_small() -> None:
    """A busy service (1,000 calls/s for the whole 2-minute window, lognormal latencies from ~1 ms
    to seconds, 40 distinct error codes): the saved window stays a few kilobytes, codes and latency
    runs capped, failure and unanswered counts kept exactly."""
    rng = random.Random(7)
    w = window()
    for i in range(120_000):
        code = rng.choice([None] * 20 + [-32603, UNANSWERED, -32001] + [-31000 - k for k in range(40)])
        w.add(i / 1000.0, rng.lognormvariate(math.log(0.05), 1.2), code)
    now = 119.999
    doc = dump_window(w, now)
    size = len(json.dumps(doc, separators=(",", ":")))
    print(f"saved window of a busy service: {size} bytes, {len(doc['s'])} segments")
    assert size < 16_000
    assert all(len(s[4]) <= 2 * MAX_CODES and len(s[8]) <= MAX_KEY_SPAN for s in doc["s"])
    back, report = restored(json.loads(json.dumps(doc)), now)
    m, r = w.metrics(now), back.metrics(now)
    assert report.refused == 0
    assert (r.snapshot.calls, r.snapshot.failures, r.unanswered) == (m.snapshot.calls, m.snapshot.failures,
                                                                     m.unanswered)
    assert sum(n for c, n in r.outcomes.items() if is_failure(c)) == sum(
        n for c, n in m.outcomes.items() if is_failure(c))
    assert m.p95 is not None and r.p95 is not None and abs(r.p95 - m.p95) <= 0.1 * m.p95


GOOD = [110.0, 4, 1, 2.5, [-32603, 3], 0, 0, -100, [1, 0, 3]]


def bad(i: int, value: object) -> dict[str, Any]:
    seg = list(GOOD)
    seg[i] = value
    return {"v": 1, "a": 0.01, "s": [seg, GOOD]}


def test_a_valid_segment_restores() -> None:
    back, report = restored({"v": 1, "a": 0.01, "s": [GOOD]}, 115.0)
    assert report.restored == 1 and counts(back, 115.0) == (4, 3, 1, {-32603: 3})


HOSTILE: list[object] = [
    None, [], "x", {"v": 2, "s": []}, {"v": 1, "s": "x"},
    bad(0, math.nan), bad(0, "110"), bad(0, 1e12), bad(1, 0), bad(1, True), bad(1, 4.0), bad(2, 5), bad(3, -1.0),
    bad(3, math.inf), bad(4, [-32603, 5]), bad(4, [-32603]), bad(4, [-32603, 1, -32603, 1]), bad(4, [1] * 40),
    bad(5, 99), bad(6, 9), bad(7, 10**9), bad(8, [1] * 65), bad(8, [2, 2, 2]), bad(8, ["1"]), [1, 2, 3],
    {"v": 1, "a": 0.01, "s": [GOOD[:8], GOOD]},
]


def test_hostile_documents_are_refused_and_counted() -> None:
    """Each corrupt document or segment is refused and counted; a valid segment beside it is kept."""
    for doc in HOSTILE:
        back, report = restored(doc, 115.0)
        assert report.refused >= 1, doc
        assert back.snapshot(115.0).calls in (0, 4), doc


def test_oversized_document_is_clamped() -> None:
    """A million segments: only the first MAX_SEGMENTS are read, the rest counted as refused."""
    back, report = restored({"v": 1, "a": 0.01, "s": [GOOD] * 1_000_000}, 115.0)
    assert report.refused == 1_000_000 - MAX_SEGMENTS and report.restored == MAX_SEGMENTS
    assert back.snapshot(115.0).calls == 4 * MAX_SEGMENTS


def test_other_alpha_restores_counts_without_latencies() -> None:
    back, report = restored({"v": 1, "a": 0.02, "s": [GOOD]}, 115.0)
    assert report.restored == 1 and back.snapshot(115.0).calls == 4 and back.metrics(115.0).p95 is None


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=10) | st.dictionaries(st.text(max_size=3), inner,
                                                                                 max_size=5), max_leaves=40)


@settings(max_examples=200, deadline=None)
@given(JSON, st.lists(JSON, max_size=10))
def test_any_document_restores_without_raising(doc: object, segs: list[Any]) -> None:
    for d in (doc, {"v": 1, "a": 0.01, "s": segs}):
        back, _ = restored(d, 115.0)
        back.metrics(115.0)


def test_dump_with_the_segment_cache_equals_a_fresh_dump() -> None:
    """Segments reused from the previous dump are exactly what a fresh encoding gives, as calls keep
    arriving, buckets are reused and segments leave the window."""
    rng = random.Random(3)
    w = window()
    cache: dict[Any, Any] = {}
    t = 0.0
    while t < 400.0:
        for _ in range(20):
            w.add(t, rng.lognormvariate(math.log(0.05), 1.0), rng.choice([None, -32603, UNANSWERED]))
        if int(t * 4) % 13 == 0:
            assert dump_window(w, t, cache) == dump_window(w, t)
            assert len(cache) <= MAX_SEGMENTS and len(dump_window(w, t)["s"]) <= MAX_SEGMENTS
        t += 0.25 if t < 200.0 else 7.0
