"""``python -m benchmarks.memory`` — bytes per pending call and per known service, and the bound
the pending table's cap puts on a flood of unanswered calls.

Measured with tracemalloc on the observer's correlation core (``policies.observation.correlation``) and the
per-service monitor core (``policies.health.monitor``), with realistic call payloads (parsed once, as
the observer does).

Each monitored service also costs a ServiceMonitor actor, one Ray worker process: with
``--actors N`` (default 20; 0 skips it, it needs a local Ray) N monitors are started with the SPREAD
strategy, each restores its state from a SQLite store, and the sum of their processes' resident
memory is divided by N — RSS (what ``ps`` shows; shared library pages counted in every process),
PSS (shared pages split between the processes sharing them) and USS (private pages only) — beside
an idle Ray actor's, and turned into services per GiB.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import tracemalloc
from typing import Any

import orjson

from benchmarks.common import write_result
from drivers.tables import print_table
from policies.breaker.settings import load_breaker_policy
from policies.health.monitor import MonitorCore
from policies.health.status import load_health_policy
from policies.observation.correlation import Correlator


def _call(i: int) -> dict[str, Any]:
    return orjson.loads(orjson.dumps({
        "jsonrpc": "2.0", "id": f"3f2a9c1b-{i:08d}-4c1e-9a51-7d2e8b6f0a{i % 100:02d}", "method": "getUser",
        "params": {"userId": f"u{i}"}, "replyTo": f"session/s{i % 500}/response",
        "correlationId": f"corr-{i:012d}", "userContext": {"userId": f"u{i % 1000}", "roles": ["user"]}}))


def measured(fn: Any) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = fn()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, keep


def pending_bytes(n: int, cap: int) -> tuple[float, int, int]:
    calls = [_call(i) for i in range(n)]  # parsed before measuring: the payload is the broker's
    c = Correlator(call_timeout_s=30, pending_cap=cap)

    def fill() -> Correlator:
        for i, doc in enumerate(calls):
            c.on_call("UserManagement", doc, doc["replyTo"], doc["correlationId"], now=float(i) * 1e-4)
        return c

    size, _ = measured(fill)
    tracked = len(c.pending)
    return size / max(tracked, 1), tracked, c.counters.pending_overflow


def service_bytes(n: int) -> float:
    breaker = load_breaker_policy().for_service("x")
    health = load_health_policy()

    def make() -> list[MonitorCore]:
        return [MonitorCore(service=f"S{i}", cluster_id="c", breaker=breaker, health=health, now=0.0)
                for i in range(n)]

    size, _ = measured(make)
    return size / n


def _proc_memory(pid: int) -> dict[str, int]:
    """RSS, PSS and USS (private pages) of one process in bytes, from /proc (Linux)."""
    out = {"rss": 0, "pss": 0, "uss": 0}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                kib = int(rest.split()[0]) * 1024
                out[{"Rss": "rss", "Pss": "pss"}.get(key, "uss")] += kib
    return out


def actor_memory(n: int, workdir: str) -> dict[str, float]:
    """Start ``n`` ServiceMonitor actors on a local Ray (each restores its state from a SQLite store,
    as in operation), then sum the memory of their worker processes. An idle Ray actor is measured
    too: what a Ray worker costs before any sfa-ops code."""
    import asyncio

    import ray
    from ray._private import state as ray_state

    from actors.monitor import ServiceMonitor
    from actors.settings import OperateSettings

    @ray.remote(num_cpus=0)
    class Idle:
        def ping(self) -> bool:
            return True

    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        settings = OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id="bench",
                                   store_url=f"sqlite:///{workdir}/memory.db")
        monitor_cls: Any = ServiceMonitor  # a Ray actor class (mypy sees the plain class)
        idle_cls: Any = Idle
        monitors = [monitor_cls.options(name=f"bench-monitor-{i}", scheduling_strategy="SPREAD").remote(
            settings, f"Service{i:04d}") for i in range(n)]
        idle = idle_cls.options(name="bench-idle").remote()

        async def build() -> None:  # every monitor builds its core (store opened, state restored)
            await asyncio.gather(*(m.state.remote() for m in monitors), idle.ping.remote())

        asyncio.run(build())
        gc.collect()
        # The GCS actor table (the state API would need the dashboard, which this Ray does not run).
        alive = ray_state.actors(actor_state_name="ALIVE").values()
        pids = {a["Name"]: int(a["Pid"]) for a in alive if a["Name"]}
        mon = [_proc_memory(pids[f"bench-monitor-{i}"]) for i in range(n)]
        base = _proc_memory(pids["bench-idle"])
        total = {k: sum(m[k] for m in mon) for k in ("rss", "pss", "uss")}
        return {"services": n, "actors": n, "rss_per_service": total["rss"] / n,
                "pss_per_service": total["pss"] / n, "uss_per_service": total["uss"] / n,
                "idle_ray_worker_rss": float(base["rss"]), "idle_ray_worker_uss": float(base["uss"]),
                "services_per_gib_rss": (1 << 30) / (total["rss"] / n),
                "services_per_gib_pss": (1 << 30) / (total["pss"] / n)}
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--services", type=int, default=200)
    p.add_argument("--actors", type=int, default=20, help="ServiceMonitor actors to measure (0: skip)")
    a = p.parse_args(argv)
    per_call, tracked, _ = pending_bytes(a.calls, cap=a.calls)
    flood_calls = a.calls * 3
    flood_per_call, flood_tracked, overflow = pending_bytes(flood_calls, cap=a.calls)
    per_service = service_bytes(a.services)
    rows = [
        ["pending call (observer)", per_call, f"{tracked:,} pending"],
        [f"flood of {flood_calls:,} unanswered calls, cap {a.calls:,}", flood_per_call * flood_tracked,
         f"{flood_tracked:,} tracked, {overflow:,} counted as overflow"],
        ["known service (monitor core: breaker, 2-min window, health)", per_service, f"{a.services} services"],
    ]
    actors: dict[str, float] = {}
    if a.actors > 0:
        with tempfile.TemporaryDirectory(prefix="sfa-mem-") as workdir:
            actors = actor_memory(a.actors, workdir)
        rows += [
            ["monitored service: its monitor's process RSS", actors["rss_per_service"],
             f"{a.actors} monitors, 1 service each; {actors['services_per_gib_rss']:.1f} services/GiB"],
            ["monitored service: its monitor's process PSS", actors["pss_per_service"],
             f"shared pages split; {actors['services_per_gib_pss']:.1f} services/GiB"],
            ["monitored service: its monitor's process USS", actors["uss_per_service"], "private pages only"],
            ["idle Ray actor process RSS (no sfa-ops code)", actors["idle_ray_worker_rss"],
             f"USS {actors['idle_ray_worker_uss'] / 2**20:.0f} MiB"],
        ]
    print_table("Memory", ["what", "bytes", "note"], rows)
    bound = per_call * a.calls
    write_result("memory", results={"bytes_per_pending_call": per_call, "bytes_per_service": per_service,
                                    "flood_total_bytes": flood_per_call * flood_tracked,
                                    "flood_overflow_counted": overflow, "cap": a.calls,
                                    "monitor_actors": actors},
                 baseline={"bytes_at_cap": bound}, ratio=(flood_per_call * flood_tracked) / bound,
                 target="memory under a flood stays at the cap's size (ratio <= 1.05)",
                 met=flood_tracked == a.calls and overflow == flood_calls - a.calls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
