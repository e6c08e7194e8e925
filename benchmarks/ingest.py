"""``python -m benchmarks.ingest`` — the highest message rate operate keeps up with.

A publisher process offers call/response pairs (QoS 0, ~250-byte calls) through mosquitto at a
fixed rate for ``--seconds``; the consumer keeps up when, two seconds after the publisher stops,
it has processed at least 97 % of what was published. The rate steps up until it does not; the
capacity is the highest rate it kept up with. Measured side: operate with 1, 2 and 4 observers
(processed = the health summary's observed calls + responses); with several observers calls and
responses arrive through MQTT 5 shared subscriptions and pair halves are forwarded to their owner.
Baseline, in the same run: a bare aiomqtt subscriber in its own process that only counts the same
messages.

CPU: for every step, the CPU-seconds (user + system, from /proc) of every observer process summed,
per 1,000 messages processed, over the step (publishing and the two seconds after). Reported at
each configuration's capacity and at the highest rate every configuration kept up with (the
comparison that decides scale-out: fixed per-process costs weigh the same there).

Targets: operate with 1 observer keeps up with >= 80 % of the bare subscriber's capacity; CPU per
message with 2 and 4 observers <= 1.3 x one observer's; capacity with 2 observers >= 1 observer's.

Publisher, broker and consumer share the 2 cores here, so capacities are what this machine allows
with the load generator on it; each step is repeated ``--repeats`` times and the median kept.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from adapters.runtime.processes import start_mosquitto
from benchmarks.common import median, write_result
from drivers.tables import print_table
from tests.support.operations import operations

PUBLISHER = r"""
import sys, time, json
import paho.mqtt.client as mqtt
port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
c.connect("127.0.0.1", port)
c.loop_start()
services = ["UserManagement", "OrderManagement", "Inventory", "Payments"]
pairs = []
for n in range(4000):
    reply = f"session/s{n % 50}/response"
    call = json.dumps({"jsonrpc": "2.0", "id": f"c{n}", "method": "getUser",
                       "params": {"userId": f"u{n % 1000}", "fields": ["name", "email"]}, "replyTo": reply,
                       "correlationId": f"corr-{n}", "userContext": {"userId": f"u{n % 1000}", "roles": ["user"]}})
    resp = json.dumps({"jsonrpc": "2.0", "id": f"c{n}", "result": {"name": "n", "email": "e"}})
    pairs.append((f"service/{services[n % 4]}", call, reply, resp))
sent = 0
start = time.monotonic()
pair_rate = rate / 2
while True:
    now = time.monotonic() - start
    if now >= seconds:
        break
    due = int(now * pair_rate)
    while sent < due:
        topic, call, reply, resp = pairs[sent % 4000]
        c.publish(topic, call)
        c.publish(reply, resp)
        sent += 1
    time.sleep(0.002)
time.sleep(0.5)
c.loop_stop()
print(sent * 2, flush=True)
"""

BARE = r"""
import sys, time, asyncio, aiomqtt
port = int(sys.argv[1])
async def main():
    n = 0
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.subscribe("service/+")
        await c.subscribe("session/+/response")
        print("ready", flush=True)
        async def report():
            while True:
                await asyncio.sleep(0.2)
                print(n, flush=True)
        task = asyncio.create_task(report())
        async for _ in c.messages:
            n += 1
asyncio.run(main())
"""

RATES = (1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000, 20000, 24000, 28000, 32000, 40000)
KEEP_UP = 0.97


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU-seconds used so far by ``pids`` (a vanished process counts 0)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)
    return total


def observer_pids(cluster: str, count: int) -> list[int]:
    """The process ids of the cluster's observer actors (asked from each actor)."""
    import ray

    names = {a["name"]: a["namespace"] for a in ray.util.list_named_actors(all_namespaces=True)}
    pids: list[int] = []
    for i in range(count):
        name = f"sfa-observer-{cluster}-{i}"
        actor = ray.get_actor(name, namespace=names[name])
        pid: Any = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=60)
        pids.append(int(pid))
    return pids


def offer(port: int, rate: float, seconds: float) -> int:
    out = subprocess.run([sys.executable, "-c", PUBLISHER, str(port), str(rate), str(seconds)],
                         capture_output=True, text=True, timeout=seconds + 60)
    return int(out.stdout.strip().splitlines()[-1])


class Bare:
    """The bare subscriber process; a reader thread keeps its running count."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", BARE, str(port)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"
        self.count = 0
        self.reader = threading.Thread(target=self._follow, daemon=True)
        self.reader.start()

    def _follow(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.count = int(line)

    def read(self) -> int:
        return self.count

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


async def capacity(port: int, processed: Any, seconds: float, repeats: int, pids: list[int],
                   rates: tuple[int, ...] = RATES) -> tuple[float, list[dict[str, float]]]:
    """Highest offered rate at which ``processed()`` (a running total) keeps up; per step, the CPU
    of ``pids`` per 1,000 messages processed."""
    best = 0.0
    steps = []
    for rate in rates:
        kept, cpu = [], []
        for _ in range(repeats):
            before = await processed()
            cpu_before = cpu_seconds(pids)
            published = await asyncio.to_thread(offer, port, rate, seconds)
            await asyncio.sleep(2.0)
            done = await processed() - before
            used = cpu_seconds(pids) - cpu_before
            kept.append(done / published if published else 0.0)
            cpu.append(1000.0 * used / done if done else float("nan"))
        share = median(kept)
        per_k = median(cpu)
        steps.append({"rate": rate, "processed_share": round(share, 4), "cpu_s_per_1k": round(per_k, 5)})
        print(f"    offered {rate:>6,} msg/s: processed {100 * share:5.1f} %, "
              f"{per_k:.4f} CPU-s per 1,000", flush=True)
        if share < KEEP_UP:
            break
        best = float(rate)
    return best, steps


async def measure(observer_counts: list[int], repeats: int, seconds: float,
                  rates: tuple[int, ...] = RATES, observation: str = "") -> dict[str, Any]:
    broker = start_mosquitto()
    out: dict[str, Any] = {}
    try:
        bare = Bare(broker.port)

        async def bare_total() -> int:
            await asyncio.sleep(0.3)
            return bare.read()

        print("  bare aiomqtt subscriber", flush=True)
        out["bare"] = await capacity(broker.port, bare_total, seconds, repeats, [bare.proc.pid], rates)
        bare.stop()
        for k in observer_counts:
            tmp = Path(tempfile.mkdtemp(prefix="sfa-bench-ingest-"))
            async with operations(broker.url, tmp, policies={"observation.yaml": "call_timeout: 30s\ntick: 250ms\n" + observation},
                                  observers=k, extra={"no_security": True}) as ops:

                async def total(ops: Any = ops) -> int:
                    await asyncio.sleep(0.6)  # at least two ticks: the summary is current
                    h = ops.health()
                    return 0 if h is None else int(h["observed"]["calls"] + h["observed"]["responses"])

                pids = await asyncio.to_thread(observer_pids, ops.cluster, k)
                print(f"  operate, {k} observer(s), pids {pids}", flush=True)
                out[f"observers_{k}"] = await capacity(broker.port, total, seconds, repeats, pids, rates)
    finally:
        broker.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="publishing time per step (default 5)")
    p.add_argument("--repeats", type=int, default=1, help="runs per step, median kept (default 1)")
    p.add_argument("--observers", default="1,2,4", help="observer counts to measure (default 1,2,4)")
    p.add_argument("--rates", default=",".join(map(str, RATES)), help="offered rates, ascending (msg/s)")
    p.add_argument("--observation", default="", help="extra observation.yaml lines (e.g. 'forward_every: 50ms')")
    a = p.parse_args(argv)
    counts = [int(x) for x in a.observers.split(",")]
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        raw = asyncio.run(measure(counts, a.repeats, a.seconds, tuple(int(x) for x in a.rates.split(",")),
                                 a.observation.replace("\\n", "\n") + "\n"))
    finally:
        ray.shutdown()
    return report(raw, counts)


def _cpu_at(steps: list[dict[str, float]], rate: float) -> float:
    return next((s["cpu_s_per_1k"] for s in steps if s["rate"] == rate), float("nan"))


def report(raw: dict[str, Any], counts: list[int]) -> int:
    """The table and ``var/bench/ingest.json`` from the measured steps."""
    bare = raw["bare"][0]
    # The highest rate every operate configuration kept up with (the bare subscriber is only the
    # capacity baseline: its own limit must not pull the CPU comparison down to idle rates).
    common = min(raw[f"observers_{k}"][0] for k in counts)
    results: dict[str, Any] = {"steps": {k: v[1] for k, v in raw.items()}, "keep_up_share": KEEP_UP,
                               "common_rate": common}
    rows: list[list[Any]] = [["bare aiomqtt subscriber (baseline)", bare, 1.0, _cpu_at(raw["bare"][1], bare),
                              _cpu_at(raw["bare"][1], common), "-"]]
    one = _cpu_at(raw[f"observers_{counts[0]}"][1], common)
    for k in counts:
        cap, steps = raw[f"observers_{k}"]
        at_cap, at_common = _cpu_at(steps, cap), _cpu_at(steps, common)
        results[f"observers_{k}_capacity"] = cap
        results[f"observers_{k}_cpu_s_per_1k_at_capacity"] = at_cap
        results[f"observers_{k}_cpu_s_per_1k_at_common_rate"] = at_common
        results[f"observers_{k}_cpu_vs_first"] = at_common / one if one else float("nan")
        rows.append([f"operate, {k} observer(s)", cap, cap / bare if bare else 0.0, at_cap, at_common,
                     at_common / one if one else float("nan")])
    print_table(f"Sustained ingest capacity and CPU (common rate {common:,.0f} msg/s)",
                ["consumer", "msg/s", "vs bare", "CPU-s/1k at capacity", "CPU-s/1k at common rate",
                 f"CPU vs {counts[0]} observer"], rows)
    ratio = results[f"observers_{counts[0]}_capacity"] / bare if bare else 0.0
    met = ratio >= 0.8
    cpu_ok = all(results[f"observers_{k}_cpu_vs_first"] <= 1.3 for k in counts[1:])
    cap_ok = all(results[f"observers_{k}_capacity"] >= results[f"observers_{counts[0]}_capacity"]
                 for k in counts[1:] if k == 2)
    results["targets"] = {"one_observer_vs_bare": met, "cpu_per_message_within_1_3x": cpu_ok,
                          "two_observers_capacity_not_below_one": cap_ok}
    print(f"\n  targets: 1 observer >= 0.8 x bare: {met}; CPU/msg with more observers <= 1.3 x: {cpu_ok}; "
          f"2 observers' capacity >= 1 observer's: {cap_ok}")
    write_result("ingest", results=results, baseline={"bare_capacity": bare}, ratio=ratio,
                 target=">= 0.8 x bare subscriber's capacity with 1 observer; CPU/msg with 2 and 4 observers "
                        "<= 1.3 x one observer's; 2 observers' capacity >= 1 observer's",
                 met=met and cpu_ok and cap_ok)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
