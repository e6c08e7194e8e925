"""policies/infrastructure: config loading, hysteresis, severities and tier-3 messages; plus the
probes' pure helpers (EMQX memory strings, Redis INFO, replication rows, pods, $SYS)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.probes import PROBES, unknown_components
from adapters.probes.emqx import parse_memory
from adapters.probes.kubernetes_probe import pod_status
from adapters.probes.mqtt_probe import p95, parse_mosquitto_sys
from adapters.probes.postgres_probe import judge_target
from adapters.probes.redis_probe import summarize_info
from policies.common.config import PolicyConfigError, load_policy_text
from policies.infrastructure.checks import (
    ComponentConfig,
    ComponentTracker,
    InfrastructurePolicy,
    ProbeResult,
    Problem,
    Status,
    TransitionKind,
    infrastructure_error_message,
    infrastructure_recovered_message,
    load_infrastructure_policy,
    transition_message,
)
from protocol.system import InfrastructureError, InfrastructureRecovered

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
POLICY = load_infrastructure_policy()
K = TransitionKind


def good(component: str = "redis") -> ProbeResult:
    return ProbeResult.build(component=component, latency_ms=1.0, details={"role": "master"})


def bad(severity: str = "critical", code: str = "unreachable", component: str = "redis") -> ProbeResult:
    return ProbeResult.build(component=component, latency_ms=5.0,
                             problems=[Problem(code=code, severity=severity, message=f"{component} {code}")])  # type: ignore[arg-type]


def misconfigured(component: str = "redis") -> ProbeResult:
    return ProbeResult.build(component=component, latency_ms=1.0, error="bad key", config_error=True)


def config(n: int = 2, m: int = 1, **severities: str) -> ComponentConfig:
    return ComponentConfig(component="redis", interval=30, timeout=5, failures_before_error=n,
                           successes_before_recovery=m, severities=severities,  # type: ignore[arg-type]
                           impact="x", estimated_resolution="y")


# -- config -----------------------------------------------------------------------------------------


def test_shipped_defaults_hold_the_seed_values() -> None:
    """The shipped YAML has the seed's 30 s interval, 100 ms broker p95 and 30 s replication lag."""
    d = POLICY.component("postgresql_cluster")
    assert (d.interval, d.timeout, d.failures_before_error, d.successes_before_recovery) == (30, 5, 2, 1)
    assert POLICY.thresholds.mqtt_broker.round_trip_p95 == 0.1
    assert POLICY.thresholds.postgresql_cluster.replication_lag == 30
    assert POLICY.component("mqtt_broker").interval == 10 and POLICY.component("mqtt_broker").severities["unreachable"] == "critical"


@pytest.mark.parametrize(("text", "needle"), [
    ("defaults: {interval: 500ms}", "must be at least 1s"),
    ("components: {redis: {interval: 2s, timeout: 3s}}", "components.redis.timeout = 3s"),
    ("components: {redis: {failures_before_error: 0}}", "components.redis.failures_before_error"),
    ("components: {RabbitMQ: {interval: 5s}}", "components.RabbitMQ"),
    ("thresholds: {Bad-Name: {x: 1}}", "not a component name"),
    ("components: {redis: {severities: {unreachable: fatal}}}", "components.redis.severities.unreachable"),
    ("components: {redis: {intervall: 5s}}", "unknown key"),
    ("thresholds: {redis: {memory: 150}}", "thresholds.redis.memory"),
    ("thresholds: {mqtt_broker: {round_trip_p95: soon}}", "thresholds.mqtt_broker.round_trip_p95"),
])
def test_bad_yaml_is_refused_naming_the_key(text: str, needle: str) -> None:
    """Invalid settings raise PolicyConfigError naming the offending key and why."""
    with pytest.raises(PolicyConfigError) as err:
        load_policy_text(InfrastructurePolicy, text, "infra.yaml")
    assert needle in str(err.value) and "infra.yaml" in str(err.value)


def test_a_component_without_a_registered_probe_is_refused() -> None:
    """Names are bounded by the policy model; which exist is the probe registry's word: a section
    for a component no probe is registered for (a typo) is named, and the shipped YAML has none."""
    policy = load_policy_text(InfrastructurePolicy, "components: {rabbitmq: {interval: 5s}}\n"
                              "thresholds: {rabbitmq: {depth: 10}}", "infra.yaml")
    assert unknown_components(policy) == ["rabbitmq"]
    assert policy.thresholds_for("rabbitmq") == {"depth": 10}
    assert unknown_components(POLICY) == []
    assert set(POLICY.components) == set(PROBES)


def test_override_directory_merges_over_defaults(tmp_path: Path) -> None:
    """An override file changes only the keys it sets; 1 s intervals are allowed."""
    (tmp_path / "infrastructure.yaml").write_text("components: {redis: {interval: 1s, timeout: 1s}}\n")
    policy = load_infrastructure_policy(tmp_path)
    assert policy.component("redis").interval == 1.0
    assert policy.component("redis").severities["memory_pressure"] == "warning"
    assert policy.component("emqx_cluster").interval == 30


# -- hysteresis ---------------------------------------------------------------------------------------

G, B, W, C = "good", "bad", "warn", "config"
STEP = {G: good(), B: bad(), W: bad("warning", "memory_pressure"), C: misconfigured()}


@pytest.mark.parametrize(("n", "m", "steps", "expected"), [
    (2, 1, [B], [None]),
    (2, 1, [B, B], [None, K.ERROR]),
    (2, 1, [B, G, B], [None, None, None]),
    (2, 1, [B, B, B, G], [None, K.ERROR, None, K.RECOVERED]),
    (1, 1, [B, G, G], [K.ERROR, K.RECOVERED, None]),
    (3, 2, [B, B, B, G, B, G, G], [None, None, K.ERROR, None, None, None, K.RECOVERED]),
    (2, 1, [W, W, B, B], [None, K.ERROR, K.ESCALATED, None]),
    (2, 1, [B, B, W], [None, K.ERROR, None]),
    (2, 1, [C, C, C], [K.MISCONFIGURED, None, None]),
    (2, 1, [C, G], [K.MISCONFIGURED, K.CONFIG_RESOLVED]),
    (2, 1, [C, B, B], [K.MISCONFIGURED, None, K.ERROR]),
    (2, 1, [B, C, B], [None, K.MISCONFIGURED, None]),
    (2, 1, [B, B, C, G], [None, K.ERROR, K.MISCONFIGURED, K.RECOVERED]),
    (2, 1, [B, B, C, B, G], [None, K.ERROR, K.MISCONFIGURED, None, K.RECOVERED]),
])
def test_hysteresis_table(n: int, m: int, steps: list[str], expected: list[TransitionKind | None]) -> None:
    """Errors after N bad checks in a row, recovery after M good ones, escalation on a worse
    severity, and a configuration error reported once as its own state, never as an outage."""
    tracker = ComponentTracker(config=config(n, m))
    got = [tracker.observe(STEP[s], float(i)) for i, s in enumerate(steps)]
    assert [t.kind if t else None for t in got] == expected


def test_outage_carries_start_downtime_and_one_correlation_id() -> None:
    """Error, escalation and recovery of one outage share a correlation id; downtime counts from the first bad check."""
    tracker = ComponentTracker(config=config(2, 1))
    assert tracker.observe(bad("warning", "memory_pressure"), 100.0) is None
    err = tracker.observe(bad("warning", "memory_pressure"), 130.0)
    esc = tracker.observe(bad("critical"), 160.0)
    rec = tracker.observe(good(), 190.0)
    assert err and esc and rec
    assert err.outage_since == 100.0 and err.severity == "warning" and esc.severity == "critical"
    assert err.correlation_id == esc.correlation_id == rec.correlation_id is not None
    assert rec.downtime_s == 90.0 and tracker.state.status is Status.HEALTHY
    tracker.observe(bad(), 200.0)
    again = tracker.observe(bad(), 230.0)
    assert again and again.correlation_id != err.correlation_id


def test_yaml_severity_overrides_the_probe() -> None:
    """A severities entry in the component's config replaces the probe's own severity."""
    tracker = ComponentTracker(config=config(1, 1, memory_pressure="critical"))
    t = tracker.observe(bad("warning", "memory_pressure"), 0.0)
    assert t and t.severity == "critical"


@given(st.lists(st.sampled_from([G, B, W, C]), max_size=40), st.integers(1, 4), st.integers(1, 3))
def test_transitions_alternate_and_need_n_bad_checks(steps: list[str], n: int, m: int) -> None:
    """For any run of results: ERROR and RECOVERED alternate (starting with ERROR), and ERROR comes
    only after N bad non-config checks in a row."""
    tracker = ComponentTracker(config=config(n, m))
    open_outage, bad_run = False, 0
    for i, s in enumerate(steps):
        bad_run = bad_run + 1 if s in (B, W) else (bad_run if s == C else 0)
        t = tracker.observe(STEP[s], float(i))
        if t is None:
            continue
        if t.kind is K.ERROR:
            assert not open_outage and bad_run >= n
            open_outage = True
        elif t.kind is K.RECOVERED:
            assert open_outage
            open_outage = False
        elif t.kind is K.ESCALATED:
            assert open_outage


# -- messages ------------------------------------------------------------------------------------------

SEED_KEYS = {"type", "clusterId", "component", "severity", "message", "impact", "details", "recommendations",
             "timestamp", "correlationId", "estimatedResolution", "escalationRequired"}


def test_error_message_for_a_broker_lists_topics() -> None:
    """A broker outage message has the seed's keys, affected topics with the cluster filled in, and escalation."""
    result = bad("critical", "node_stopped", component="emqx_cluster")
    msg = infrastructure_error_message(cluster_id="prod", result=result, policy=POLICY, now=1734258600.0,
                                       correlation_id="c-1")
    InfrastructureError.model_validate(msg)
    assert set(msg) >= SEED_KEYS and "affectedServices" not in msg
    assert msg["timestamp"] == "2024-12-15T10:30:00Z" and msg["escalationRequired"] is True
    assert "system/prod/health" in msg["affectedTopics"] and msg["impact"] == "possible_message_delays"
    assert msg["details"]["problems"][0]["code"] == "node_stopped"


def test_error_message_for_a_database_lists_services_and_dedupes_recommendations() -> None:
    """A database message names affected services, not topics; recommendations appear once each."""
    result = ProbeResult.build(component="postgresql_cluster", latency_ms=3.0, details={"targets": {}}, problems=[
        Problem(code="replica_not_streaming", severity="error", message="replica r1 is catchup"),
        Problem(code="replica_not_streaming", severity="error", message="replica r2 is catchup")])
    msg = infrastructure_error_message(cluster_id="prod", result=result, policy=POLICY, now=0.0,
                                       correlation_id="c-2", affected_services=["UserManagement"])
    InfrastructureError.model_validate(msg)
    assert msg["affectedServices"] == ["UserManagement"] and "affectedTopics" not in msg
    assert msg["severity"] == "error" and msg["escalationRequired"] is False
    assert msg["message"] == "replica r1 is catchup (and 1 more problem)"
    assert len(msg["recommendations"]) == len(set(msg["recommendations"])) == 1


def test_recovered_message_and_config_transitions() -> None:
    """Recovery builds a valid infrastructure_recovered; config transitions produce no broadcast."""
    msg = infrastructure_recovered_message(cluster_id="prod", component="redis", now=60.0, correlation_id="c",
                                           downtime_s=42.0)
    InfrastructureRecovered.model_validate(msg)
    assert msg["type"] == "infrastructure_recovered" and msg["downtimeSeconds"] == 42.0
    assert msg["message"] == "redis recovered after 42s"
    tracker = ComponentTracker(config=POLICY.component("redis"))
    t = tracker.observe(misconfigured(), 0.0)
    assert t and transition_message(t, cluster_id="prod", policy=POLICY, correlation_id="c") is None


# -- pure probe helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("15.49G", round(15.49 * 1024**3)), ("512.00M", 512 * 1024**2), ("1.50K", 1536), ("0", 0),
    ("812", 812), (0, 0), (1023, 1023),
])
def test_parse_emqx_memory(text: object, expected: int) -> None:
    """EMQX's kmg strings (binary units) and plain byte counts parse to bytes."""
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "12X", "G", "-1M", None, True, "1.2.3G"])
def test_parse_emqx_memory_refuses_junk(text: object) -> None:
    """Anything else is a ValueError, not a silent zero."""
    with pytest.raises(ValueError, match="EMQX memory"):
        parse_memory(text)


@given(st.floats(min_value=0, max_value=1023.99), st.sampled_from(["K", "M", "G"]))
def test_parse_emqx_memory_round_trips_two_decimals(x: float, unit: str) -> None:
    """A figure printed as EMQX does ("~.2f" + unit) parses back within rounding."""
    size = {"K": 1024, "M": 1024**2, "G": 1024**3}[unit]
    assert abs(parse_memory(f"{x:.2f}{unit}") - x * size) <= 0.005 * size + 1


def test_redis_info_replica_link_and_persistence() -> None:
    """A replica whose master link is down and a failed RDB save are errors."""
    info = {"role": "slave", "master_link_status": "down", "rdb_last_bgsave_status": "err",
            "used_memory": 10, "maxmemory": 0}
    details, problems = summarize_info(info, ping_ms=0.2, thresholds=POLICY.thresholds.redis, previous_evicted=None)
    assert {p.code: p.severity for p in problems} == {"master_link_down": "error", "persistence_failed": "error"}
    assert details["masterLinkStatus"] == "down" and details["memoryUsagePercent"] is None


def test_replication_rows_judged_as_the_seed() -> None:
    """A replica not streaming, and replay lag at 30 s, are problems; a missing replica too."""
    th = POLICY.thresholds.postgresql_cluster
    rows: list[dict[str, object]] = [{"applicationName": "r1", "state": "catchup", "replayLagSeconds": None},
            {"applicationName": "r2", "state": "streaming", "replayLagSeconds": 30.0},
            {"applicationName": "r3", "state": "streaming", "replayLagSeconds": 29.9}]
    problems = judge_target("p", rows, {"inRecovery": False, "connections": 170, "maxConnections": 200},
                            expected_replicas=3, thresholds=th)
    assert [p.code for p in problems] == ["replica_not_streaming", "replication_lag", "replicas_missing",
                                          "connections_high"]


def test_pod_status_restart_threshold_without_crashloop() -> None:
    """Restarts at the threshold mark a restart loop even before CrashLoopBackOff shows."""
    pod = {"status": {"phase": "Running", "containerStatuses": [
        {"ready": True, "restartCount": 5, "state": {"running": {}}, "lastState": {"terminated": {"reason": "Error"}}}]}}
    ps = pod_status("Svc", [pod], restart_threshold=5)
    assert (ps.running, ps.ready, ps.total, ps.reason, ps.failure_reason) == (1, 1, 1, "pod_restart_loop", "Error")


def test_mosquitto_sys_snapshot_parses() -> None:
    """The recorded mosquitto $SYS snapshot parses into numbers under camelCase keys."""
    snap = orjson.loads((FIXTURES / "emqx" / "mosquitto_sys_snapshot.json").read_bytes())
    d = parse_mosquitto_sys(snap)
    assert d["version"] == "mosquitto version 2.0.20" and d["uptimeSeconds"] == 86413
    assert (d["clientsConnected"], d["messagesDropped"], d["heapCurrent"], d["heapMaximum"]) == (53, 0, 1873216, 2411744)
    assert d["messagesReceivedPerMin"] == 612.48


@pytest.mark.parametrize(("samples", "expected"), [([], None), ([5.0], 5.0), (list(range(1, 21)), 19),
                                                   (list(range(1, 101)), 95)])
def test_p95_nearest_rank(samples: list[float], expected: float | None) -> None:
    """p95 is the nearest-rank 95th percentile of the window."""
    assert p95([float(s) for s in samples]) == expected
