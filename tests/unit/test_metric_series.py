"""The per-call and per-component series on operate's ``/metrics``: built from a supervisor status
whose parts come from their real producers (CallTotals snapshot, the checker's health entry, the
SystemHealth model), exposed through the StatusServer's collector and read back with
prometheus_client's own parser; and the counter increments pushed to Ray's export."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapters.http.status_server import StatusServer
from policies.breaker.outcomes import UNANSWERED
from policies.infrastructure.alerts import health_entry
from policies.infrastructure.checks import ProbeResult, Status, TrackerState
from policies.metrics.calls import BUCKETS, CallTotals
from policies.metrics.series import CounterIncrements, exposition_names, inflight_by_service
from policies.observation.correlation import ServiceDelta
from policies.supervision.status_view import Family, metric_families
from protocol.system import SystemHealth


def supervisor_status() -> dict[str, Any]:
    totals = CallTotals()
    totals.add(ServiceDelta("Payments", outcomes=[(0.004, None), (0.2, None), (0.2, -32603), (1.0, UNANSWERED)],
                            fast_failed=2))
    redis = health_entry(ProbeResult.build(component="redis", latency_ms=12.5),
                         TrackerState(status=Status.HEALTHY), now=1_700_000_000.0, severity="info")
    broker = health_entry(ProbeResult.build(component="mqtt_broker", latency_ms=3.0, error="refused"),
                          TrackerState(status=Status.ERROR, severity="critical", outage_since=1_699_999_990.0),
                          now=1_700_000_000.0, severity="critical")
    health = SystemHealth.model_validate({
        "clusterId": "c1", "status": "degraded", "timestamp": 1_700_000_000.0,
        "services": {"Payments": {"status": "degraded", "breaker": "open", "p95Ms": 200.0},
                     "Users": {"status": "healthy", "breaker": "closed"}},
        "infrastructure": {"redis": redis, "mqtt_broker": broker},
        "observed": {"calls": 6}}).to_wire()
    return {"health": health, "published": {"tier2": 1}, "monitors": ["Payments", "Users"],
            "calls": {"Payments": totals.snapshot(), "Broken": {"codes": "x"}}, "inflight": {"Payments": 3}}


def scrape(status: dict[str, Any]) -> dict[str, Any]:
    server = StatusServer("127.0.0.1", 0)
    server.update(status)
    text = generate_latest(server.registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(family: Any, suffix: str = "") -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == family.name + suffix}


def test_calls_by_code_and_histogram_on_metrics() -> None:
    """Counts by code (with sfa-ops' own -32503 answers) and a cumulative histogram of the answered
    calls, as Prometheus parses them; a malformed entry is skipped."""
    got = scrape(supervisor_status())
    calls = values(got["sfa_ops_calls"], "_total")
    assert calls == {(("cluster", "c1"), ("code", c), ("service", "Payments")): n
                     for c, n in {"ok": 2.0, "-32603": 1.0, "timeout": 1.0, "-32503": 2.0}.items()}
    hist = got["sfa_ops_call_duration_seconds"]
    assert hist.type == "histogram"
    buckets = {dict(k)["le"]: v for k, v in values(hist, "_bucket").items()}
    assert len(buckets) == len(BUCKETS) + 1
    assert buckets["0.005"] == 1.0 and buckets["0.1"] == 1.0 and buckets["0.25"] == 3.0 and buckets["+Inf"] == 3.0
    assert list(values(hist, "_count").values()) == [3.0]
    [total] = values(hist, "_sum").values()
    assert abs(total - 0.404) < 1e-9


def test_inflight_and_infrastructure_series() -> None:
    """In flight for every service (0 when none); a component is up only while healthy, with its
    last check's latency in seconds."""
    got = scrape(supervisor_status())
    assert values(got["sfa_ops_inflight_calls"]) == {(("cluster", "c1"), ("service", "Payments")): 3.0,
                                                    (("cluster", "c1"), ("service", "Users")): 0.0}
    assert values(got["sfa_ops_infrastructure_up"]) == {(("cluster", "c1"), ("component", "mqtt_broker")): 0.0,
                                                       (("cluster", "c1"), ("component", "redis")): 1.0}
    assert values(got["sfa_ops_infrastructure_latency_seconds"]) == {
        (("cluster", "c1"), ("component", "mqtt_broker")): 0.003,
        (("cluster", "c1"), ("component", "redis")): 0.0125}


def test_exposition_names_match_a_scrape() -> None:
    """The names a dashboard may query are the ones a scrape shows."""
    status = supervisor_status()
    server = StatusServer("127.0.0.1", 0)
    server.update(status)
    scraped = {s.name for f in text_string_to_metric_families(generate_latest(server.registry).decode())
               for s in f.samples}
    assert exposition_names(metric_families(status, age_s=0.0)) == scraped


def counter(*samples: tuple[str, float]) -> Family:
    f = Family("sfa_ops_calls", "counter", "")
    for code, v in samples:
        f.add(v, code=code)
    return f


def test_counter_increments_follow_growth_and_resets() -> None:
    """An increment is what a counter grew; a counter that went down restarted (its whole value
    counts); unchanged counters give nothing; only live series are remembered."""
    inc = CounterIncrements()
    assert inc.update([counter(("ok", 5.0), ("-32603", 1.0))]) == {
        ("sfa_ops_calls", (("code", "ok"),)): 5.0, ("sfa_ops_calls", (("code", "-32603"),)): 1.0}
    assert inc.update([counter(("ok", 7.0), ("-32603", 1.0))]) == {("sfa_ops_calls", (("code", "ok"),)): 2.0}
    assert inc.update([counter(("ok", 3.0))]) == {("sfa_ops_calls", (("code", "ok"),)): 3.0}
    assert inc.update([counter(("ok", 3.0), ("-32603", 4.0))]) == {("sfa_ops_calls", (("code", "-32603"),)): 4.0}
    assert inc.update([Family("g", "gauge", "", [])]) == {}


def test_inflight_is_summed_over_observers_for_monitored_services() -> None:
    """Each observer reports its own calls in flight; a retired service's count is left out."""
    reports = [{"A": 2, "Gone": 1}, {"A": 1, "B": 4}]
    assert inflight_by_service(reports, {"A", "B"}) == {"A": 3, "B": 4}
