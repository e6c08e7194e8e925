"""``python -m benchmarks.ingest`` — the highest message rate operate keeps up with.

A publisher process offers call/response pairs (QoS 0, ~250-byte calls) through mosquitto at a
fixed rate for ``--seconds``; the consumer keeps up when, two seconds after the publisher stops,
it has processed at least 97 % of what was published. The rate steps up until it does not; the
capacity is the highest rate it kept up with. Measured side: operate with 1, 2 and 4 observers
(processed = the health summary's observed calls + responses). Baseline, in the same run: a bare
aiomqtt subscriber in its own process that only counts the same messages. Target: operate with 1
observer keeps up with >= 80 % of the bare subscriber's capacity.

Publisher, broker and consumer share the 2 cores here, so capacities are what this machine allows
with the load generator on it; each step is repeated ``--repeats`` times and the median kept.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from adapters.processes import start_mosquitto
from benchmarks.common import median, print_table, write_result
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

RATES = (1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000, 24000, 32000)
KEEP_UP = 0.97


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


async def capacity(port: int, processed: Any, seconds: float, repeats: int) -> tuple[float, list[dict[str, float]]]:
    """Highest offered rate at which ``processed()`` (a running total) keeps up."""
    best = 0.0
    steps = []
    for rate in RATES:
        kept = []
        for _ in range(repeats):
            before = await processed()
            published = await asyncio.to_thread(offer, port, rate, seconds)
            await asyncio.sleep(2.0)
            kept.append((await processed() - before) / published if published else 0.0)
        share = median(kept)
        steps.append({"rate": rate, "processed_share": round(share, 4)})
        print(f"    offered {rate:>6,} msg/s: processed {100 * share:5.1f} %", flush=True)
        if share < KEEP_UP:
            break
        best = float(rate)
    return best, steps


async def measure(observer_counts: list[int], repeats: int, seconds: float) -> dict[str, Any]:
    broker = start_mosquitto()
    out: dict[str, Any] = {}
    try:
        bare = Bare(broker.port)

        async def bare_total() -> int:
            await asyncio.sleep(0.3)
            return bare.read()

        print("  bare aiomqtt subscriber", flush=True)
        out["bare"] = await capacity(broker.port, bare_total, seconds, repeats)
        bare.stop()
        for k in observer_counts:
            tmp = Path(tempfile.mkdtemp(prefix="sfa-bench-ingest-"))
            async with operations(broker.url, tmp, policies={"observation.yaml": "call_timeout: 30s\ntick: 250ms\n"},
                                  observers=k, extra={"no_security": True}) as ops:

                async def total(ops: Any = ops) -> int:
                    await asyncio.sleep(0.6)  # at least two ticks: the summary is current
                    h = ops.health()
                    return 0 if h is None else int(h["observed"]["calls"] + h["observed"]["responses"])

                print(f"  operate, {k} observer(s)", flush=True)
                out[f"observers_{k}"] = await capacity(broker.port, total, seconds, repeats)
    finally:
        broker.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="publishing time per step (default 5)")
    p.add_argument("--repeats", type=int, default=1, help="runs per step, median kept (default 1)")
    p.add_argument("--observers", default="1,2,4", help="observer counts to measure (default 1,2,4)")
    a = p.parse_args(argv)
    counts = [int(x) for x in a.observers.split(",")]
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        raw = asyncio.run(measure(counts, a.repeats, a.seconds))
    finally:
        ray.shutdown()
    bare = raw["bare"][0]
    rows: list[list[Any]] = [["bare aiomqtt subscriber (baseline)", bare, 1.0]]
    results: dict[str, Any] = {"steps": {k: v[1] for k, v in raw.items()}, "keep_up_share": KEEP_UP}
    for k in counts:
        cap = raw[f"observers_{k}"][0]
        results[f"observers_{k}_capacity"] = cap
        rows.append([f"operate, {k} observer(s)", cap, cap / bare if bare else 0.0])
    print_table("Sustained ingest capacity (messages/s kept up with)", ["consumer", "msg/s", "vs bare"], rows)
    ratio = results[f"observers_{counts[0]}_capacity"] / bare if bare else 0.0
    write_result("ingest", results=results, baseline={"bare_capacity": bare}, ratio=ratio,
                 target=">= 0.8 x bare subscriber's capacity with 1 observer", met=ratio >= 0.8)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
