"""``python -m benchmarks.ingest`` — how many platform messages per second operate keeps up with.

A publisher process sends call/response pairs (QoS 0, ~200-byte calls) through mosquitto as fast
as it can for ``--seconds``. Measured side: operate with 1, 2 and 4 observers; its sustained rate
is read from the health summary's observed counters (calls + responses) over the steady part of
the run. Baseline, in the same run and alternating with operate: a bare aiomqtt subscriber in its
own process that only counts the same messages. Target: >= 80 % of the bare rate with 1 observer.

Everything shares 2 cores here (publisher, broker, consumer), so absolute rates are what this
machine allows; the ratio is the figure that matters.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from adapters.processes import start_mosquitto
from benchmarks.common import median, print_table, write_result
from tests.support.operations import operations

PUBLISHER = r"""
import sys, time, json
import paho.mqtt.client as mqtt
port, seconds = int(sys.argv[1]), float(sys.argv[2])
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
c.max_queued_messages_set(0)
c.connect("127.0.0.1", port)
c.loop_start()
services = ["UserManagement", "OrderManagement", "Inventory", "Payments"]
n = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(200):
        s = services[n % 4]
        reply = f"session/s{n % 50}/response"
        c.publish(f"service/{s}", json.dumps({"jsonrpc": "2.0", "id": f"c{n}", "method": "getUser",
                  "params": {"userId": f"u{n % 1000}", "fields": ["name", "email"]}, "replyTo": reply,
                  "correlationId": f"corr-{n}", "userContext": {"userId": f"u{n % 1000}", "roles": ["user"]}}))
        c.publish(reply, json.dumps({"jsonrpc": "2.0", "id": f"c{n}", "result": {"name": "n", "email": "e"}}))
        n += 1
print(n * 2, flush=True)
c.loop_stop()
"""

BARE = r"""
import sys, time, asyncio, aiomqtt
port = int(sys.argv[1])
async def main():
    n = 0
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, max_queued_incoming_messages=0) as c:
        await c.subscribe("service/+")
        await c.subscribe("session/+/response")
        print("ready", flush=True)
        last = time.monotonic()
        async for _ in c.messages:
            n += 1
            now = time.monotonic()
            if now - last >= 0.25:
                print(f"{time.time()} {n}", flush=True)
                last = now
asyncio.run(main())
"""


def publish(port: int, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", PUBLISHER, str(port), str(seconds)], stdout=subprocess.PIPE,
                            text=True)


def steady_rate(samples: list[tuple[float, int]], start: float, end: float) -> float:
    """Messages per second between the first sample after ``start`` and the last before ``end``."""
    inside = [(t, n) for t, n in samples if start <= t <= end]
    if len(inside) < 2:
        return 0.0
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def run_bare(port: int, seconds: float) -> float:
    proc = subprocess.Popen([sys.executable, "-c", BARE, str(port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    t0 = time.time()
    pub = publish(port, seconds)
    samples: list[tuple[float, int]] = []
    deadline = time.time() + seconds + 3
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while time.time() < deadline:
        if sel.select(timeout=0.5):
            line = proc.stdout.readline()
            ts, n = line.split()
            samples.append((float(ts), int(n)))
    pub.wait(30)
    proc.kill()
    proc.wait()
    return steady_rate(samples, t0 + 1.0, t0 + seconds)


async def run_operate(ops: Any, port: int, seconds: float) -> float:
    t0 = time.time()
    pub = publish(port, seconds)
    await asyncio.sleep(seconds + 2)
    pub.wait(30)
    samples = [(ts, d["observed"]["calls"] + d["observed"]["responses"])
               for ts, topic, d in ops.watcher.messages if topic.endswith("/health") and isinstance(d, dict)]
    return steady_rate(samples, t0 + 1.0, t0 + seconds)


async def measure(observer_counts: list[int], repeats: int, seconds: float) -> dict[str, Any]:
    broker = start_mosquitto()
    port = broker.port
    out: dict[str, Any] = {"bare": [], **{f"observers_{k}": [] for k in observer_counts}}
    try:
        for k in observer_counts:
            tmp = Path(tempfile.mkdtemp(prefix="sfa-bench-ingest-"))
            policies = {"observation.yaml": "call_timeout: 30s\ntick: 250ms\n"}
            async with operations(broker.url, tmp, policies=policies, observers=k) as ops:
                await asyncio.sleep(2)
                for r in range(repeats):
                    if k == observer_counts[0]:
                        out["bare"].append(run_bare(port, seconds))
                        print(f"  bare subscriber run {r + 1}: {out['bare'][-1]:,.0f} msg/s", flush=True)
                    rate = await run_operate(ops, port, seconds)
                    out[f"observers_{k}"].append(rate)
                    print(f"  operate, {k} observer(s), run {r + 1}: {rate:,.0f} msg/s", flush=True)
                    await asyncio.sleep(3)  # let the backlog drain before the next run
    finally:
        broker.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="publishing time per run (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="runs per configuration (default 3)")
    p.add_argument("--observers", default="1,2,4", help="observer counts to measure (default 1,2,4)")
    a = p.parse_args(argv)
    counts = [int(x) for x in a.observers.split(",")]
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        raw = asyncio.run(measure(counts, a.repeats, a.seconds))
    finally:
        ray.shutdown()
    bare = median(raw["bare"])
    rows = [["bare aiomqtt subscriber (baseline)", bare, 1.0]]
    results: dict[str, Any] = {"runs": raw}
    for k in counts:
        m = median(raw[f"observers_{k}"])
        results[f"observers_{k}_median"] = m
        rows.append([f"operate, {k} observer(s)", m, m / bare if bare else 0.0])
    print_table("Sustained ingest (messages/s, medians)", ["consumer", "msg/s", "vs bare"], rows)
    ratio = results[f"observers_{counts[0]}_median"] / bare if bare else 0.0
    write_result("ingest", results=results, baseline={"bare_median": bare, "runs": raw["bare"]}, ratio=ratio,
                 target=">= 0.8 x bare subscriber with 1 observer", met=ratio >= 0.8)
    print(orjson.dumps({"ratio": ratio}).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
