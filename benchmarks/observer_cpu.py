"""``python -m benchmarks.observer_cpu`` — where an observer's CPU goes, at one offered rate.

Starts operate with ``--observers`` observers on a private mosquitto, makes the benchmark's four
services known, then measures every observer process (``/proc``, user + system):

- idle: CPU-seconds per second with the services known and no traffic (the tick, its monitor calls
  and report, the idle evaluations, Ray's own housekeeping);
- loaded: CPU-seconds per 1,000 messages while ``benchmarks.ingest``'s publisher offers ``--rate``
  msg/s for ``--seconds`` (and two seconds after), and how that splits over the threads of the
  last observer process (``ray::IDLE`` is the actor's event loop: MQTT, correlation, ticks).

It separates a fixed per-observer cost (idle) from a cost per message at a given rate per
observer: ``--observers 1 --rate 4000`` offers one observer what each of four gets at 16,000.
The machine is shared: repeat (``--repeats``) and compare medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from adapters.runtime.processes import start_mosquitto
from benchmarks.common import median
from benchmarks.ingest import cpu_seconds, observer_pids, offer
from tests.support.operations import operations

_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[tuple[str, str], float]:
    """CPU-seconds so far of each thread of ``pid``, keyed by (thread id, name)."""
    out: dict[tuple[str, str], float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as fh:
                name = fh.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[(tid, name)] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


async def run_once(k: int, rate: int, seconds: float, observation: str) -> tuple[float, float, dict[str, float]]:
    """(idle CPU-s/s summed over observers, loaded CPU-s per 1,000 messages, threads of the last)."""
    broker = start_mosquitto()
    try:
        tmp = Path(tempfile.mkdtemp(prefix="sfa-bench-observer-cpu-"))
        policies = {"observation.yaml": "call_timeout: 30s\n" + observation}
        async with operations(broker.url, tmp, policies=policies, observers=k,
                              extra={"no_security": True}) as ops:
            pids = await asyncio.to_thread(observer_pids, ops.cluster, k)
            await asyncio.to_thread(offer, broker.port, 2000, 2)  # the four services get their monitors
            await asyncio.sleep(3.0)
            c0, t0 = cpu_seconds(pids), time.monotonic()
            await asyncio.sleep(10.0)
            idle = (cpu_seconds(pids) - c0) / (time.monotonic() - t0)
            th0, c0 = thread_cpu(pids[-1]), cpu_seconds(pids)
            published = await asyncio.to_thread(offer, broker.port, rate, seconds)
            await asyncio.sleep(2.0)
            used = cpu_seconds(pids) - c0
            threads: dict[str, float] = {}
            for key, v in thread_cpu(pids[-1]).items():
                threads[key[1]] = threads.get(key[1], 0.0) + v - th0.get(key, 0.0)
            return idle, 1000.0 * used / published if published else float("nan"), threads
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.observer_cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--observers", type=int, default=4)
    p.add_argument("--rate", type=int, default=16000, help="offered msg/s (default 16000)")
    p.add_argument("--seconds", type=float, default=8.0, help="publishing time (default 8)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--observation", default="tick: 250ms",
                   help="observation.yaml lines, '\\n'-separated (default 'tick: 250ms')")
    a = p.parse_args(argv)
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    idles, loads = [], []
    try:
        for _ in range(a.repeats):
            idle, per_k, threads = asyncio.run(run_once(a.observers, a.rate, a.seconds,
                                                        a.observation.replace("\\n", "\n") + "\n"))
            idles.append(idle)
            loads.append(per_k)
            top = sorted(((round(v, 2), n) for n, v in threads.items() if v >= 0.01), reverse=True)[:5]
            print(f"  {a.observers} observer(s): idle {idle:.3f} CPU-s/s, at {a.rate:,} msg/s "
                  f"{per_k:.4f} CPU-s per 1,000; last observer's threads {top}", flush=True)
    finally:
        ray.shutdown()
    print(f"median of {a.repeats}: idle {median(idles):.3f} CPU-s/s (all observers), "
          f"{median(loads):.4f} CPU-s per 1,000 messages at {a.rate:,} msg/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
