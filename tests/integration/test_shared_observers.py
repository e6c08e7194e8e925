"""Two observers behind MQTT 5 shared subscriptions (real mosquitto, the session's local Ray): each
call and response reaches one observer, halves are forwarded to the reply topic's owner, and
every pair still meets there; a call nobody answers still times out."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import ray

from adapters.mqtt.bus import MqttBus
from policies.observation.sharing import owner_of
from sdk import ServiceClient, ServiceTimeoutException
from tests.support.operations import ServiceProcess, operations

pytestmark = pytest.mark.usefixtures("ray_session")


def observer_counters(cluster: str, count: int) -> list[dict[str, Any]]:
    names = {a["name"]: a["namespace"] for a in ray.util.list_named_actors(all_namespaces=True)}
    out: list[dict[str, Any]] = []
    for i in range(count):
        name = f"sfa-observer-{cluster}-{i}"
        got: Any = ray.get(ray.get_actor(name, namespace=names[name]).counters.remote(), timeout=30)
        out.append(got)
    return out


async def test_two_observers_correlate_split_pairs(broker_url: str, tmp_path: Path, client: ServiceClient,
                                                   procs: list[ServiceProcess]) -> None:
    """20 rounds of calls from callers whose reply topics are owned by both observers: every response is
    correlated (halves forwarded between observers), latency recorded, no false timeout, nothing
    unmatched; 3 calls the service never answers time out, exactly 3."""
    async with operations(broker_url, tmp_path, observers=2, policies={
            "observation.yaml": "call_timeout: 2s\ntick: 100ms\nforward_every: 10ms\n"}) as ops:
        svc = ServiceProcess(broker_url, ops.cluster, "Inventory")
        procs.append(svc.start())
        bus: MqttBus = client.bus
        callers = [client]
        # Both owners, and an odd number of callers: the broker's round-robin over the group cannot
        # keep handing each caller's messages to its owner.
        while {owner_of(c.reply_topic, 2) for c in callers} != {0, 1} or len(callers) % 2 == 0:
            extra = ServiceClient(bus)
            await extra.start()
            callers.append(extra)
        try:
            for round_ in range(20):
                got = await asyncio.gather(*(c.call("Inventory", "ok", {}, timeout=5) for c in callers))
                assert all(g == {"ok": True, "service": "Inventory"} for g in got), round_
            ok_calls = 20 * len(callers)
            hung = [asyncio.create_task(callers[i % len(callers)].call("Inventory", "hang", {}, timeout=0.5))
                    for i in range(3)]
            for t in hung:
                with pytest.raises(ServiceTimeoutException):
                    await t
            h = await ops.watcher.wait(
                lambda w: [x for x in w.on("/health") if x["observed"]["timeouts"] >= 3
                           and x["observed"]["responses"] >= ok_calls
                           and x["services"].get("Inventory", {}).get("p95Ms") is not None], 30,
                "3 timeouts, every response and Inventory's latency in the health summary")
            observed = h[-1]["observed"]
            assert observed["calls"] == ok_calls + 3
            assert observed["responses"] == ok_calls and observed["timeouts"] == 3
            assert observed["malformed"] == 0 and observed["dropped"] == 0
            p95 = h[-1]["services"]["Inventory"]["p95Ms"]
            assert p95 is not None and 0 < p95 < 2000
            counters = await asyncio.to_thread(observer_counters, ops.cluster, 2)
            assert all(c["calls"] > 0 for c in counters), counters  # each owns some pairs
            assert sum(c["forwarded"] for c in counters) > 0, repr(counters)
            assert sum(c["unmatchedResponses"] for c in counters) == 0, counters
            assert sum(c["forwardDropped"] for c in counters) == 0, counters
        finally:
            for c in callers[1:]:
                await c.close()
