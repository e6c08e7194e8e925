"""Baselines over a generated audit history in PostgreSQL: the Ray driver (time partitions, one
task per CPU) beside a single-process pandas run of the same computation (one partition, no Ray).

    python -m benchmarks.analysis [--events 10000000] [--reps 1] [--partition-rows 500000]

Starts its own PostgreSQL (adapters/processes), loads the history with drivers.generate, then
measures each side in a fresh child process: wall time of the job (Ray already up: a running
cluster is the normal case, so ``ray.init`` is not timed) and peak RSS (VmHWM) per process —
the single process, and for Ray the largest worker and the driver. Both sides must produce the
same baselines (compared by digest). Then the same job on a simulated 3-node cluster
(``ray.cluster_utils.Cluster``, one CPU per node) shows the partitions spread across nodes.
Target: Ray >= 1.5x faster and its largest process <= 1/4 of the single process's peak.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import orjson

from benchmarks.common import median, write_result
from drivers.tables import print_table

TARGET_SPEEDUP = 1.5
TARGET_MEMORY = 0.25


def _digest(users: dict[str, Any], services: dict[str, Any]) -> str:
    raw = orjson.dumps([users, services], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:16]


def child_single(url: str, start: float, end: float) -> dict[str, Any]:
    """Single-process pandas: the whole window as one frame, the same partials and finalisation."""
    from drivers.analysis_tasks import baseline_partials, compute_local, rss_peak_mb
    from policies.analysis.baselines import Window, finalize

    t0 = time.perf_counter()
    parts, stats = compute_local(baseline_partials, url, start, end)
    users, services = finalize(parts, Window(start=start, end=end))
    return {"seconds": time.perf_counter() - t0, "rss_peak_mb": rss_peak_mb(), "rows": stats.rows,
            "digest": _digest(users, services)}


def child_ray(url: str, start: float, end: float, partition_rows: int, cluster_nodes: int) -> dict[str, Any]:
    """The Ray driver's computation (plan, tasks, fold, finalise) on a local or simulated cluster."""
    import ray

    from drivers.analysis_tasks import baseline_partials, fold_partials, rss_peak_mb, run_partitions
    from drivers.baselines import plan
    from policies.analysis.baselines import Window, empty_partials, finalize

    cluster = None
    if cluster_nodes > 1:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        for _ in range(cluster_nodes - 1):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, include_dashboard=False, configure_logging=False)
    else:
        # address="local": a private Ray for this run, never a `ray start` cluster someone else
        # left running on the machine (plain ray.init() would join that one).
        ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, configure_logging=False)
    w = Window(start=start, end=end)
    # Warm every worker (imports, first connection) on empty ranges: a running cluster has warm
    # workers, and the single-process side also imports before its clock starts.
    cpus = int(ray.cluster_resources().get("CPU", 1))
    run_partitions(baseline_partials, url, [(start, start)] * cpus * 2, fold_partials)
    t0 = time.perf_counter()
    parts, _ = asyncio.run(plan(url, w, partition_rows))
    combined, stats = run_partitions(baseline_partials, url, parts, fold_partials)
    users, services = finalize(combined or empty_partials(), w)
    seconds = time.perf_counter() - t0
    per_worker: dict[int, float] = {}
    for s in stats:
        per_worker[s.pid] = max(per_worker.get(s.pid, 0.0), s.rss_peak_mb)
    nodes = Counter(s.node_id[:8] for s in stats)
    ray.shutdown()
    if cluster is not None:
        cluster.shutdown()
    return {"seconds": seconds, "worker_peak_mb": max(per_worker.values()), "driver_peak_mb": rss_peak_mb(),
            "workers": len(per_worker), "partitions": len(parts), "tasks_per_node": dict(nodes),
            "digest": _digest(users, services)}


def _spawn(args: list[str]) -> dict[str, Any]:
    run = subprocess.run([sys.executable, "-m", "benchmarks.analysis", *args], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{run.stderr[-3000:]}")
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.analysis", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--partition-rows", type=int, default=500_000)
    p.add_argument("--store", help="use this PostgreSQL (already loaded) instead of starting and loading one")
    p.add_argument("--child", choices=("single", "ray", "cluster"), help=argparse.SUPPRESS)
    p.add_argument("--window", nargs=2, type=float, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        start, end = a.window
        out = (child_single(a.store, start, end) if a.child == "single" else
               child_ray(a.store, start, end, a.partition_rows, 3 if a.child == "cluster" else 1))
        print(json.dumps(out))
        return 0
    return run(a)


def run(a: argparse.Namespace) -> int:
    from adapters.runtime.processes import start_postgres
    from drivers.generate import generate
    from drivers.history_model import HistoryModel

    pg = None
    url = a.store
    end = 1709251200.0  # 2024-03-01: a fixed end, so runs compare
    m = HistoryModel(events=a.events, days=a.days, users=a.users, services=12, seed=1, end=end, rollup_days=1)
    load: dict[str, Any] = {}
    try:
        if url is None:
            pg = start_postgres()
            url = pg.url
            print(f"loading {a.events:,} events into {url} ...", file=sys.stderr)
            load = asyncio.run(generate(m, url, batch=50_000))
            print(f"loaded in {load['load_s']:.0f}s ({a.events / load['load_s']:,.0f} events/s)", file=sys.stderr)
        window = ["--store", url, "--window", str(m.start), str(end), "--partition-rows", str(a.partition_rows)]
        singles, rays = [], []
        for _ in range(a.reps):  # alternate, so drift on the machine hits both sides alike
            singles.append(_spawn(["--child", "single", *window]))
            rays.append(_spawn(["--child", "ray", *window]))
        cluster = _spawn(["--child", "cluster", *window])
    finally:
        if pg is not None:
            pg.stop()
    single_s, ray_s = median([s["seconds"] for s in singles]), median([r["seconds"] for r in rays])
    single_mb = max(s["rss_peak_mb"] for s in singles)
    ray_mb = max(max(r["worker_peak_mb"], r["driver_peak_mb"]) for r in rays)
    same = {s["digest"] for s in singles} == {r["digest"] for r in rays} == {cluster["digest"]}
    speedup, mem_ratio = single_s / ray_s, ray_mb / single_mb
    print_table(f"baselines over {singles[0]['rows']:,} events ({a.reps} rep(s), medians)",
                ("run", "wall s", "peak RSS MiB per process", "notes"), [
                    ("single-process pandas", single_s, single_mb, "one frame, no Ray"),
                    ("Ray, local (2 CPU)", ray_s, ray_mb,
                     f"{rays[0]['partitions']} partitions, {rays[0]['workers']} workers, driver "
                     f"{rays[0]['driver_peak_mb']:.0f} MiB"),
                    ("Ray, 3-node sim. cluster", cluster["seconds"], max(cluster["worker_peak_mb"],
                                                                          cluster["driver_peak_mb"]),
                     "tasks per node " + ", ".join(f"{k}={v}" for k, v in cluster["tasks_per_node"].items())),
                    ("ratio", speedup, mem_ratio, f"speedup x; memory fraction; same result: {same}"),
                ])
    met = speedup >= TARGET_SPEEDUP and mem_ratio <= TARGET_MEMORY and same
    write_result("analysis", results={"ray": rays, "cluster": cluster, "events": a.events, "load": load,
                                      "speedup": speedup, "memory_fraction": mem_ratio, "same_result": same},
                 baseline={"single": singles}, ratio=speedup,
                 target=f"Ray >= {TARGET_SPEEDUP}x faster, largest Ray process <= {TARGET_MEMORY:.0%} of single",
                 met=met)
    return 0


if __name__ == "__main__":
    sys.exit(main())
