"""Auth events per second the SecurityAnalyst sustains, beside a bare subscriber on the same topic.

A publisher process (paho, QoS 0, as fast as it can) sends N ``security/auth/login`` events —
half failures, users from a pool of 5 000 and IPs from 2 000, so the brute-force, per-IP and
credential-stuffing windows all work and some alerts fire — to a mosquitto started here. The
measured side is the analyst's real ingest path (``actors.security_analyst.AnalystBody`` in this
process: MqttBus, parse, ``SecurityAnalyzer.on_auth``, alerts batched and published); the
baselines are bare subscribers that only count — plain aiomqtt (``async for client.messages``)
and the analyst's own transport (MqttBus with a counting handler) — and the ratio is taken
against the faster of the two, so it measures what the analysis itself costs. Each run's rate is events received over
the time from the first to the last ("wall"), which is bounded by the publisher; the figure
judged is the *capacity*: events per CPU-second this process spent between the first and the
last event (the publisher runs in another process), i.e. the rate one core could sustain. Runs
alternate; medians of the repeats are reported. Target: the analyst's capacity is at least 80%
of the bare subscriber's.

    python -m benchmarks.security [--events N --repeats R]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import orjson

from adapters.runtime.processes import start_mosquitto
from benchmarks.common import median, write_result
from drivers.tables import print_table

TARGET_RATIO = 0.80
TOPIC = "security/auth/login"
_IDLE_S = 2.0


def publish(url: str, n: int, seed: int) -> None:
    """The publisher process: ``n`` auth events at QoS 0, then a disconnect."""
    import paho.mqtt.client as paho

    host, port = url.split("://", 1)[1].rsplit(":", 1)
    rnd = random.Random(seed)
    payloads = [orjson.dumps({"userId": f"user-{rnd.randrange(5000)}",
                              "ipAddress": f"10.{rnd.randrange(8)}.{rnd.randrange(250)}.{rnd.randrange(1, 250)}",
                              "success": rnd.random() < 0.5, "timestamp": "2026-01-01T00:00:00Z",
                              "method": "password"}) for _ in range(min(n, 20_000))]
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}")
    client.max_queued_messages_set(0)
    client.connect(host, int(port))
    client.loop_start()
    for i in range(n):
        client.publish(TOPIC, payloads[i % len(payloads)], qos=0)
    time.sleep(0.5)
    client.loop_stop()
    client.disconnect()


def run_publisher(url: str, n: int, seed: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "benchmarks.security", "--publish", url, "--events", str(n),
                             "--seed", str(seed)])


class Meter:
    """First/last arrival and count, for whichever side is measured."""

    def __init__(self) -> None:
        self.first = 0.0
        self.last = 0.0
        self.cpu_first = 0.0
        self.cpu_last = 0.0
        self.count = 0

    def tick(self) -> None:
        now = time.perf_counter()
        if not self.count:
            self.first, self.cpu_first = now, time.process_time()
        self.last = now
        self.count += 1
        if not self.count % 500:
            self.cpu_last = time.process_time()

    def rate(self) -> float:
        span = self.last - self.first
        return self.count / span if span > 0 else 0.0

    def capacity(self) -> float:
        """Events per CPU second of this process (the publisher runs elsewhere): what the side
        could sustain on one core, independent of how fast the publisher managed to send."""
        cpu = self.cpu_last - self.cpu_first
        return (self.count // 500 * 500) / cpu if cpu > 0 else 0.0

    def result(self) -> dict[str, float]:
        return {"events": self.count, "rate": self.rate(), "capacity": self.capacity()}


async def wait_idle(get_count: Any, expected: int) -> None:
    """Until ``expected`` arrived or nothing arrived for ``_IDLE_S``."""
    seen, quiet_since = -1, time.monotonic()
    while True:
        n = get_count()
        if n >= expected:
            return
        if n != seen:
            seen, quiet_since = n, time.monotonic()
        elif time.monotonic() - quiet_since > _IDLE_S:
            return
        await asyncio.sleep(0.05)


async def bare_run(url: str, n: int, seed: int) -> dict[str, float]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    meter = Meter()
    async with aiomqtt.Client(host, int(port), protocol=aiomqtt.ProtocolVersion.V5, max_queued_incoming_messages=0) \
            as client:
        await client.subscribe(TOPIC, qos=1)

        async def count() -> None:
            async for _ in client.messages:
                meter.tick()

        task = asyncio.create_task(count())
        proc = run_publisher(url, n, seed)
        await wait_idle(lambda: meter.count, n)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        proc.wait(30)
    return meter.result()


async def bare_bus_run(url: str, n: int, seed: int) -> dict[str, float]:
    """The same transport as the analyst (MqttBus, same queue size) with a handler that only counts."""
    from adapters.mqtt.bus import MqttBus, MqttConfig

    meter = Meter()
    bus = MqttBus(config=MqttConfig.from_url(url), incoming_queue_size=100_000)
    await bus.subscribe(TOPIC, lambda _msg: meter.tick(), qos=1)
    await bus.start()
    await bus.wait_connected(10)
    proc = run_publisher(url, n, seed)
    await wait_idle(lambda: meter.count, n)
    proc.wait(30)
    await bus.stop()
    return meter.result()


async def analyst_run(url: str, n: int, seed: int, workdir: Path) -> dict[str, float]:
    from actors.security_analyst import AnalystBody
    from actors.security_common import SecurityOptions
    from actors.settings import OperateSettings

    settings = OperateSettings(broker_url=url, cluster_id=f"b{uuid.uuid4().hex[:6]}",
                               store_url=f"sqlite:///{workdir / f'{uuid.uuid4().hex[:6]}.db'}")
    analyst = AnalystBody(settings, SecurityOptions(pattern_interval_s=3600.0))
    meter = Meter()
    handler = analyst._on_auth

    def timed(msg: Any) -> None:  # the analyst's own handler, with an arrival tick around it
        handler(msg)
        meter.tick()

    analyst._on_auth = timed  # type: ignore[method-assign]
    await analyst.start()
    proc = run_publisher(url, n, seed)
    await wait_idle(lambda: meter.count, n)
    proc.wait(30)
    stats = await analyst.stats()
    await analyst.stop()
    return {**meter.result(), "processed": stats["analyzer"]["events"]["auth"],
            "alerts": stats["counts"]["alerts"], "malformed": stats["counts"]["malformed"]}


async def main_async(events: int, repeats: int) -> int:
    broker = start_mosquitto()
    try:
        with tempfile.TemporaryDirectory(prefix="sfa-bench-sec-") as tmp:
            bare: list[dict[str, float]] = []
            bare_bus: list[dict[str, float]] = []
            measured: list[dict[str, float]] = []
            for r in range(repeats):
                bare.append(await bare_run(broker.url, events, r))
                bare_bus.append(await bare_bus_run(broker.url, events, r))
                measured.append(await analyst_run(broker.url, events, r, Path(tmp)))
    finally:
        broker.stop()
    def med(runs: list[dict[str, float]], key: str) -> float:
        return median([x[key] for x in runs])

    aiomqtt_cap, bus_cap = med(bare, "capacity"), med(bare_bus, "capacity")
    b_rate = max(aiomqtt_cap, bus_cap)  # judged against the faster bare subscriber
    m_rate = med(measured, "capacity")
    ratio = m_rate / b_rate if b_rate else 0.0
    rows = [["bare aiomqtt subscriber", aiomqtt_cap, med(bare, "rate"), med(bare, "events"), "-"],
            ["bare MqttBus subscriber", bus_cap, med(bare_bus, "rate"), med(bare_bus, "events"), "-"],
            ["SecurityAnalyst ingest", m_rate, med(measured, "rate"), med(measured, "events"),
             med(measured, "alerts")]]
    print_table(f"auth events ({events} x {repeats} repeats, medians; capacity = events per CPU-second "
                "of the subscribing process, wall = as fast as the publisher sent)",
                ["side", "capacity/s", "wall/s", "received", "alerts"], rows)
    met = ratio >= TARGET_RATIO
    print(f"\nratio {ratio:.2f} (target >= {TARGET_RATIO:.2f}): {'met' if met else 'NOT met'}")
    write_result("security", results={"events_per_cpu_s": m_rate, "wall_events_per_s": med(measured, "rate"),
                                      "runs": measured},
                 baseline={"events_per_cpu_s": b_rate, "aiomqtt_events_per_cpu_s": aiomqtt_cap,
                           "mqttbus_events_per_cpu_s": bus_cap, "runs": {"aiomqtt": bare, "mqttbus": bare_bus}},
                 ratio=round(ratio, 3),
                 target=f">= {TARGET_RATIO:.0%} of the bare subscriber's rate", met=met)
    return 0


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.security", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--publish", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.publish:
        publish(args.publish, args.events, args.seed)
        return
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(main_async(args.events, args.repeats)))


if __name__ == "__main__":
    main()
