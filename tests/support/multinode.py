"""Run operate on a simulated multi-node Ray cluster (``ray.cluster_utils.Cluster``) in its own
process, so the test session's Ray is untouched. Prints one JSON line with what it saw.

``python -m tests.support.multinode BROKER_URL WORKDIR [node-loss|spread]`` — on the test session's
broker, BROKER_URL without credentials and ``SessionBroker.export()`` in the environment, with the
``SERVICES`` (node-loss) or ``SPREAD_REAL`` (spread) principals already added (``tests.support.broker``).

node-loss (default): a head and two worker nodes; operate (monitors placed one per node by the
supervisor, its other actors spread with the SPREAD strategy); the ``SERVICES`` monitors per node;
probe services whose internal errors open their breakers; the worker node hosting one of those
monitors is removed; Ray restarts the monitor on a surviving node and it comes back
with its breaker still open (restored from the store).

spread: operate with the ``SPREAD_SERVICES`` (60) configured, one monitor actor each; where those
monitors run; the ``SPREAD_REAL`` services get a real instance (a process each), are seen online by
their monitors, are killed (SIGKILL) together, and the time from each kill to its
``service_unavailable`` on the broker is measured. The other services have no instance (a real
process each would not fit two cores beside 60 monitors): they are monitored, and must stay quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from tests.support.broker import HARNESS, as_principal, attach_from_env
from tests.support.operations import ServiceProcess, operations

# Three monitors, one per node (the supervisor places them; Ray's SPREAD alone once put all three on
# the head node), so there is always a worker-node monitor whose node the test can remove.
SERVICES = ("Payments", "Ledger", "Billing")
SPREAD_SERVICES = tuple(f"Svc{i:02d}" for i in range(60))
SPREAD_REAL = SPREAD_SERVICES[:6]


def actor_nodes(address: str) -> dict[str, str]:
    """The live named actors of the cluster at ``address`` and their nodes. The address is explicit:
    without it the state API picks "the latest" of the Ray instances on this machine, which in the
    test suite may be the session's own Ray rather than this cluster."""
    alive = list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000)
    return {a.name: a.node_id for a in alive if a.name and a.node_id}


async def scenario(cluster: Cluster, broker: str, workdir: Path) -> dict[str, Any]:
    from adapters.mqtt.bus import MqttBus, MqttConfig
    from sdk import ServiceClient
    from sdk.errors import ServiceCallError

    out: dict[str, Any] = {}
    names = SERVICES
    async with operations(broker, workdir, services=names) as ops:
        bus = MqttBus(config=MqttConfig.from_url(broker))
        await bus.start()
        await bus.wait_connected(10)
        client = ServiceClient(bus)
        await client.start()
        procs = [ServiceProcess(broker, ops.cluster, n).start() for n in names]
        try:
            for name in names:
                for _ in range(6):
                    with contextlib.suppress(ServiceCallError):
                        await client.call(name, "fail", {}, timeout=5)
            await ops.watcher.wait(
                lambda w: {e.get("service") for e in w.on("/circuit-breaker") if e.get("to") == "open"} >= set(names),
                30, "every breaker open")
            nodes = actor_nodes(cluster.address)
            ours = {k: n for k, n in nodes.items() if k.startswith("sfa-")}
            out["actor_nodes"] = len(set(ours.values()))
            head = cluster.head_node.node_id if cluster.head_node is not None else None
            monitors = {k: n for k, n in ours.items() if k.startswith(f"sfa-monitor-{ops.cluster}-")}
            out["monitors_per_node"] = sorted(Counter(monitors.values()).values())
            on_workers = sorted(k for k in monitors if monitors[k] != head)
            out["monitors_on_workers"] = len(on_workers)
            if on_workers:
                monitor = on_workers[0]
                victim = ours[monitor]
                node = next(n for n in cluster.worker_nodes if n.node_id == victim)
                cluster.remove_node(node)
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline and actor_nodes(cluster.address).get(monitor) in (None, victim):
                    await asyncio.sleep(0.5)
                out["monitor_moved"] = actor_nodes(cluster.address).get(monitor) not in (None, victim)
                handle = ray.get_actor(monitor, namespace="sfa-ops")
                state = await handle.state.remote()
                out["restored_breaker"] = state["breaker"]["state"]
                seen = len(ops.watcher.on("/health"))
                # A supervisor lost with the node restarts all its actors first (seconds each on 2 cores).
                await ops.watcher.wait(lambda w: len(w.on("/health")) > seen, 90, "health after node loss")
                out["health_after_node_loss"] = True
        finally:
            for p in procs:
                p.stop()
            await client.close()
            await bus.stop()
    return out


async def spread_scenario(cluster: Cluster, broker: str, workdir: Path) -> dict[str, Any]:
    from adapters.mqtt.bus import MqttBus, MqttConfig
    from sdk import ServiceClient

    out: dict[str, Any] = {}
    begun = time.monotonic()
    async with operations(broker, workdir, services=SPREAD_SERVICES) as ops:
        prefix = f"sfa-monitor-{ops.cluster}-"
        deadline = time.monotonic() + 120
        monitors: dict[str, str] = {}
        while time.monotonic() < deadline:
            monitors = {k[len(prefix):]: n for k, n in actor_nodes(cluster.address).items() if k.startswith(prefix)}
            if len(monitors) == len(SPREAD_SERVICES):
                break
            await asyncio.sleep(0.5)
        out["monitors"] = len(monitors)
        out["monitors_per_node"] = sorted(Counter(monitors.values()).values())
        out["monitors_up_s"] = round(time.monotonic() - begun, 1)
        out["real_monitor_nodes"] = len({monitors.get(n) for n in SPREAD_REAL} - {None})
        bus = MqttBus(config=MqttConfig.from_url(broker))
        await bus.start()
        await bus.wait_connected(10)
        client = ServiceClient(bus)
        await client.start()
        procs = [ServiceProcess(broker, ops.cluster, n).start() for n in SPREAD_REAL]
        try:
            for name in SPREAD_REAL:  # answered, and seen online by its own monitor
                assert (await client.call(name, "ok", {}, timeout=10))["ok"] is True
                handle = ray.get_actor(f"{prefix}{name}", namespace="sfa-ops")
                deadline = time.monotonic() + 20
                while not any((await handle.state.remote()).get("instances", {}).values()):
                    assert time.monotonic() < deadline, f"{name}'s monitor never saw its instance online"
                    await asyncio.sleep(0.1)
            killed: dict[str, float] = {}
            for name, proc in zip(SPREAD_REAL, procs, strict=True):
                killed[name] = time.time()
                proc.kill()

            def detected(w: Any) -> dict[str, float]:
                return {d["service"]: t for t, _, d in w.messages
                        if isinstance(d, dict) and d.get("type") == "service_unavailable"}

            with contextlib.suppress(AssertionError):  # the assertions are the test's, on what is reported
                await ops.watcher.wait(lambda w: set(detected(w)) >= set(SPREAD_REAL), 15, "every crash detected")
            found = detected(ops.watcher)
            out["unavailable"] = sorted(found)
            out["detect_s"] = {n: round(found[n] - killed[n], 3) for n in SPREAD_REAL if n in found}
        finally:
            for p in procs:
                p.stop()
            await client.close()
            await bus.stop()
    out["total_s"] = round(time.monotonic() - begun, 1)
    return out


def main() -> None:
    attach_from_env()  # on the session's broker: operate as sfa-ops, services as theirs
    broker, workdir = as_principal(sys.argv[1], HARNESS), Path(sys.argv[2])
    run = spread_scenario if sys.argv[3:4] == ["spread"] else scenario
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="sfa-ops", log_to_driver=False)
    try:
        result = asyncio.run(run(cluster, broker, workdir))
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
