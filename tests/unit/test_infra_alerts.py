"""policies/infra_alerts: alerts for tracker transitions (runbook steps, affected services), health
entries and their restore, merged probe results, pod status for monitors."""

from __future__ import annotations

import orjson
import pytest

from policies.alerting.runbooks import load_runbooks
from policies.infrastructure.alerts import (
    affected_services,
    health_entry,
    merge_results,
    monitor_pods,
    restored_state,
    runbook_values,
    transition_alerts,
)
from policies.infrastructure.checks import (
    ComponentTracker,
    ProbeResult,
    Problem,
    TransitionKind,
    load_infrastructure_policy,
)

POLICY = load_infrastructure_policy()
RUNBOOKS = load_runbooks()


def down(component: str = "redis", **details: object) -> ProbeResult:
    return ProbeResult.build(component=component, latency_ms=3.0, details=details, error="refused",
                             problems=[Problem(code="unreachable", severity="critical", message="refused")])


def up(component: str = "redis", **details: object) -> ProbeResult:
    return ProbeResult.build(component=component, latency_ms=1.0, details=details)


def test_affected_services_are_the_declared_dependants_sorted() -> None:
    """Only services listing the component are affected, in name order."""
    deps = {"Orders": ["redis", "postgresql_cluster"], "Billing": ["postgresql_cluster"], "Auth": ["redis"]}
    assert affected_services("redis", deps) == ["Auth", "Orders"]
    assert affected_services("kubernetes_cluster", deps) == []


def test_outage_fires_then_recovery_resolves_the_same_alert() -> None:
    """ERROR fires InfrastructureError with the runbook (host filled in) and affected services;
    RECOVERED resolves exactly that label set (same severity), so the alert manager pairs them."""
    tracker = ComponentTracker(config=POLICY.component("redis"))
    assert tracker.observe(down(), 10.0) is None
    error = tracker.observe(down(), 11.0)
    assert error is not None and error.kind is TransitionKind.ERROR
    [fire] = transition_alerts(error, cluster_id="c1", previous_severity=None, runbooks=RUNBOOKS,
                               summary="redis unreachable", values={"INSTANCE": "10.0.0.5"}, affected=["Auth"])
    assert fire["labels"] == {"alertname": "InfrastructureError", "severity": "critical", "component": "redis",
                              "cluster": "c1"}
    assert fire["endsAt"] is None and fire["startsAt"] == 10.0
    assert fire["annotations"]["affectedServices"] == "Auth"
    steps = orjson.loads(fire["annotations"]["runbook"])
    assert steps[0]["command"] == ["redis-cli", "-h", "10.0.0.5", "ping"] and steps[0]["status"] == "ready"
    sev = tracker.state.severity
    recovered = tracker.observe(up(), 12.0)
    assert recovered is not None and recovered.kind is TransitionKind.RECOVERED
    [resolve] = transition_alerts(recovered, cluster_id="c1", previous_severity=sev, runbooks=RUNBOOKS,
                                  summary="redis recovered")
    assert resolve["labels"] == fire["labels"] and resolve["endsAt"] == 12.0


@pytest.mark.parametrize("value", ["x;rm -rf /", "$(id)", "--all-namespaces", "a b", ""])
def test_unsafe_runbook_values_leave_steps_unfilled(value: str) -> None:
    """A value that could split an argument or reach a shell is never placed into a command."""
    tracker = ComponentTracker(config=POLICY.component("redis"))
    tracker.observe(down(), 1.0)
    error = tracker.observe(down(), 2.0)
    assert error is not None
    [fire] = transition_alerts(error, cluster_id="c", previous_severity=None, runbooks=RUNBOOKS, summary="s",
                               values={"INSTANCE": value})
    steps = orjson.loads(fire["annotations"]["runbook"])
    assert steps[0]["command"] == ["redis-cli", "-h", "{INSTANCE}", "ping"]
    assert steps[0]["status"] == "unsafe_placeholder" and not steps[0]["automated"]


def test_escalation_fires_new_severity_and_resolves_the_old() -> None:
    """Severity is part of an alert's identity: escalating resolves the warning and fires the error."""
    cfg = POLICY.component("redis")
    tracker = ComponentTracker(config=cfg)
    warn = ProbeResult.build(component="redis", latency_ms=1.0,
                             problems=[Problem(code="memory_pressure", severity="warning", message="m")])
    tracker.observe(warn, 1.0)
    assert tracker.observe(warn, 2.0) is not None
    escalated = tracker.observe(down(), 3.0)
    assert escalated is not None and escalated.kind is TransitionKind.ESCALATED
    fire, resolve = transition_alerts(escalated, cluster_id="c", previous_severity="warning", runbooks=RUNBOOKS,
                                      summary="s")
    assert (fire["labels"]["severity"], fire["endsAt"]) == ("critical", None)
    assert (resolve["labels"]["severity"], resolve["endsAt"]) == ("warning", 3.0)


def test_config_error_alerts_as_misconfigured_not_as_outage() -> None:
    """A configuration error is an InfrastructureMisconfigured warning, resolved when it clears."""
    tracker = ComponentTracker(config=POLICY.component("emqx_cluster"))
    bad = ProbeResult.build(component="emqx_cluster", latency_ms=1.0, error="401", config_error=True)
    t1 = tracker.observe(bad, 1.0)
    assert t1 is not None
    [a] = transition_alerts(t1, cluster_id="c", previous_severity=None, runbooks=RUNBOOKS, summary="401")
    assert a["labels"]["alertname"] == "InfrastructureMisconfigured" and a["endsAt"] is None
    t2 = tracker.observe(up("emqx_cluster"), 2.0)
    assert t2 is not None
    [b] = transition_alerts(t2, cluster_id="c", previous_severity=None, runbooks=RUNBOOKS, summary="ok")
    assert b["labels"] == a["labels"] and b["endsAt"] == 2.0


def test_health_entry_round_trips_an_open_outage() -> None:
    """The health entry of an announced outage restores the tracker so the recovery is still paired."""
    cfg = POLICY.component("redis")
    tracker = ComponentTracker(config=cfg)
    tracker.observe(down(pingMs=1.0), 100.0)
    error = tracker.observe(down(pingMs=1.0), 101.0)
    assert error is not None
    entry = health_entry(down(), tracker.state, now=101.0, severity="critical", affected=["Auth"])
    assert entry["status"] == "error" and entry["severity"] == "critical" and entry["affectedServices"] == ["Auth"]
    assert entry["problems"] == ["unreachable"] and entry["lastCheck"].endswith("Z")
    restored = ComponentTracker(config=cfg)
    state = restored_state(entry, failures_before_error=cfg.failures_before_error)
    assert state is not None
    restored.state = state
    again = restored.observe(up(), 105.0)
    assert again is not None and again.kind is TransitionKind.RECOVERED
    assert again.correlation_id == error.correlation_id and again.downtime_s == pytest.approx(5.0)
    healthy = health_entry(up(pingMs=0.5, extra="x"), restored.state, now=106.0, severity="info")
    assert restored_state(healthy, failures_before_error=2) is None
    assert healthy["details"] == {"pingMs": 0.5}  # only key details reach the summary


def test_merge_several_targets_and_config_errors() -> None:
    """Several probes merge per target; the merge is a configuration error only when every failure is."""
    merged = merge_results("redis", {"a:1/0": up(pingMs=1.0), "b:2/0": down()})
    assert not merged.ok and not merged.config_error and merged.details["reachableTargets"] == 1
    assert merged.details["targets"]["b:2/0"]["reachable"] is False and merged.error == "b:2/0: refused"
    assert runbook_values(merged, hosts=["a", "b"]) == {"INSTANCE": "b"}
    cfg_err = ProbeResult.build(component="emqx_cluster", latency_ms=1.0, error="401", config_error=True)
    only_cfg = merge_results("emqx_cluster", {"broker": up("mqtt_broker", roundTripMs=1.0), "api": cfg_err},
                             primary="api")
    assert only_cfg.config_error and only_cfg.details["roundTripMs"] == 1.0
    both = merge_results("emqx_cluster", {"broker": down("mqtt_broker"), "api": cfg_err}, primary="api")
    assert not both.config_error and not both.ok
    single = merge_results("emqx_cluster", {"broker": up("mqtt_broker")})
    assert single.component == "emqx_cluster" and single.ok


@pytest.mark.parametrize(("reason", "failure", "expected"), [
    ("pod_restart_loop", "container_oom_killed", "pod_restart_loop"),
    (None, "container_oom_killed", "container_oom_killed"),
    (None, "Completed", None),
    (None, None, None),
])
def test_monitor_pods_failure_reason(reason: str | None, failure: str | None, expected: str | None) -> None:
    """The monitor's one failure reason: restart loop first, then OOM; other exit reasons are not failures."""
    pods = monitor_pods(running=2, ready=0, total=3, reason=reason, failure_reason=failure)
    assert pods["failureReason"] == expected and (pods["running"], pods["ready"], pods["total"]) == (2, 0, 3)
