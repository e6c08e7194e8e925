"""Intake that cannot be turned against anyone, on a real mosquitto with operate running: calls
naming a forbidden reply topic or a list/object id are counted and never answered, and they cost
the real service none of its findings or answers; calls to made-up service names get at most
``max_discovered_services`` monitors, and idle ones retire."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import ray

from actors.monitor import STATE_NAMESPACE
from adapters.store import open_store
from protocol import parse_model
from protocol.rpc import ErrorResponse
from protocol.system import ServiceUnavailable, SystemHealth
from sdk import ServiceClient
from tests.support.mqtt import Collector, unique_prefix
from tests.support.operations import ServiceProcess, operations

pytestmark = pytest.mark.usefixtures("ray_session")


def supervisor(cluster: str) -> Any:
    return ray.get_actor(f"sfa-supervisor-{cluster}", namespace="sfa-ops")


async def test_hostile_calls_are_counted_never_answered_and_cost_no_finding(
        broker_url: str, tmp_path: Path, client: ServiceClient, procs: list[ServiceProcess]) -> None:
    """Beside a real service that crashes with pending calls, calls whose replyTo is the actions
    topic, holds + / # / NUL or is a $-topic, and calls with list/object ids: sfa-ops publishes
    nothing on those topics and counts them (observed.rejected / malformed); the real service's
    service_unavailable, breaker event and retained state are all published and each of its
    pending calls is answered -32503."""
    async with operations(broker_url, tmp_path, policies={
            "observation.yaml": "call_timeout: 30s\ntick: 100ms\n"}) as ops:
        svc = ServiceProcess(broker_url, ops.cluster, "Inventory")
        procs.append(svc.start())
        assert await client.call("Inventory", "ok", {}, timeout=5) == {"ok": True, "service": "Inventory"}
        await ops.watcher.wait(lambda w: any("Inventory" in h.get("services", {}) for h in w.on("/health")), 10,
                               "Inventory in the health summary")
        prefix = unique_prefix("intake")
        actions = f"system/{ops.cluster}/security/actions/active"
        sinks = {actions: Collector(), f"{prefix}/#": Collector(), "$SYS/x": Collector()}
        for flt, sink in sinks.items():
            await ops.bus.subscribe(flt, sink, qos=1)
        bad_topics = [actions, f"{prefix}/+/b", f"{prefix}/#", f"{prefix}/x\x00y", "$SYS/x"]
        calls = Collector()
        await ops.bus.subscribe("service/Inventory", calls, qos=1)
        pending = [asyncio.create_task(client.call_raw("Inventory", "hang", {}, timeout=20)) for _ in range(4)]
        for i, topic in enumerate(bad_topics):
            ops.bus.publish_nowait("service/Inventory", {"jsonrpc": "2.0", "id": f"bad-{i}", "method": "hang",
                                                         "replyTo": topic}, qos=1)
        for i, bad_id in enumerate(([1, 2], {"a": 1})):
            ops.bus.publish_nowait("service/Inventory", {"jsonrpc": "2.0", "id": bad_id, "method": "hang",
                                                         "replyTo": f"session/intake{i}/response"}, qos=1)
        await ops.bus.flush(5)
        await ops.watcher.wait(
            lambda w: [h for h in w.on("/health")
                       if h["observed"].get("rejected", 0) >= 5 and h["observed"]["malformed"] >= 2], 10,
            "5 rejected and 2 malformed calls counted")
        # Every call, hostile and real, has been routed by the broker (to the service and the observer
        # too) before the crash: the hostile calls sit in the same window as the real pending ones.
        await calls.wait_for(len(pending) + len(bad_topics) + 2)
        svc.kill()
        answers = await asyncio.wait_for(asyncio.gather(*pending), 10)
        for doc in answers:
            err = parse_model(ErrorResponse, doc).error
            assert err.code == -32503 and err.message == "Service Temporarily Unavailable"
        found = await ops.watcher.wait(lambda w: w.of_type("service_unavailable"), 5, "service_unavailable")
        assert parse_model(ServiceUnavailable, found[-1]).service == "Inventory"
        await ops.watcher.wait(
            lambda w: [e for e in w.on("/circuit-breaker") if e.get("service") == "Inventory" and e["to"] == "open"],
            5, "breaker open event")
        await ops.watcher.wait(lambda w: [s for s in w.on("/circuit-breaker/Inventory") if s["state"] == "open"], 5,
                               "retained breaker state")
        h = await ops.watcher.wait(lambda w: [x for x in w.on("/health")
                                              if x["services"].get("Inventory", {}).get("status") == "down"], 5,
                                   "Inventory down in the health summary")
        observed = parse_model(SystemHealth, h[-1]).observed
        assert observed.answer_failed == 0 and observed.rejected >= 5 and observed.malformed >= 2
        await ops.bus.flush(5)
        for flt, sink in sinks.items():
            # The actions topic carries sfa-ops' own retained list of active actions; never an answer.
            answers = [m for m in sink.messages if b'"jsonrpc"' in m.payload or b"bad-" in m.payload]
            others = [m for m in sink.messages if flt != actions and m not in answers]
            assert answers == [] and others == [], f"sfa-ops published on {flt}: {sink.messages}"


async def test_made_up_service_names_get_bounded_monitors_that_retire(broker_url: str, tmp_path: Path) -> None:
    """Calls to 300 made-up names with max_discovered_services 5: at most 5 monitors, 295 calls
    counted as unknownServices, nothing persisted for the others; once idle they retire (actors
    stopped, saved state deleted) and new names are admitted again."""
    policies = {"observation.yaml": "call_timeout: 1s\ntick: 100ms\ndiscovered_idle_retire: 3s\n"}
    async with operations(broker_url, tmp_path, policies=policies,
                          extra={"max_discovered_services": 5}) as ops:
        names = [f"Fake{i}" for i in range(300)]
        for i, name in enumerate(names):
            ops.bus.publish_nowait(f"service/{name}", orjson.dumps(
                {"jsonrpc": "2.0", "id": i, "method": "m", "replyTo": f"session/flood{i}/response"}), qos=1)
        await ops.bus.flush(10)
        await ops.watcher.wait(lambda w: [h for h in w.on("/health")
                                          if h["observed"].get("unknownServices") == 295], 15,
                               "295 calls counted as unknown services")
        sup = supervisor(ops.cluster)
        monitors = (await sup.status.remote())["monitors"]
        assert len(monitors) <= 5 and set(monitors) <= set(names[:5])
        alive = [n for n in names if _actor_exists(f"sfa-monitor-{ops.cluster}-{n}")]
        assert len(alive) <= 5
        store = open_store(ops.store_url)
        await store.open()
        try:
            assert set(await store.state_list(STATE_NAMESPACE)) <= set(names[:5])
            deadline = time.monotonic() + 20
            while (await sup.status.remote())["monitors"] and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert (await sup.status.remote())["monitors"] == [], "idle traffic-only services did not retire"
            assert await store.state_list(STATE_NAMESPACE) == {}
        finally:
            await store.close()
        deadline = time.monotonic() + 10
        while any(_actor_exists(f"sfa-monitor-{ops.cluster}-{n}") for n in names[:5]):
            assert time.monotonic() < deadline, "retired monitors are still alive"
            await asyncio.sleep(0.2)
        ops.bus.publish_nowait("service/Later", orjson.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "m", "replyTo": "session/later/response"}), qos=1)
        deadline = time.monotonic() + 10
        while "Later" not in (await sup.status.remote())["monitors"]:
            assert time.monotonic() < deadline, "a new name was not admitted after the others retired"
            await asyncio.sleep(0.1)
        assert ops.health() is not None and ops.health()["observed"]["unknownServices"] == 295


def _actor_exists(name: str) -> bool:
    try:
        ray.get_actor(name, namespace="sfa-ops")
    except ValueError:
        return False
    return True
