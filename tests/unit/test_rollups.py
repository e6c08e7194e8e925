"""Live per-minute rollups from monitor deltas (policies.metrics.rollups), read back by policies.analysis.rollup_summary."""

from __future__ import annotations

import pytest

from policies.analysis.rollup_summary import service_summaries
from policies.analysis.summaries import ServiceSummary
from policies.breaker.outcomes import UNANSWERED
from policies.metrics.rollups import RollupBuilder, minute_of
from policies.metrics.sketch_codec import decode_sketch
from policies.observation.correlation import ServiceDelta

T0 = 1_700_000_040.0  # a minute boundary


def delta(outcomes: list[tuple[float, int | None]], *, inflight: int = 0, peak: int = 0,
          trials: list[tuple[float, int | None]] | None = None) -> ServiceDelta:
    d = ServiceDelta("Payments", outcomes=list(outcomes), trials=list(trials or []))
    d.inflight, d.max_inflight = inflight, peak
    return d


def test_minute_boundary() -> None:
    """minute_of floors to the minute's start."""
    assert minute_of(T0) == T0 and minute_of(T0 + 59.9) == T0 and minute_of(T0 + 60.0) == T0 + 60.0


def test_a_minute_closes_when_the_next_begins_with_every_figure() -> None:
    """Calls, outcomes by code, timeouts, latency sketch, peak and average concurrency and the
    backlog of one minute come out once a delta of the next minute arrives — not before."""
    b = RollupBuilder(service="Payments")
    assert b.add(delta([(0.1, None)] * 8 + [(0.2, -32603)] * 2, inflight=4, peak=6), T0 + 1.0) is None
    assert b.add(delta([(1.0, UNANSWERED), (0.3, -32007)], inflight=4, peak=5,
                       trials=[(0.05, None)]), T0 + 31.0) is None
    r = b.add(delta([], inflight=0), T0 + 61.0)
    assert r is not None and r.minute == T0 and r.service == "Payments"
    assert r.calls == 13 and sum(r.outcomes.values()) == 13
    assert r.outcomes == {"ok": 9, "-32603": 2, str(UNANSWERED): 1, "-32007": 1}
    assert r.timeouts == 2 and r.concurrency_max == 6
    assert r.concurrency_avg == pytest.approx((8 * 0.1 + 2 * 0.2 + 1.0 + 0.3 + 0.05) / 60.0, abs=1e-3)  # Little
    assert r.queue_depth == 4
    sketch = decode_sketch(r.latency_sketch)
    assert sketch.count == 12  # the unanswered call has no latency
    assert sketch.quantile(0.5) == pytest.approx(0.1, rel=0.02)
    assert sketch.quantile(1.0) == pytest.approx(0.3, rel=0.02)


def test_the_backlog_at_the_minute_end_is_the_queue_depth() -> None:
    """Calls still in flight when a minute ends are its queue depth, even with none finished."""
    b = RollupBuilder(service="Payments")
    b.add(delta([(0.1, None)], inflight=3, peak=3), T0 + 50.0)
    b.add(delta([], inflight=5, peak=5), T0 + 65.0)
    r = b.add(delta([], inflight=0), T0 + 121.0)
    assert r is not None and r.minute == T0 + 60.0 and r.calls == 0 and r.queue_depth == 5
    assert r.concurrency_max == 5 and r.concurrency_avg == 0.0


def test_idle_minutes_write_nothing_and_close_flushes_the_partial_minute() -> None:
    """A minute with no calls and nothing in flight gives no row; close() returns the minute so far."""
    b = RollupBuilder(service="Payments")
    b.add(delta([]), T0 + 1.0)
    assert b.add(delta([]), T0 + 61.0) is None
    b.add(delta([(0.2, None)], inflight=1, peak=1), T0 + 70.0)
    r = b.close(T0 + 80.0)
    assert r is not None and r.minute == T0 + 60.0 and r.calls == 1 and r.queue_depth == 1
    assert r.concurrency_avg == pytest.approx(0.2 / 20.0, abs=1e-3)  # averaged over the 20 s observed
    assert b.close(T0 + 90.0) is None


def test_live_rollups_feed_the_recommendation_summary() -> None:
    """The rows the monitors write give policies.analysis.rollup_summary the seed's figures (p95, error rate)."""
    b = RollupBuilder(service="Payments")
    rows = [b.add(delta([(0.05, None)] * 90 + [(0.05, -32603)] * 10, inflight=2, peak=3), T0 + 60 * m + 1)
            for m in range(3)]
    rows.append(b.close(T0 + 179.0))
    [s] = service_summaries([r for r in rows if r is not None], {}, start=T0, end=T0 + 180.0)
    assert isinstance(s, ServiceSummary) and s.calls == 300
    assert s.error_rate == pytest.approx(0.1) and s.p95_ms == pytest.approx(50.0, rel=0.02)
    assert s.peak_concurrency == 3.0
