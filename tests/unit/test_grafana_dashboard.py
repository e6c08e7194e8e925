"""deploy/grafana/sfa-ops-dashboard.json: valid JSON, a Prometheus datasource variable used by every
panel, and PromQL that names only series operate's ``/metrics`` exposes (names as a scrape shows
them: counters with ``_total``, histogram ``_bucket``/``_sum``/``_count``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from policies.metrics.calls import CallTotals
from policies.metrics.series import exposition_names
from policies.observation.correlation import ServiceDelta
from policies.supervision.status_view import metric_families

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "sfa-ops-dashboard.json"
SERIES_NAME = re.compile(r"\bsfa_ops_[a-zA-Z0-9_:]*")
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def exprs(doc: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in doc["panels"] for t in p["targets"]]


def full_status() -> dict[str, Any]:
    """A status with every family populated (a metric family without samples still has its name)."""
    totals = CallTotals()
    totals.add(ServiceDelta("A", outcomes=[(0.1, None)]))
    health = {"clusterId": "c", "services": {"A": {"status": "healthy", "breaker": "closed", "p95Ms": 1.0}},
              "infrastructure": {"redis": {"status": "healthy", "latencyMs": 1.0}}, "observed": {}}
    return {"health": health, "published": {"tier2": 1}, "monitors": ["A"], "calls": {"A": totals.snapshot()},
            "inflight": {}}


def test_dashboard_is_grafana_json_with_a_prometheus_datasource_variable() -> None:
    """Schema version, unique panel ids, and every panel and query on the ``datasource`` variable."""
    doc = dashboard()
    assert doc["schemaVersion"] >= 39 and doc["uid"] and doc["title"]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in doc["panels"]:
        assert p["targets"], p["title"]
        for ds in [p["datasource"], *(t["datasource"] for t in p["targets"])]:
            assert ds == {"type": "prometheus", "uid": "${datasource}"}, p["title"]


def test_queries_name_only_exposed_series() -> None:
    """Every series a query names (outside quoted label values) is one operate exposes."""
    exposed = exposition_names(metric_families(full_status(), age_s=0.0))
    named = {n for e in exprs(dashboard()) for n in SERIES_NAME.findall(QUOTED.sub('""', e))}
    assert named, "no series found in the dashboard's queries"
    assert named <= exposed, sorted(named - exposed)


def test_dashboard_covers_the_series() -> None:
    """Panels on status, breaker, calls by code, error ratio, p95/p99, in flight, infrastructure and intake."""
    text = "\n".join(exprs(dashboard()))
    for series in ("sfa_ops_service_status", "sfa_ops_breaker_state", "sfa_ops_calls_total",
                   "sfa_ops_call_duration_seconds_bucket", "sfa_ops_inflight_calls", "sfa_ops_infrastructure_up",
                   "sfa_ops_infrastructure_latency_seconds", "sfa_ops_observed_total"):
        assert series in text, series
    assert "histogram_quantile(0.95" in text and "histogram_quantile(0.99" in text
    assert "malformed" in text and "dropped" in text


def test_series_names_are_parsed_outside_label_values() -> None:
    """The name parser sees series, not label values that merely look like one."""
    assert SERIES_NAME.findall(QUOTED.sub('""', 'rate(sfa_ops_calls_total{code="sfa_ops_x"}[1m])')) == [
        "sfa_ops_calls_total"]
