"""Baseline partial aggregates: any partitioning gives the same result, and the result matches a
straightforward computation; plus partition planning, the sketch codec and report rendering."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.reports.render import Chart, Report, Section, Table, render_html, render_markdown
from policies.analysis.baselines import (
    HOUR,
    SLOTS,
    Window,
    combine,
    finalize,
    partials,
    plan_partitions,
    rank_quantile,
    slot_of_hour,
    user_baselines,
)
from policies.breaker.latency_sketch import LatencySketch
from policies.metrics.sketch_codec import decode_sketch, encode_sketch

START = 1_700_006_400.0  # a whole hour (2023-11-15 00:00 UTC)
HOURS = 72


def history(seed: int, n: int = 3000) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(START, START + HOURS * HOUR, n))
    calls = pd.DataFrame({
        "ts": ts, "user": rng.choice(["ann", "bob", "cy", "dee"], n, p=[0.5, 0.3, 0.15, 0.05]),
        "service": rng.choice(["A", "B", "C"], n), "duration_ms": rng.lognormal(4.0, 0.7, n),
        "failure": rng.random(n) < 0.05,
    })
    m = n // 10
    access = pd.DataFrame({"ts": np.sort(rng.uniform(START, START + HOURS * HOUR, m)),
                           "user": rng.choice(["ann", "bob", "cy"], m), "records": rng.integers(1, 50, m)})
    return calls, access


def split(frame: pd.DataFrame, cuts: list[float]) -> list[pd.DataFrame]:
    edges = [-math.inf, *sorted(cuts), math.inf]
    return [frame[(frame["ts"] >= lo) & (frame["ts"] < hi)] for lo, hi in itertools.pairwise(edges)]


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.floats(START, START + HOURS * HOUR), max_size=5), seed=st.integers(0, 3))
def test_any_time_split_gives_the_same_baselines(cuts: list[float], seed: int) -> None:
    """Partials of arbitrary time slices (not hour-aligned) combine to exactly the one-partition result."""
    calls, access = history(seed)
    w = Window(start=START, end=START + HOURS * HOUR)
    whole = finalize(partials(calls, access), w)
    parts = [partials(c, a) for c, a in zip(split(calls, cuts), split(access, cuts), strict=True)]
    assert finalize(combine(*parts), w) == whole


def test_user_numbers_match_a_direct_computation() -> None:
    """Mean, population std, p95 per hour (zero hours included) and records per day match numpy."""
    calls, access = history(7)
    w = Window(start=START, end=START + HOURS * HOUR)
    users, _ = finalize(partials(calls, access), w)
    for user in ("ann", "dee"):
        hours = np.floor(calls.loc[calls["user"] == user, "ts"] / HOUR).astype(int)
        series = np.bincount(hours - int(START // HOUR), minlength=HOURS).astype(float)
        got = users["users"][user]
        assert got["requestsPerHour"] == pytest.approx(series.mean())
        assert got["requestsPerHourStd"] == pytest.approx(series.std())
        s = np.sort(series)
        assert got["requestsPerHourPercentiles"]["p95"] == s[math.floor(0.95 * (HOURS - 1))]
        slot = int(slot_of_hour(int(START // HOUR)))
        first_slot_hours = series[[i for i in range(HOURS) if (slot + i) % SLOTS == slot]]
        assert got["hourOfWeek"]["mean"][slot] == pytest.approx(first_slot_hours.mean(), abs=1e-4)
    ann_records = access.loc[access["user"] == "ann", "records"].sum()
    assert users["users"]["ann"]["recordsPerDay"] == pytest.approx(ann_records / 3)
    assert users["users"]["dee"]["records"] == 0


def test_service_numbers_match_a_direct_computation() -> None:
    """Error rate is exact; latency quantiles are within the sketch's 1 % of the exact rank value."""
    calls, access = history(11)
    w = Window(start=START, end=START + HOURS * HOUR)
    _, services = finalize(partials(calls, access), w)
    for name in ("A", "C"):
        mine = calls[calls["service"] == name]
        got = services["services"][name]
        assert got["errorRate"] == pytest.approx(mine["failure"].mean())
        assert got["requestsPerHour"] == pytest.approx(len(mine) / HOURS)
        s = np.sort(mine["duration_ms"].to_numpy())
        for q in (0.5, 0.95, 0.99):
            exact = s[math.floor(q * (len(s) - 1))]
            assert got["latencyMs"][f"p{int(q * 100)}"] == pytest.approx(exact, rel=0.011)


@pytest.mark.parametrize(("counts", "max_rows", "expected"), [
    ({}, 10, [(0, 3)]),
    ({0: 5, 1: 5, 2: 5}, 10, [(0, 2), (2, 3)]),
    ({0: 50, 1: 1, 2: 1}, 10, [(0, 1), (1, 3)]),  # one busy hour is never split
    ({0: 1, 1: 1, 2: 1}, 100, [(0, 3)]),
])
def test_plan_partitions(counts: dict[int, int], max_rows: int, expected: list[tuple[int, int]]) -> None:
    """Partitions cover the window at hour boundaries and respect the row budget where they can."""
    got = plan_partitions(counts, Window(start=0.0, end=3 * HOUR), max_rows)
    assert got == [(a * HOUR, b * HOUR) for a, b in expected]


def test_window_aligns_to_whole_hours_and_refuses_empty() -> None:
    """A window keeps only whole hours; one without any is an error."""
    w = Window.aligned(START + 10, START + 5 * HOUR + 10)
    assert (w.start, w.end, w.hours) == (START + HOUR, START + 5 * HOUR, 4)
    assert w.slot_hours().sum() == 4
    with pytest.raises(ValueError):
        Window.aligned(START + 10, START + HOUR)


def test_rank_quantile_counts_the_zeros() -> None:
    """Zero hours pad the low end of the distribution."""
    assert rank_quantile(np.array([5.0]), zeros=9, q=0.5) == 0.0
    assert rank_quantile(np.array([5.0]), zeros=9, q=1.0) == 5.0
    assert rank_quantile(np.array([]), zeros=0, q=0.5) == 0.0


def test_sketch_codec_round_trips() -> None:
    """Encoded sketches decode to the same buckets; empty bytes are an empty sketch."""
    sk = LatencySketch()
    for v in (0.0, 0.001, 0.2, 0.2, 3.0):
        sk.add(v)
    back = decode_sketch(encode_sketch(sk))
    assert (back.counts, back.zero_count, back.count) == (sk.counts, sk.zero_count, sk.count)
    assert decode_sketch(b"").count == 0


def test_user_baselines_give_the_security_shape() -> None:
    """The stored user_activity document reads back as UserBaseline values."""
    calls, access = history(3)
    users, _ = finalize(partials(calls, access), Window(start=START, end=START + HOURS * HOUR))
    got = user_baselines(users)
    assert got["ann"].requests_per_hour == users["users"]["ann"]["requestsPerHour"]
    assert got["ann"].services == frozenset({"A", "B", "C"})
    with pytest.raises(ValueError):
        user_baselines({"schema": 99})


def test_reports_escape_untrusted_text() -> None:
    """Names from the store cannot inject markup into the HTML or break the Markdown table."""
    evil = "<script>alert(1)</script>|x"
    report = Report(title="t", subtitle="s", generated_at=START, data={}, sections=[Section(
        title=evil, tables=[Table(header=("user",), rows=[(evil,)])],
        charts=[Chart(title=evil, series={evil: [(START, 1.0), (START + 60, 2.0)]}, threshold=1.5),
                Chart(title="bars", kind="bar", bars=[(evil, 3.0)])])])
    page = render_html(report)
    assert "<script>" not in page and page.count("<svg") == 2
    assert "\\|x" in render_markdown(report)
