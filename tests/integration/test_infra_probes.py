"""Infrastructure probes against real servers: Redis, PostgreSQL (with a real streaming replica)
and mosquitto, started by adapters/processes. EMQX's management API and the Kubernetes API
cannot run here: those tests use tests/support/replay_http.py replaying recorded response shapes
(tests/fixtures/emqx, tests/fixtures/kubernetes) and say so in their docstrings."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import orjson
import pytest
import redis.asyncio as aioredis

from adapters.probes.emqx import API_KEY_SETTING, EmqxClient, EmqxProbe, parse_memory
from adapters.probes.kubernetes_probe import KubernetesProbe, api_client
from adapters.probes.mqtt_probe import BrokerProbe
from adapters.probes.postgres_probe import PostgresProbe, PostgresTarget
from adapters.probes.redis_probe import RedisProbe
from adapters.runtime.processes import (
    ChildService,
    Mosquitto,
    _as_postgres_user,
    _postgres_bindir,
    free_port,
    init_postgres_datadir,
    postgres_workdir,
    start_postgres_datadir,
    start_redis,
)
from policies.infrastructure.checks import (
    ComponentTracker,
    TransitionKind,
    load_infrastructure_policy,
    transition_message,
)
from protocol.system import InfrastructureError
from tests.support.mqtt import running_bus, wait_until
from tests.support.replay_http import FIXTURES, ReplayServer, Reply, basic_auth

POLICY = load_infrastructure_policy()
T = POLICY.thresholds
TIMEOUT = 1.0


def codes(result: object) -> set[str]:
    return {p.code for p in result.problems}  # type: ignore[attr-defined]


# -- Redis ----------------------------------------------------------------------------------------


async def test_redis_up_reports_info_details(redis_server: ChildService) -> None:
    """A running Redis gives an ok result with PING latency and INFO replication/memory/persistence."""
    probe = RedisProbe(url=redis_server.url, timeout_s=TIMEOUT, thresholds=T.redis)
    try:
        result = await probe.check()
    finally:
        await probe.close()
    assert result.ok, result
    d = result.details
    assert d["role"] == "master" and d["connectedSlaves"] == 0
    assert d["usedMemory"] > 0 and d["maxMemory"] == 0 and d["memoryUsagePercent"] is None
    assert d["rdbLastBgsaveStatus"] == "ok" and d["aofLastWriteStatus"] == "ok"
    assert 0 < d["pingMs"] < 1000 and result.latency_ms >= d["pingMs"]


async def test_redis_killed_fails_within_timeout() -> None:
    """Killing Redis turns the next check into a failed one, reported within the timeout."""
    svc = start_redis()
    probe = RedisProbe(url=svc.url, timeout_s=TIMEOUT, thresholds=T.redis)
    try:
        assert (await probe.check()).ok
        svc.kill()
        started = time.monotonic()
        result = await probe.check()
        assert time.monotonic() - started <= TIMEOUT + 0.5
    finally:
        await probe.close()
        svc.stop()
    assert not result.ok and result.error and not result.config_error
    assert codes(result) <= {"unreachable", "timeout"} and codes(result)


async def test_redis_memory_pressure_is_a_warning() -> None:
    """A Redis filled up to its maxmemory (allkeys-lru) reports memory_pressure and evictions as warnings."""
    svc = start_redis(extra=["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"])
    probe = RedisProbe(url=svc.url, timeout_s=TIMEOUT, thresholds=T.redis)
    filler = aioredis.Redis.from_url(svc.url)
    try:
        first = await probe.check()
        assert first.ok and first.details["maxMemory"] == 2 * 1024 * 1024
        async with filler.pipeline(transaction=False) as pipe:
            for i in range(4000):
                pipe.set(f"fill:{i}", b"x" * 1024)
            await pipe.execute()
        result = await probe.check()
    finally:
        await filler.aclose()
        await probe.close()
        svc.stop()
    assert not result.ok
    assert {"memory_pressure", "evictions"} <= codes(result)
    assert {p.severity for p in result.problems} == {"warning"}
    assert result.details["memoryUsagePercent"] >= T.redis.memory
    assert result.details["evictedSinceLastCheck"] > 0


# -- PostgreSQL -----------------------------------------------------------------------------------


async def test_postgres_up_is_ok(postgres_server: ChildService) -> None:
    """A running PostgreSQL gives an ok result with query latency and connections vs max_connections."""
    probe = PostgresProbe.from_dsns([postgres_server.url], timeout_s=TIMEOUT + 1, thresholds=T.postgresql_cluster)
    result = await probe.check()
    assert result.ok, result
    [(label, target)] = result.details["targets"].items()
    assert label == f"127.0.0.1:{postgres_server.port}/postgres" and "@" not in label
    assert target["role"] == "primary" and target["replicas"] == []
    assert target["maxConnections"] == 200 and 1 <= target["connections"] < 200
    assert target["queryLatencyMs"] > 0


async def test_postgres_long_transaction_is_a_warning(postgres_server: ChildService) -> None:
    """A transaction open longer than the threshold is reported as long_transactions (a warning)."""
    import asyncpg

    from policies.infrastructure.thresholds import PostgresThresholds

    conn = await asyncpg.connect(postgres_server.url)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT txid_current()")
        await asyncio.sleep(0.3)  # the transaction must grow older than the 0.2 s threshold
        probe = PostgresProbe.from_dsns([postgres_server.url], timeout_s=2.0,
                                        thresholds=PostgresThresholds(long_transaction=0.2))
        result = await probe.check()
        await tx.rollback()
    finally:
        await conn.close()
    assert "long_transactions" in codes(result) and not result.ok


@pytest.fixture(scope="module")
def pg_pair() -> Iterator[tuple[ChildService, ChildService, Path]]:
    """A real primary with a streaming replica made by ``pg_basebackup -R`` on loopback."""
    workdir = postgres_workdir("sfa-pgrepl-")
    datadir = init_postgres_datadir(workdir)
    primary = start_postgres_datadir(datadir, workdir, settings={"wal_level": "replica", "max_wal_senders": "5"})
    replica_dir = workdir / "replica"
    subprocess.run(
        [f"{_postgres_bindir()}/pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
         "-D", str(replica_dir), "-R", "-X", "stream", "--no-sync", "-c", "fast"],
        check=True, capture_output=True, **_as_postgres_user(),  # type: ignore[call-overload]
    )
    replica = start_postgres_datadir(replica_dir, workdir, port=free_port(), settings={"hot_standby": "on"})
    try:
        yield primary, replica, workdir
    finally:
        replica.terminate()
        primary.stop()


async def _wait_replication(dsn: str, streaming: int, timeout: float = 15.0) -> None:
    import asyncpg

    deadline = time.monotonic() + timeout
    while True:
        conn = await asyncpg.connect(dsn)
        try:
            n = await conn.fetchval("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
        finally:
            await conn.close()
        if n == streaming:
            return
        assert time.monotonic() < deadline, f"{n} replicas streaming, waited for {streaming}"
        await asyncio.sleep(0.1)


async def test_postgres_replication_then_replica_and_primary_stopped(
    pg_pair: tuple[ChildService, ChildService, Path],
) -> None:
    """Primary+replica: healthy replication; replica stopped → replicas_missing on the primary; primary
    stopped too → failed check within the timeout."""
    primary, replica, _ = pg_pair
    await _wait_replication(primary.url, 1)
    targets = [PostgresTarget(dsn=primary.url, name="primary", expected_replicas=1),
               PostgresTarget(dsn=replica.url, name="replica")]
    probe = PostgresProbe(targets=targets, timeout_s=2.0, thresholds=T.postgresql_cluster)

    healthy = await probe.check()
    assert healthy.ok, healthy
    prim, rep = healthy.details["targets"]["primary"], healthy.details["targets"]["replica"]
    assert prim["role"] == "primary" and rep["role"] == "replica" and rep["inRecovery"]
    [r] = prim["replicas"]
    assert r["state"] == "streaming" and r["clientAddr"] == "127.0.0.1/32"

    replica.terminate()
    await _wait_replication(primary.url, 0)
    degraded = await probe.check()
    assert not degraded.ok
    assert codes(degraded) == {"replicas_missing", "target_unreachable"}
    assert degraded.details["reachableTargets"] == 1 and degraded.details["targets"]["primary"]["replicas"] == []

    primary.terminate()
    started = time.monotonic()
    down = await probe.check()
    assert time.monotonic() - started <= 2.5
    assert not down.ok and codes(down) == {"unreachable"} and down.error


# -- MQTT broker ------------------------------------------------------------------------------------


async def test_broker_round_trips_p95_and_sys_stats(broker_url: str) -> None:
    """Round trips through mosquitto are ok, p95 is computed over them, and $SYS stats are parsed."""
    async with running_bus(broker_url) as bus:
        probe = BrokerProbe(bus=bus, timeout_s=TIMEOUT, thresholds=T.mqtt_broker)
        await probe.start()
        # $SYS values are retained and republished every second (sys_interval 1) when changed: wait
        # for one that counts our own connection
        await wait_until(lambda: probe.sys.get("$SYS/broker/clients/connected", "0") != "0", timeout=3.0)
        results = [await probe.check() for _ in range(5)]
        await probe.close()
    assert all(r.ok for r in results), results
    last = results[-1].details
    assert last["samples"] == 5 and last["p95Ms"] == round(max(probe.latencies_ms), 3) > 0
    assert last["p95Ms"] < T.mqtt_broker.round_trip_p95 * 1000
    assert last["probeTopic"].startswith("sfa-ops/probe/")
    stats = last["broker"]
    assert stats["version"].startswith("mosquitto version")
    assert stats["clientsConnected"] >= 1 and isinstance(stats["uptimeSeconds"], int)
    assert isinstance(stats["messagesReceived"], int)


async def test_broker_killed_fails_within_timeout_then_recovers() -> None:
    """Killing the broker fails the next round trip within the timeout; after a restart checks pass again."""
    broker = Mosquitto()
    svc = broker.start()
    try:
        async with running_bus(broker.url, config={"reconnect_max_s": 0.2}) as bus:
            probe = BrokerProbe(bus=bus, timeout_s=TIMEOUT, thresholds=T.mqtt_broker, sys_stats=False)
            await probe.start()
            assert (await probe.check()).ok
            svc.kill()
            started = time.monotonic()
            down = await probe.check()
            assert time.monotonic() - started <= TIMEOUT + 0.3
            assert not down.ok and codes(down) & {"unreachable", "timeout"}
            svc = broker.restart()
            await bus.wait_connected(5.0)
            up = await probe.check()
            assert up.ok, up
    finally:
        svc.stop()


# -- EMQX (replayed) --------------------------------------------------------------------------------

KEY, SECRET = "sfa-ops-key", "s3cret"


def emqx_routes(**over: Reply) -> dict[str, Reply]:
    routes = {
        "/api/v5/nodes": Reply.file("emqx/emqx_nodes.json"),
        "/api/v5/nodes/emqx@10.0.0.11/stats": Reply.file("emqx/emqx_node_stats.json"),
        "/api/v5/nodes/emqx@10.0.0.12/stats": Reply.file("emqx/emqx_node_stats.json"),
        "/api/v5/metrics": Reply.file("emqx/emqx_metrics.json"),
        "/api/v5/alarms": Reply.file("emqx/emqx_alarms.json"),
        "/api/v5/status": Reply.file("emqx/emqx_status_v5_8.json"),
    }
    return routes | over


def emqx_server(routes: dict[str, Reply]) -> ReplayServer:
    return ReplayServer(routes, expected_auth=basic_auth(KEY, SECRET),
                        unauthorized=Reply.file("emqx/emqx_401_bad_key.json", status=401),
                        open_paths=frozenset({"/api/v5/status"}))


def emqx_probe(url: str, *, secret: str = SECRET, timeout: float = TIMEOUT) -> EmqxProbe:
    return EmqxProbe(client=EmqxClient(base_url=url, api_key=KEY, api_secret=secret, timeout=timeout),
                     timeout_s=timeout, thresholds=T.emqx_cluster)


async def test_emqx_stopped_node_and_alarms() -> None:
    """Replayed EMQX API (no EMQX here): a stopped node and two active alarms give a degraded,
    seed-shaped result; node stats are fetched for running nodes only, with basic auth."""
    with emqx_server(emqx_routes()).running() as srv:
        probe = emqx_probe(srv.url)
        try:
            result = await probe.check()
        finally:
            await probe.close()
    assert not result.ok and not result.config_error
    d = result.details
    assert (d["runningNodes"], d["totalNodes"], d["disconnectedNode"], d["clusterState"]) == \
        (2, 3, "emqx@10.0.0.13", "degraded")
    assert d["messagesDropped"] == 20931 + 11093 and d["droppedSinceLastCheck"] is None
    assert [a["name"] for a in d["activeAlarms"]] == ["high_system_memory_usage", "high_cpu_usage"]
    node1 = d["nodeDetails"][0]
    assert node1["memoryUsed"] == parse_memory("6.12G") and node1["subscriptionCount"] == 1650
    assert codes(result) == {"node_stopped", "alarm_active"}
    paths = [r.path for r in srv.requests]
    assert "/api/v5/nodes/emqx@10.0.0.11/stats" in paths and not any("10.0.0.13" in p for p in paths)
    assert all(r.headers.get("Authorization") == basic_auth(KEY, SECRET) for r in srv.requests)
    assert any(r.query == "activated=true" for r in srv.requests if r.path == "/api/v5/alarms")


async def test_emqx_healthy_cluster_and_dropped_growth() -> None:
    """Replayed EMQX API (no EMQX here): all nodes running and no alarms is ok; growth of
    messages.dropped between checks over the threshold becomes a warning."""
    nodes = orjson.loads((FIXTURES / "emqx/emqx_nodes.json").read_bytes())[:2]
    metrics = orjson.loads((FIXTURES / "emqx/emqx_metrics.json").read_bytes())
    routes = emqx_routes(**{"/api/v5/nodes": Reply(body=orjson.dumps(nodes)),
                            "/api/v5/alarms": Reply.file("emqx/emqx_alarms_empty.json")})
    with emqx_server(routes).running() as srv:
        probe = emqx_probe(srv.url)
        first = await probe.check()
        metrics[0]["messages.dropped"] += 5000
        srv.routes["/api/v5/metrics"] = Reply(body=orjson.dumps(metrics))
        second = await probe.check()
        await probe.close()
    assert first.ok and first.details["clusterState"] == "healthy" and first.details["disconnectedNode"] is None
    assert not second.ok and codes(second) == {"messages_dropped"} and second.details["droppedSinceLastCheck"] == 5000


async def test_emqx_bad_key_is_a_configuration_error() -> None:
    """Replayed EMQX API (no EMQX here): a 401 is a configuration error naming the API key setting,
    not a broker failure — the tracker reports it once as misconfigured, never as an outage."""
    with emqx_server(emqx_routes()).running() as srv:
        probe = emqx_probe(srv.url, secret="wrong")
        result = await probe.check()
        await probe.close()
    assert result.config_error and not result.ok
    assert API_KEY_SETTING in (result.error or "") and "BAD_API_KEY_OR_SECRET" in (result.error or "")
    tracker = ComponentTracker(config=POLICY.component("emqx_cluster"))
    kinds = [tracker.observe(result, float(t)) for t in range(3)]
    assert [k.kind if k else None for k in kinds] == [TransitionKind.MISCONFIGURED, None, None]


async def test_emqx_hang_and_refused_are_failed_checks() -> None:
    """Replayed EMQX API (no EMQX here): an API that hangs fails at the timeout; a closed port fails at once."""
    with emqx_server(emqx_routes(**{"/api/v5/nodes": Reply.file("emqx/emqx_nodes.json", delay_s=3)})).running() as srv:
        probe = emqx_probe(srv.url, timeout=0.5)
        started = time.monotonic()
        hung = await probe.check()
        elapsed = time.monotonic() - started
        await probe.close()
    assert elapsed < 1.0 and not hung.ok and codes(hung) == {"timeout"}
    probe = emqx_probe(f"http://127.0.0.1:{free_port()}")
    refused = await probe.check()
    await probe.close()
    assert not refused.ok and codes(refused) == {"unreachable"} and not refused.config_error


async def test_emqx_outage_message_matches_seed_format() -> None:
    """Replayed EMQX API (no EMQX here): two failed checks give one critical infrastructure_error in the
    seed's format, with affected topics, recommendations and escalation."""
    with emqx_server(emqx_routes()).running() as srv:
        probe = emqx_probe(srv.url)
        results = [await probe.check(), await probe.check()]
        await probe.close()
    tracker = ComponentTracker(config=POLICY.component("emqx_cluster"))
    assert tracker.observe(results[0], 100.0) is None
    transition = tracker.observe(results[1], 130.0)
    assert transition is not None and transition.kind is TransitionKind.ERROR
    msg = transition_message(transition, cluster_id="production-us-east", policy=POLICY, correlation_id="unused")
    assert msg is not None
    InfrastructureError.model_validate(msg)
    assert msg["severity"] == "critical" and msg["escalationRequired"] is True
    assert msg["message"].startswith("EMQX node emqx@10.0.0.13 disconnected from cluster")
    assert "system/production-us-east/health" in msg["affectedTopics"]
    assert msg["details"]["runningNodes"] == 2 and msg["estimatedResolution"] == "5-15 minutes"
    assert "Consider manual failover if the node does not recover within 10 minutes" in msg["recommendations"]


# -- Kubernetes (replayed) --------------------------------------------------------------------------


def k8s_server(nodes: str = "kubernetes/nodes.json") -> ReplayServer:
    return ReplayServer({"/api/v1/nodes": Reply.file(nodes),
                         "/api/v1/namespaces/platform/pods": Reply.file("kubernetes/pods.json")})


async def test_kubernetes_nodes_and_pod_status() -> None:
    """Replayed Kubernetes API (no API server here; v1 NodeList/PodList shapes): a NotReady node and
    memory pressure are problems; pods give PodStatus with CrashLoopBackOff → pod_restart_loop and
    OOMKilled → container_oom_killed, selected by ``app in (...)`` in the namespace."""
    with k8s_server().running() as srv:
        probe = KubernetesProbe(api=api_client(host=srv.url), timeout_s=TIMEOUT, thresholds=T.kubernetes_cluster,
                                namespace="platform", services=["UserManagement", "OrderManagement", "Billing"])
        snap = await probe.snapshot()
        await probe.close()
    r = snap.result
    assert not r.ok and codes(r) == {"node_not_ready", "node_pressure"}
    assert (r.details["readyNodes"], r.details["totalNodes"]) == (2, 3)
    um, om, billing = snap.pods["UserManagement"], snap.pods["OrderManagement"], snap.pods["Billing"]
    assert (um.running, um.ready, um.total, um.restarts) == (2, 0, 3, 13)
    assert (um.reason, um.failure_reason) == ("pod_restart_loop", "container_oom_killed")
    assert (om.running, om.ready, om.total, om.restarts, om.reason, om.failure_reason) == (2, 2, 2, 1, None, "Error")
    assert billing.total == 0
    assert r.details["services"]["UserManagement"]["failureReason"] == "container_oom_killed"
    [pods_req] = [q for q in srv.requests if q.path == "/api/v1/namespaces/platform/pods"]
    assert parse_qs(pods_req.query)["labelSelector"] == ["app in (UserManagement,OrderManagement,Billing)"]


async def test_kubernetes_healthy_and_unreachable() -> None:
    """Replayed Kubernetes API (no API server here): Ready nodes without pressure are ok; an API server
    that is not listening is a failed check (severity error, not critical)."""
    with k8s_server("kubernetes/nodes_healthy.json").running() as srv:
        probe = KubernetesProbe(api=api_client(host=srv.url), timeout_s=TIMEOUT, thresholds=T.kubernetes_cluster)
        ok = await probe.check()
        await probe.close()
    assert ok.ok and ok.details["readyNodes"] == 1
    probe = KubernetesProbe(api=api_client(host=f"http://127.0.0.1:{free_port()}"), timeout_s=TIMEOUT,
                            thresholds=T.kubernetes_cluster)
    down = await probe.check()
    await probe.close()
    assert not down.ok and codes(down) == {"unreachable"} and down.problems[0].severity == "error"


METRICS = "/apis/metrics.k8s.io/v1beta1/namespaces/platform/pods"
DEPLOYMENTS = "/apis/apps/v1/namespaces/platform/deployments"


def k8s_workload_server(*, nodes: str, metrics: str | None, deployments: str) -> ReplayServer:
    routes = {"/api/v1/nodes": Reply.file(nodes), "/api/v1/namespaces/platform/pods": Reply.file("kubernetes/pods.json"),
              DEPLOYMENTS: Reply.file(deployments)}
    if metrics is not None:
        routes[METRICS] = Reply.file(metrics)
    else:  # as an API server without metrics-server answers
        routes[METRICS] = Reply(status=404, body=b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                                                 b'"message":"the server could not find the requested resource",'
                                                 b'"reason":"NotFound","details":{},"code":404}')
    return ReplayServer(routes)


async def test_kubernetes_pod_over_limit_and_stuck_rollout() -> None:
    """Replayed Kubernetes API (no API server or metrics-server here; PodMetricsList and apps/v1
    DeploymentList shapes, tests/fixtures/kubernetes/README.md): a container at 96 % of its memory
    limit and a rollout past its progress deadline are problems of the kubernetes_cluster result,
    and reach the tier-3 infrastructure_error built through its protocol model."""
    services = ["UserManagement", "OrderManagement", "Billing"]
    with k8s_workload_server(nodes="kubernetes/nodes_healthy.json", metrics="kubernetes/pod_metrics.json",
                             deployments="kubernetes/deployments.json").running() as srv:
        probe = KubernetesProbe(api=api_client(host=srv.url), timeout_s=TIMEOUT, thresholds=T.kubernetes_cluster,
                                namespace="platform", services=services)
        results = [await probe.check(), await probe.check()]
        await probe.close()
    r = results[0]
    assert not r.ok and codes(r) == {"pod_memory_near_limit", "rollout_stuck", "deployment_unavailable",
                                     "rollout_in_progress"}
    resources, deployments = r.details["podResources"], r.details["deployments"]
    assert resources["available"] and resources["overThresholdCount"] == 1
    [over] = resources["overThreshold"]
    assert (over["pod"], over["container"], over["resource"]) == ("ordermanagement-5b6c7d8e9-abcde", "app", "memory")
    assert over["fractionOfLimit"] == pytest.approx(245 / 256, abs=1e-4)
    um = next(d for d in deployments["deployments"] if d["service"] == "UserManagement")
    assert um["rollout"] == "stuck" and (um["desiredReplicas"], um["availableReplicas"]) == (3, 0)
    metrics_req = next(q for q in srv.requests if q.path == METRICS)
    assert parse_qs(metrics_req.query)["labelSelector"] == [f"app in ({','.join(services)})"]
    assert any(q.path == DEPLOYMENTS and "limit" in parse_qs(q.query) for q in srv.requests)

    tracker = ComponentTracker(config=POLICY.component("kubernetes_cluster"))
    assert tracker.observe(results[0], 100.0) is None
    transition = tracker.observe(results[1], 130.0)
    assert transition is not None and transition.kind is TransitionKind.ERROR
    msg = transition_message(transition, cluster_id="production-us-east", policy=POLICY, correlation_id="unused",
                             affected_services=services)
    assert msg is not None
    parsed = InfrastructureError.model_validate(msg)
    assert parsed.component == "kubernetes_cluster" and msg["severity"] == "error"
    assert msg["message"].startswith("Deployment usermanagement rollout exceeded its progress deadline")
    problems = {p["code"]: p for p in msg["details"]["problems"]}
    assert problems["pod_memory_near_limit"]["severity"] == "warning"
    assert problems["rollout_in_progress"]["severity"] == "info"
    assert msg["details"]["podResources"]["overThreshold"][0]["pod"] == "ordermanagement-5b6c7d8e9-abcde"
    assert any("rollout undo" in rec for rec in msg["recommendations"])


async def test_kubernetes_without_metrics_server() -> None:
    """Replayed Kubernetes API (no API server here): the metrics API answering 404, as without
    metrics-server, leaves pod resources unknown with the reason; the check still stands."""
    with k8s_workload_server(nodes="kubernetes/nodes_healthy.json", metrics=None,
                             deployments="kubernetes/deployments_healthy.json").running() as srv:
        probe = KubernetesProbe(api=api_client(host=srv.url), timeout_s=TIMEOUT, thresholds=T.kubernetes_cluster,
                                namespace="platform", services=["OrderManagement"])
        r = await probe.check()
        await probe.close()
    assert r.ok and r.error is None and codes(r) == set(), r
    assert r.details["podResources"]["available"] is False
    assert "404" in r.details["podResources"]["reason"] and "metrics-server" in r.details["podResources"]["reason"]
    assert r.details["deployments"]["byRollout"] == {"complete": 1}


async def test_kubernetes_workloads_healthy() -> None:
    """Replayed Kubernetes API (no API server or metrics-server here): containers under their limits
    and complete rollouts give an ok result with the measurements in its details."""
    with k8s_workload_server(nodes="kubernetes/nodes_healthy.json", metrics="kubernetes/pod_metrics_healthy.json",
                             deployments="kubernetes/deployments_healthy.json").running() as srv:
        probe = KubernetesProbe(api=api_client(host=srv.url), timeout_s=TIMEOUT, thresholds=T.kubernetes_cluster,
                                namespace="platform", services=["OrderManagement"])
        r = await probe.check()
        await probe.close()
    assert r.ok and r.problems == (), r
    resources = r.details["podResources"]
    assert resources["available"] and resources["judged"] == 6 and resources["overThresholdCount"] == 0
    assert (resources["cpuThresholdFraction"], resources["memoryThresholdFraction"]) == (0.8, 0.9)
    [om] = r.details["deployments"]["deployments"]
    assert (om["desiredReplicas"], om["updatedReplicas"], om["readyReplicas"], om["availableReplicas"]) == (2, 2, 2, 2)
    assert om["rollout"] == "complete" and om["progressing"] == "True (NewReplicaSetAvailable)"


def test_kubernetes_rejects_unsafe_service_names() -> None:
    """A service name that could alter the label selector is refused before any request."""
    from protocol.exceptions import ProtocolError

    with pytest.raises(ProtocolError):
        KubernetesProbe(api=api_client(host="http://127.0.0.1:1"), timeout_s=1.0, thresholds=T.kubernetes_cluster,
                        services=["a,b"])
