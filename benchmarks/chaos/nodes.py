"""``benchmarks.chaos.nodes`` — removal of a worker node of a simulated 3-node Ray cluster under
traffic, then a scripted service fault; per trial: findings lost, state restored, duplicates
published, time to recover.

``python -m benchmarks.chaos.nodes --trials N [--seed S] [--sigkill] [--json PATH]``

A head and two worker nodes (``ray.cluster_utils.Cluster``, one CPU each, as
tests/e2e/test_ray_cluster.py) and one operations job on a private mosquitto. Each trial has
services of its own, each a real process: ``Orders<n>`` under steady traffic (a call every 50 ms)
and four ``Ledger<n><X>`` whose breakers are opened (and notified) first. After a random 0-3 s the
worker node hosting most of the trial's monitors is removed (``Cluster.remove_node``: its raylet and
every worker process on it stopped, SIGTERM then SIGKILL as the e2e test; ``--sigkill``: SIGKILL at
once, a machine lost). A new node joins after each trial, so every trial starts on three nodes.

Recovered: every sfa-ops actor that was on the node answers whole from a surviving node. Then the
fault: 3 calls pending on ``Orders<n>``, its only instance killed. Lost: its ``service_unavailable``
not published, or a pending call not answered -32503. Restored: every opened breaker still open in
its monitor, the supervisor, the observer and the health summary, and the health (status, breaker)
of every service whose monitor was on the node as that of a ledger whose monitor stayed (same
history), or as before the removal when none stayed. Duplicates: the finding, a
breaker's ``open`` transition or its CircuitBreakerOpen notification published again. Targets: 0
lost, 100 % restored, recovery within the call timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from typing import Any

import ray
from ray.cluster_utils import Cluster

from adapters.runtime.processes import start_mosquitto
from benchmarks.chaos.actors import chaos_job, failed_trial, print_trial, report
from protocol import parse_model
from protocol.rpc import ErrorResponse
from sdk import ServiceClient
from sdk.errors import ServiceException
from tests.support.actor_chaos import (
    CALL_TIMEOUT_S,
    Trial,
    _async,
    _notified,
    _observer_breaker,
    _unavailable_after,
    _wait,
    pid_and_whole,
)
from tests.support.chaos import SteadyCaller
from tests.support.http_receiver import HttpReceiver
from tests.support.multinode import actor_nodes
from tests.support.operations import Operations, ServiceProcess

KIND = "node removal (1 of 3)"
LEDGERS = "ABCD"
RECOVERY_WAIT_S = 120.0
"""How long a trial waits for the lost actors (a node's loss is seen by Ray's health checks)."""


def services(n: int) -> tuple[str, list[str]]:
    return f"Orders{n}", [f"Ledger{n}{x}" for x in LEDGERS]


def _opened(ops: Operations, service: str, since: float = 0.0) -> int:
    return len([d for t, topic, d in ops.watcher.messages if t >= since and topic.endswith("/circuit-breaker")
                and isinstance(d, dict) and d.get("service") == service and d.get("to") == "open"])


def _health_view(doc: dict[str, Any], service: str) -> tuple[Any, Any]:
    entry = (doc.get("services") or {}).get(service) or {}
    return entry.get("status"), entry.get("breaker")


async def _open_breakers(ops: Operations, client: ServiceClient, hook: HttpReceiver, ledgers: list[str]) -> None:
    for led in ledgers:
        for _ in range(6):
            with contextlib.suppress(ServiceException):
                await client.call(led, "fail", {}, timeout=5)
    await ops.watcher.wait(lambda w: all(_opened(ops, s) for s in ledgers), 20, "every breaker open")
    await hook.wait_until(lambda _: all(_notified(hook, "CircuitBreakerOpen", s) for s in ledgers),
                          path="/hook", timeout=30, what="every CircuitBreakerOpen notified")


async def node_trial(cluster: Cluster, ops: Operations, client: ServiceClient, hook: HttpReceiver, n: int,
                     delay: float, sigkill: bool) -> Trial:
    trial = Trial(KIND)
    orders, ledgers = services(n)
    procs = {s: ServiceProcess(ops.broker_url, ops.cluster, s) for s in (orders, *ledgers)}
    caller: SteadyCaller | None = None
    try:
        for p in procs.values():
            p.start()
        await ops.watcher.wait(lambda w: set(procs) <= set((ops.health() or {}).get("services", {})), 60,
                               "the trial's services in the health summary")
        await _open_breakers(ops, client, hook, ledgers)
        caller = SteadyCaller(ops.broker_url, orders)
        await caller.start()
        await caller.wait_answered(20, 30)
        await asyncio.sleep(delay)  # the random moment in the traffic
        placed = await asyncio.to_thread(actor_nodes, cluster.address)
        prefix = f"sfa-monitor-{ops.cluster}-"
        workers = {node.node_id: node for node in cluster.worker_nodes}
        victim = max(workers, key=lambda nid: (sum(placed.get(prefix + s) == nid for s in procs),
                                               sum(v == nid for k, v in placed.items() if k.startswith("sfa-"))))
        lost = sorted(k for k, v in placed.items() if v == victim and k.startswith("sfa-"))
        moved = [s for s in procs if placed.get(prefix + s) == victim]
        before = {s: _health_view(ops.health() or {}, s) for s in moved}
        trial.detail.update(actors_on_node=lost, monitors_on_node=moved, answered_before=caller.answered)
        removed = time.time()
        await asyncio.to_thread(cluster.remove_node, workers[victim], not sigkill)

        whole_after: dict[str, float] = {}  # each lost actor: removal -> answering whole on another node

        async def whole_elsewhere() -> bool:
            now = await asyncio.to_thread(actor_nodes, cluster.address)
            for a in lost:
                if a not in whole_after and now.get(a) not in (None, victim) and (await pid_and_whole(a))[1]:
                    whole_after[a] = round(time.time() - removed, 2)
            return len(whole_after) == len(lost)

        if await _wait(whole_elsewhere, RECOVERY_WAIT_S):
            trial.recover_s = time.time() - removed
        trial.detail["whole_after_s"] = {a.removeprefix("sfa-"): t for a, t in whole_after.items()}
        back = time.time()
        trial.detail["traffic_during_loss"] = {"answered": caller.answered - trial.detail["answered_before"],
                                               "errors": len(caller.errors)}
        await _check_state(ops, ledgers, before, back, trial)
        # The fault: calls pending on Orders, then its only instance is killed.
        pending = [asyncio.create_task(client.call_raw(orders, "hang", {}, timeout=CALL_TIMEOUT_S + 5))
                   for _ in range(3)]
        await client.call(orders, "ok", {}, timeout=5)  # sent after the hangs: they reached the broker
        await caller.stop()
        caller = None
        fault_at = time.time()
        procs[orders].kill()
        trial.lost += 0 if await _wait(_async(lambda: _unavailable_after(ops, orders, fault_at)), 20) else 1
        answers = await asyncio.gather(*pending, return_exceptions=True)
        unanswered = sum(0 if isinstance(d, dict) and "error" in d
                         and parse_model(ErrorResponse, d).error.code == -32503 else 1 for d in answers)
        trial.lost += unanswered
        trial.detail["pending_unanswered"] = unanswered
        trial.duplicates += max(0, len(_unavailable_after(ops, orders, fault_at)) - 1)
        for led in ledgers:
            trial.duplicates += _opened(ops, led, removed) + max(0, len(_notified(hook, "CircuitBreakerOpen", led)) - 1)
        # Not lost, not duplicated, but false: a ledger (breaker open, never called again) announced healthy.
        trial.detail["recovered_published"] = {led: len([d for t, _, d in ops.watcher.messages if t >= removed
                                                         and isinstance(d, dict) and d.get("service") == led
                                                         and d.get("type") == "service_recovered"])
                                               for led in ledgers}
    finally:
        if caller is not None:
            await caller.stop()
        for p in procs.values():
            p.stop()
    return trial


async def _check_state(ops: Operations, ledgers: list[str], before: dict[str, tuple[Any, Any]], after: float,
                       trial: Trial) -> None:
    """The opened breakers everywhere they are kept, and the health of the moved services as before."""
    supervisor = ray.get_actor(f"sfa-supervisor-{ops.cluster}", namespace="sfa-ops")
    breakers = (await supervisor.status.remote())["breakers"]
    for led in ledgers:
        monitor = ray.get_actor(f"sfa-monitor-{ops.cluster}-{led}", namespace="sfa-ops")
        trial.restored[f"{led}.monitor"] = (await monitor.state.remote())["breaker"]["state"] == "open"
        trial.restored[f"{led}.supervisor"] = breakers.get(led) == "open"
        trial.restored[f"{led}.observer"] = bool(await _wait(lambda s=led: _observer_breaker(ops.cluster, s), 10))

    def summaries() -> list[dict[str, Any]]:
        return [d for t, topic, d in ops.watcher.messages
                if t >= after and topic.endswith("/health") and isinstance(d, dict)]

    # A ledger whose monitor stayed has the same history: the health a moved ledger should show now
    # (a status may change with time alone); without one, the health from before the removal.
    control = next((s for s in ledgers if s not in before), None)

    def expected(doc: dict[str, Any], s: str) -> tuple[Any, Any]:
        return _health_view(doc, control) if control is not None and s in ledgers else before[s]

    def restored() -> bool:
        docs = summaries()
        return bool(docs) and all(_health_view(docs[-1], s) == expected(docs[-1], s) for s in before)

    health = await _wait(_async(restored), 20)
    last = (summaries() or [{}])[-1]
    trial.restored["health_of_moved"] = bool(health)
    trial.restored["health_breakers"] = all(_health_view(last, s)[1] == "open" for s in ledgers)
    trial.detail["health_before"] = before
    trial.detail["health_after"] = {s: _health_view(last, s) for s in (*before, *([control] if control else []))}

async def _trials(cluster: Cluster, broker: str, trials: int, seed: int, sigkill: bool) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    async with chaos_job(broker) as (ops, client, hook):
        for n in range(trials):
            delay = rng.uniform(0.0, 3.0)
            try:
                r = (await node_trial(cluster, ops, client, hook, n, delay, sigkill)).as_dict()
            except Exception as exc:
                r = failed_trial(KIND, exc)
            r["remove_after_s"] = delay
            print_trial(f"node removal #{n + 1}", r)
            out.append(r)
            if n + 1 < trials and len(cluster.worker_nodes) < 2:  # three nodes again for the next trial
                cluster.add_node(num_cpus=1)  # in the main thread (it sets signal handlers): a pause
                cluster.wait_for_nodes()
    return out


def run(trials: int, seed: int, sigkill: bool = False) -> list[dict[str, Any]]:
    """``trials`` node removals on a 3-node cluster started here (never the caller's Ray)."""
    assert not ray.is_initialized(), "benchmarks.chaos.nodes starts its own cluster"
    broker = start_mosquitto()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="sfa-ops", log_to_driver=False, configure_logging=False)
        return asyncio.run(_trials(cluster, broker.url, trials, seed, sigkill))
    finally:
        ray.shutdown()
        cluster.shutdown()
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos.nodes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=3, help="node removals (default 3, at most 20)")
    p.add_argument("--seed", type=int, default=1, help="seed of the removal moments (default 1)")
    p.add_argument("--sigkill", action="store_true", help="SIGKILL the node's processes at once (no SIGTERM first)")
    p.add_argument("--json", metavar="PATH", help="also write every trial as JSON here")
    a = p.parse_args(argv)
    if not 1 <= a.trials <= 20:
        p.error("--trials must be 1..20")
    results = run(a.trials, a.seed, a.sigkill)
    report(results, name="chaos_nodes", first="fault", json_path=a.json,
           title=f"removal of a worker node of a 3-node cluster under traffic (seed {a.seed}; "
                 f"{'SIGKILL' if a.sigkill else 'SIGTERM then SIGKILL'}; recovery bound {CALL_TIMEOUT_S:g} s "
                 "= the call timeout)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
