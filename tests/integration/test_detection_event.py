"""A lost instance is an event (``policies.health.outage``): real mosquitto (with its ACL), local Ray, operate.

The observer publishes ``service_unavailable`` as the Last Will of a service's last online instance
arrives, without waiting for its tick; the monitor's own conclusion on the next tick is not
published a second time, and ``service_recovered`` still follows when an instance comes back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import ray

from adapters.mqtt.signing import ensure_key_pair, public_key_path
from protocol import parse_model
from protocol.rpc import ErrorResponse
from protocol.system import ServiceRecovered, ServiceUnavailable
from sdk import ServiceClient
from sdk.trust import SystemTrust
from tests.support.mqtt import Collector
from tests.support.operations import ServiceProcess, Watcher, operations

pytestmark = pytest.mark.usefixtures("ray_session")


async def observer_counters(cluster: str, until: Any, timeout: float = 15.0) -> dict[str, int]:
    """Observer 0's counters once ``until(counters)`` holds."""
    handle = ray.get_actor(f"sfa-observer-{cluster}-0", namespace="sfa-ops")
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        counters: dict[str, int] = await handle.counters.remote()
        if until(counters):
            return counters
        assert asyncio.get_running_loop().time() < deadline, f"observer counters never matched: {counters}"
        await asyncio.sleep(0.05)


def service_status(w: Watcher, service: str) -> list[str]:
    """The service's status in each health summary, in arrival order."""
    return [h["services"][service]["status"] for h in w.on("/health") if service in h.get("services", {})]


async def test_last_instance_lost_is_published_without_a_tick(broker_url: str, tmp_path: Path,
                                                              client: ServiceClient,
                                                              procs: list[ServiceProcess]) -> None:
    """With a one-hour observer tick (the only tick runs at start, before the instance exists), no
    monitor result can reach the supervisor during the test: the instance's SIGKILL still yields
    exactly one service_unavailable, signed by operate's key and parsed by its model, and every
    pending call answered -32503 — only the event path can have produced them."""
    key = tmp_path / "signing.key"
    ensure_key_pair(key)
    trust = SystemTrust.from_files(public_key_path(key))
    errors = Collector()
    async with operations(broker_url, tmp_path, services=("Inventory",),
                          policies={"observation.yaml": "call_timeout: 60s\ntick: 1h\n"},
                          extra={"signing_key": str(key)}) as ops:
        await ops.bus.subscribe(f"system/{ops.cluster}/errors", errors, qos=1)
        svc = ServiceProcess(broker_url, ops.cluster, "Inventory")
        procs.append(svc.start())
        await observer_counters(ops.cluster, lambda c: c["presence"] >= 1)  # the instance seen online
        pending = [asyncio.create_task(client.call_raw("Inventory", "hang", {}, timeout=30)) for _ in range(5)]
        await observer_counters(ops.cluster, lambda c: c["pending"] == 5)
        assert errors.messages == []
        svc.kill()
        answers = await asyncio.wait_for(asyncio.gather(*pending), 15)
        for doc in answers:
            err = parse_model(ErrorResponse, doc).error
            assert err.code == -32503 and err.data is not None and err.data.error_type == "ServiceUnavailable"
        [msg] = await errors.wait_for(1, 15)
        down = parse_model(ServiceUnavailable, msg.payload)
        assert down.service == "Inventory" and down.reason == "no_running_pods"
        assert down.details.running_pods == 0 and down.details.total_pods == 1
        assert trust.check(msg) == "trusted"
        assert "down" not in service_status(ops.watcher, "Inventory")  # no monitor result: no tick ran
        assert len(errors.messages) == 1


async def test_one_service_unavailable_per_outage_and_recovery_follows(broker_url: str, tmp_path: Path,
                                                                      procs: list[ServiceProcess]) -> None:
    """Two outages at a 100 ms tick: each kill gives one service_unavailable; once the health summary
    shows the service down (the supervisor has handled the monitor's own conclusion, which it would
    have published before that summary) there is still one; the restart gives one service_recovered."""
    async with operations(broker_url, tmp_path, services=("Inventory",),
                          policies={"observation.yaml": "call_timeout: 30s\ntick: 100ms\n"}) as ops:
        w = ops.watcher
        svc = ServiceProcess(broker_url, ops.cluster, "Inventory")
        procs.append(svc.start())
        await w.wait(lambda w: service_status(w, "Inventory")[-1:] == ["healthy"], 30, "Inventory healthy")
        for outage in (1, 2):
            svc.kill()
            await w.wait(lambda w, n=outage: len(w.of_type("service_unavailable")) >= n, 10, "service_unavailable")
            await w.wait(lambda w: service_status(w, "Inventory")[-1:] == ["down"], 10, "Inventory down")
            svc = ServiceProcess(broker_url, ops.cluster, "Inventory")
            procs.append(svc.start())
            await w.wait(lambda w, n=outage: len(w.of_type("service_recovered")) >= n, 10, "service_recovered")
            await w.wait(lambda w: service_status(w, "Inventory")[-1:] == ["healthy"], 10, "Inventory healthy")
        kinds = [d["type"] for d in w.on("/errors") if d.get("type") in ("service_unavailable", "service_recovered")]
        assert kinds == ["service_unavailable", "service_recovered"] * 2, kinds
        downs = [parse_model(ServiceUnavailable, d) for d in w.of_type("service_unavailable")]
        ups = [parse_model(ServiceRecovered, d) for d in w.of_type("service_recovered")]
        assert len({d.correlation_id for d in downs}) == 2
        assert all(u.previous_status == "down" for u in ups)
