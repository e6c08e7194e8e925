"""The status view and metric families derived from a health summary as the supervisor builds it
(through ``SystemHealth``), and the ``--http`` address option."""

from __future__ import annotations

import pytest

from drivers.options import listen_address
from policies.supervision.status_view import STALE_AFTER_S, metric_families, status_view
from protocol.system import SystemHealth


def status() -> dict[str, object]:
    health = SystemHealth.model_validate({
        "clusterId": "c1", "status": "degraded", "timestamp": 1_700_000_000.0,
        "services": {"Payments": {"status": "down", "breaker": "open", "errorRate": 1.0, "p95Ms": 250.0,
                                  "callsPerSecond": 3.5},
                     "Users": {"status": "healthy", "breaker": "closed"}},
        "infrastructure": {"redis": {"status": "down", "lastError": "refused"}},
        "observed": {"calls": 10, "malformed": 2, "unknownServices": 1}}).to_wire()
    return {"health": health, "published": {"tier2": 4}, "monitors": ["Payments", "Users"]}


def samples(families: list, name: str) -> dict[tuple[tuple[str, str], ...], float]:  # type: ignore[type-arg]
    [family] = [f for f in families if f.name == name]
    return {s.labels: s.value for s in family.samples}


def test_breaker_status_and_units() -> None:
    fams = metric_families(status(), age_s=1.0)
    breaker = samples(fams, "sfa_ops_breaker_state")
    assert breaker[(("cluster", "c1"), ("service", "Payments"))] == 2.0
    assert breaker[(("cluster", "c1"), ("service", "Users"))] == 0.0
    p95 = samples(fams, "sfa_ops_service_latency_p95_seconds")
    assert p95 == {(("cluster", "c1"), ("service", "Payments")): 0.25}  # base unit: seconds
    svc = samples(fams, "sfa_ops_service_status")
    assert svc[(("cluster", "c1"), ("service", "Payments"), ("status", "down"))] == 1.0
    assert svc[(("cluster", "c1"), ("service", "Payments"), ("status", "healthy"))] == 0.0
    observed = samples(fams, "sfa_ops_observed")
    assert observed[(("cluster", "c1"), ("outcome", "unknown_services"))] == 1.0
    assert samples(fams, "sfa_ops_up") == {(): 1.0}


def test_stale_or_missing_status_is_not_up() -> None:
    assert samples(metric_families(status(), age_s=STALE_AFTER_S + 1), "sfa_ops_up") == {(): 0.0}
    assert [f.name for f in metric_families(None, age_s=None)] == ["sfa_ops_up"]
    assert status_view(None, age_s=None)["ready"] is False


def test_view_rows() -> None:
    view = status_view(status(), age_s=0.5)
    assert view["ready"] is True and view["cluster"] == "c1" and view["status"] == "degraded"
    assert [(s["service"], s["breaker"]) for s in view["services"]] == [("Payments", "open"), ("Users", "closed")]
    assert view["infrastructure"] == [{"component": "redis", "status": "down", "details": {"lastError": "refused"}}]


@pytest.mark.parametrize(("value", "expected"), [
    ("8080", ("127.0.0.1", 8080)), ("0.0.0.0:9000", ("0.0.0.0", 9000)), ("[::1]:9000", ("::1", 9000)),
    (":0", ("127.0.0.1", 0)),
])
def test_listen_address(value: str, expected: tuple[str, int]) -> None:
    assert listen_address(value) == expected


@pytest.mark.parametrize("value", ["host:", "x:70000", "abc"])
def test_listen_address_refuses(value: str) -> None:
    with pytest.raises(ValueError):
        listen_address(value)


def test_terminal_table_says_what_is_not_retained() -> None:
    from drivers.status import render
    from policies.supervision.ops_board import active_actions_view
    from protocol.security import ActiveActions, EnforcementAction

    wire = ActiveActions(actions=[EnforcementAction(action="block_ip", target="203.0.113.9", until=1_700_000_600.0),
                                  EnforcementAction(action="block_ip", target="198.51.100.1", until=1_699_999_000.0)],
                         timestamp=1_700_000_000.0).to_wire()
    view = status_view({**status(), "ops": {"actions": active_actions_view(wire["actions"], 1_700_000_000.0)}},
                       age_s=1.0)
    text = render(view, age_s=1.0, actions_at=wire["timestamp"])
    assert "block_ip             203.0.113.9" in text and "198.51.100.1" not in text  # expired: not shown
    assert "active actions (1, set of 2023-11-14T22:13:20Z)" in text
    assert "open incidents, recent alerts: not retained" in text
    assert "active actions: none retained" in render(status_view(status(), age_s=1.0), age_s=1.0)


def test_infrastructure_state_set_covers_what_checkers_report() -> None:
    """A component in ``error`` (what a checker reports for a failed component) has its series at 1."""
    status = {"health": {"clusterId": "c", "infrastructure": {"redis": {"status": "error"}}}}
    families = {f.name: f for f in metric_families(status, age_s=0.0)}
    values = {dict(s.labels)["status"]: s.value for s in families["sfa_ops_infrastructure_status"].samples}
    assert values["error"] == 1.0 and sum(values.values()) == 1.0
