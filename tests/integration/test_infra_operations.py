"""Tier 3 under a running operate (drivers.operate in-test): infrastructure checker actors against
real Redis, PostgreSQL and mosquitto servers this file starts and stops itself, with 1 s checks
and an error after 2 failed ones. EMQX's management API and the Kubernetes API cannot run here:
that test replays their recorded response shapes with tests/support/replay_http.py."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
import ray

from adapters.runtime.processes import (
    ChildService,
    _spawn,
    find_binary,
    free_port,
    init_postgres_datadir,
    postgres_workdir,
    start_postgres_datadir,
    start_redis,
    wait_for_port,
)
from protocol.system import InfrastructureError
from tests.support.operations import operations
from tests.support.replay_http import ReplayServer, Reply, basic_auth

pytestmark = pytest.mark.usefixtures("ray_session")

INFRA_FAST = """
defaults: {interval: 1s, timeout: 1s, failures_before_error: 2, successes_before_recovery: 1}
components:
  mqtt_broker: {interval: 1s, timeout: 1s}
service_dependencies:
  UserManagement: [postgresql_cluster, redis]
  Billing: [postgresql_cluster]
"""
POLICIES = {"infrastructure.yaml": INFRA_FAST}
DETECT_S = 8.0  # 2 checks of 1 s, plus slack for a loaded 2-core CI machine


def infra(docs: list[dict[str, Any]], kind: str, component: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("type") == kind and d.get("component") == component]


def infrastructure(health: dict[str, Any] | None) -> dict[str, Any]:
    return dict((health or {}).get("infrastructure") or {})


# -- Redis and PostgreSQL ----------------------------------------------------------------------------


class Postgres:
    """A PostgreSQL whose data directory outlives a stop, so it can start again on the same port."""

    def __init__(self) -> None:
        self.workdir = postgres_workdir("sfa-infra-pg-")
        self.datadir = init_postgres_datadir(self.workdir)
        self.service = start_postgres_datadir(self.datadir, self.workdir)
        self.url, self.port = self.service.url, self.service.port

    def restart(self) -> None:
        self.service = start_postgres_datadir(self.datadir, self.workdir, port=self.port)

    def stop(self) -> None:
        self.service.terminate()
        shutil.rmtree(self.workdir, ignore_errors=True)


async def test_redis_and_postgres_outages_are_announced_and_recovered(broker_url: str, tmp_path: Path) -> None:
    """Stopping a real Redis, then a real PostgreSQL, gives infrastructure_error (critical, so also on
    /emergency; dependants listed as affected; the alert carries the runbook with the host filled in)
    and starting it again on the same port gives infrastructure_recovered with the same correlation id;
    a checker killed mid-outage is restarted by Ray, resumes the outage and still announces its recovery."""
    redis_svc = start_redis()
    redis_servers = [redis_svc]
    pg = Postgres()
    try:
        extra = {"check_redis": [redis_svc.url], "check_postgres": [pg.url]}
        async with operations(broker_url, tmp_path, policies=POLICIES, extra=extra) as ops:
            w = ops.watcher
            await w.wait(lambda w: {"mqtt_broker", "redis", "postgresql_cluster"} <= {
                c for c, e in infrastructure(ops.health()).items() if e.get("status") == "healthy"},
                30, "every component healthy in the health summary")
            entry = infrastructure(ops.health())["redis"]
            assert entry["ok"] and entry["details"]["role"] == "master" and entry["lastCheck"]

            redis_svc.kill()
            [err] = await w.wait(lambda w: infra(w.on("/errors"), "infrastructure_error", "redis"),
                                 DETECT_S, "infrastructure_error for redis")
            InfrastructureError.model_validate(err)
            assert err["severity"] == "critical" and err["escalationRequired"] is True
            assert err["affectedServices"] == ["UserManagement"]
            await w.wait(lambda w: infra(w.on("/emergency"), "infrastructure_error", "redis"),
                         3, "the critical redis error on /emergency")
            await w.wait(lambda w: infrastructure(ops.health())["redis"]["status"] == "error", 3,
                         "redis in error in the health summary")

            # the checker crashes mid-outage: Ray restarts it and it resumes the open outage
            checker = ray.get_actor(f"sfa-infra-{ops.cluster}-redis", namespace="sfa-ops")
            ray.kill(checker, no_restart=False)
            await w.wait(lambda w: "checkerRestartedAt" in infrastructure(ops.health()).get("redis", {}),
                         30, "the restarted redis checker reporting")
            redis_svc = start_redis(port=redis_svc.port)
            redis_servers.append(redis_svc)
            [rec] = await w.wait(lambda w: infra(w.on("/errors"), "infrastructure_recovered", "redis"),
                                 DETECT_S, "infrastructure_recovered for redis")
            assert rec["correlationId"] == err["correlationId"] and rec["downtimeSeconds"] > 0
            assert len(infra(w.on("/errors"), "infrastructure_error", "redis")) == 1

            pg.service.terminate()
            [pg_err] = await w.wait(
                lambda w: infra(w.on("/errors"), "infrastructure_error", "postgresql_cluster"),
                DETECT_S, "infrastructure_error for postgresql_cluster")
            assert pg_err["severity"] == "critical"
            assert pg_err["affectedServices"] == ["Billing", "UserManagement"]
            pg.restart()
            [pg_rec] = await w.wait(
                lambda w: infra(w.on("/errors"), "infrastructure_recovered", "postgresql_cluster"),
                DETECT_S, "infrastructure_recovered for postgresql_cluster")
            assert pg_rec["correlationId"] == pg_err["correlationId"]

            # the critical alert went through the alert manager with its runbook rendered safely
            [alert, *_] = await w.wait(lambda w: [
                a for a in w.on("/alerts") if a.get("labels", {}).get("alertname") == "InfrastructureError"
                and a["labels"].get("component") == "redis" and a.get("status") == "firing"],
                5, "the redis InfrastructureError alert")
            assert alert["labels"]["severity"] == "critical" and alert["labels"]["cluster"] == ops.cluster
            assert alert["annotations"]["affectedServices"] == "UserManagement"
            assert alert["runbook"][0]["runbook"] == "redis"
            assert alert["runbook"][0]["command"] == ["redis-cli", "-h", "127.0.0.1", "ping"]
            assert alert["runbook"][0]["status"] == "ready"
    finally:
        for svc in redis_servers:
            svc.stop()
        pg.stop()


# -- the broker itself -------------------------------------------------------------------------------


class PersistentMosquitto:
    """A mosquitto that keeps sessions across a restart (``persistence true``), so a watcher with a
    persistent session receives what operate publishes right after the restart, however the two
    reconnects race."""

    def __init__(self) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="sfa-infra-mosquitto-"))
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.service: ChildService | None = None

    def start(self) -> ChildService:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                        f"persistence_location {self.workdir}/\nset_tcp_nodelay true\nlog_dest stdout\n")
        log = self.workdir / "mosquitto.log"
        proc = _spawn([find_binary("mosquitto"), "-c", str(conf)], log)
        wait_for_port(self.port, 10, proc)
        self.service = ChildService("mosquitto", self.port, self.url, proc, self.workdir, log)
        return self.service

    def stop(self) -> None:
        if self.service is not None:
            self.service.terminate()
        shutil.rmtree(self.workdir, ignore_errors=True)


class SessionWatcher:
    """paho (MQTT 3.1.1, clean_session=False, QoS 1): what a client with a persistent session sees."""

    def __init__(self, url_port: int, topic: str) -> None:
        self.docs: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"watch-{uuid.uuid4().hex[:8]}",
                                  clean_session=False, protocol=paho.MQTTv311)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", url_port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with contextlib.suppress(orjson.JSONDecodeError):
            doc = orjson.loads(msg.payload)
            if isinstance(doc, dict):
                with self._lock:
                    self.docs.append((time.time(), msg.topic, doc))

    def on(self, suffix: str) -> list[dict[str, Any]]:
        with self._lock:
            return [d for _, t, d in self.docs if t.endswith(suffix)]

    async def wait(self, predicate: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = predicate()
            if got:
                return got
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; got {len(self.docs)} messages")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def test_broker_restart_is_announced_and_operate_carries_on(tmp_path: Path) -> None:
    """Restarting operate's own mosquitto gives an infrastructure_error for mqtt_broker (critical, also on
    /emergency) and then infrastructure_recovered, both delivered once operate has reconnected, and the
    retained health summary keeps being republished with the broker healthy again."""
    broker = PersistentMosquitto()
    broker.start()
    watcher: SessionWatcher | None = None
    try:
        async with operations(broker.url, tmp_path, policies=POLICIES) as ops:
            watcher = SessionWatcher(broker.port, f"system/{ops.cluster}/#")
            w = watcher
            await w.wait(lambda: infrastructure((w.on("/health") or [None])[-1]).get("mqtt_broker", {})
                         .get("status") == "healthy", 20, "mqtt_broker healthy in the health summary")
            assert broker.service is not None
            broker.service.terminate()  # SIGTERM: mosquitto saves its sessions
            # the broker stays down until its checker has seen enough failed checks to call it an error
            checker = ray.get_actor(f"sfa-infra-{ops.cluster}-mqtt_broker", namespace="sfa-ops")
            deadline = time.monotonic() + 30
            while (await checker.status.remote())["state"] != "error":
                assert time.monotonic() < deadline, "the broker checker never reported the outage"
                await asyncio.sleep(0.2)
            restarted_at = time.time()
            broker.start()
            [err] = await w.wait(lambda: infra(w.on("/errors"), "infrastructure_error", "mqtt_broker"),
                                 20, "infrastructure_error for mqtt_broker")
            assert err["severity"] == "critical" and "system/" + ops.cluster + "/health" in err["affectedTopics"]
            await w.wait(lambda: infra(w.on("/emergency"), "infrastructure_error", "mqtt_broker"), 5,
                         "the critical broker error on /emergency")
            [rec] = await w.wait(lambda: infra(w.on("/errors"), "infrastructure_recovered", "mqtt_broker"),
                                 DETECT_S, "infrastructure_recovered for mqtt_broker")
            assert rec["correlationId"] == err["correlationId"]
            # operate carries on: fresh health summaries with the broker healthy after the restart
            await w.wait(lambda: any(
                t > restarted_at and infrastructure(d).get("mqtt_broker", {}).get("status") == "healthy"
                for t, topic, d in list(w.docs) if topic.endswith("/health")), 15,
                "a health summary after the restart showing the broker healthy")
    finally:
        if watcher is not None:
            watcher.close()
        broker.stop()


# -- EMQX and Kubernetes (replayed) -------------------------------------------------------------------

KEY, SECRET = "sfa-ops-key", "s3cret"


def emqx_replay() -> ReplayServer:
    """EMQX 5 API with one of three nodes stopped and two alarms (tests/fixtures/emqx)."""
    routes = {
        "/api/v5/nodes": Reply.file("emqx/emqx_nodes.json"),
        "/api/v5/nodes/emqx@10.0.0.11/stats": Reply.file("emqx/emqx_node_stats.json"),
        "/api/v5/nodes/emqx@10.0.0.12/stats": Reply.file("emqx/emqx_node_stats.json"),
        "/api/v5/metrics": Reply.file("emqx/emqx_metrics.json"),
        "/api/v5/alarms": Reply.file("emqx/emqx_alarms.json"),
    }
    return ReplayServer(routes, expected_auth=basic_auth(KEY, SECRET),
                        unauthorized=Reply.file("emqx/emqx_401_bad_key.json", status=401))


def kubernetes_replay() -> ReplayServer:
    """Kubernetes v1 NodeList (one node NotReady), PodList (UserManagement in CrashLoopBackOff),
    PodMetricsList and apps/v1 DeploymentList (UserManagement's rollout past its deadline)."""
    return ReplayServer({"/api/v1/nodes": Reply.file("kubernetes/nodes.json"),
                         "/api/v1/namespaces/platform/pods": Reply.file("kubernetes/pods.json"),
                         "/apis/metrics.k8s.io/v1beta1/namespaces/platform/pods":
                             Reply.file("kubernetes/pod_metrics.json"),
                         "/apis/apps/v1/namespaces/platform/deployments": Reply.file("kubernetes/deployments.json")})


async def test_emqx_stopped_node_and_kubernetes_crash_loop(broker_url: str, tmp_path: Path) -> None:
    """Replayed EMQX and Kubernetes APIs (neither can run here): a stopped EMQX node gives a critical
    emqx_cluster error naming the node (the broker round trip still runs against the real broker); a
    CrashLoopBackOff service's pod status reaches its monitor, which declares it unavailable with
    pod_restart_loop; a NotReady node and a Deployment past its progress deadline give a
    kubernetes_cluster error."""
    with emqx_replay().running() as emqx, kubernetes_replay().running() as k8s:
        extra = {"emqx_api": emqx.url, "emqx_api_key": KEY, "emqx_api_secret": SECRET,
                 "kubernetes": True, "kube_api": k8s.url, "kube_namespace": "platform"}
        async with operations(broker_url, tmp_path, policies=POLICIES, services=("UserManagement",),
                              extra=extra) as ops:
            w = ops.watcher
            [err] = await w.wait(lambda w: infra(w.on("/errors"), "infrastructure_error", "emqx_cluster"),
                                 20, "infrastructure_error for emqx_cluster")
            assert err["severity"] == "critical"
            assert (err["details"]["runningNodes"], err["details"]["totalNodes"]) == (2, 3)
            assert err["details"]["disconnectedNode"] == "emqx@10.0.0.13"
            assert err["details"]["roundTripMs"] > 0  # the real broker's round trip, merged in
            [down] = await w.wait(lambda w: [d for d in w.of_type("service_unavailable")
                                             if d.get("service") == "UserManagement"],
                                  20, "UserManagement unavailable from its pod status")
            assert "pod_restart_loop" in (down["reason"], down["details"]["failureReason"])
            assert (down["details"]["runningPods"], down["details"]["totalPods"]) == (2, 3)
            [k8s_err] = await w.wait(
                lambda w: infra(w.on("/errors"), "infrastructure_error", "kubernetes_cluster"),
                10, "infrastructure_error for kubernetes_cluster")
            assert k8s_err["severity"] == "error" and {"node_not_ready", "rollout_stuck"} <= {
                p["code"] for p in k8s_err["details"]["problems"]}
            stuck = [d for d in k8s_err["details"]["deployments"]["deployments"] if d["service"] == "UserManagement"]
            assert [d["rollout"] for d in stuck] == ["stuck"]
            sections = infrastructure(ops.health())
            assert {"emqx_cluster", "kubernetes_cluster"} <= set(sections) and "mqtt_broker" not in sections
        assert any(r.path == "/api/v1/namespaces/platform/pods" for r in k8s.requests)
