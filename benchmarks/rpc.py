"""Round-trip JSON-RPC calls through mosquitto: the SDK (ServiceClient ↔ ServiceRuntime over
MqttBus) against a bare aiomqtt echo doing the same request/response pattern.

Both sides run in this process on one event loop, against one broker started here, with the same
payload, concurrency and QoS (calls and replies published at QoS 1, subscriptions at QoS 0, as the
SDK does). Runs alternate; medians of the repeats are reported. Target: the SDK reaches at least
75% of the bare echo's calls/s.

    python -m benchmarks.rpc [--calls N --concurrency C --repeats R]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import orjson

from adapters.mqtt import MqttBus, MqttConfig
from adapters.processes import start_mosquitto
from benchmarks.common import median, print_table, quantile, write_result
from sdk.client import ServiceClient
from sdk.runtime import ServiceRuntime
from sdk.service import Service

TARGET_RATIO = 0.75
PARAMS = {"userId": "user-12345", "fields": ["name", "email", "department"], "limit": 10}
CallFn = Callable[[], Awaitable[Any]]


async def drive(call: CallFn, *, calls: int, concurrency: int) -> dict[str, float]:
    """``calls`` calls from ``concurrency`` workers; calls/s and latency quantiles (ms)."""
    latencies: list[float] = []
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {
        "calls_per_s": calls / elapsed,
        "p50_ms": quantile(latencies, 0.5) * 1000,
        "p99_ms": quantile(latencies, 0.99) * 1000,
    }


class BareEcho:
    """An aiomqtt responder and an aiomqtt requester: the least code that does request/response."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.service_topic = f"bench/bare/{uuid.uuid4().hex[:8]}"
        self.reply_topic = f"session/{uuid.uuid4().hex}/response"
        self.pending: dict[str, asyncio.Future[Any]] = {}
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> BareEcho:
        v5 = aiomqtt.ProtocolVersion.V5
        self.responder = await self._stack.enter_async_context(
            aiomqtt.Client(self.host, self.port, protocol=v5)
        )
        self.requester = await self._stack.enter_async_context(
            aiomqtt.Client(self.host, self.port, protocol=v5)
        )
        await self.responder.subscribe(self.service_topic, 0)
        await self.requester.subscribe(self.reply_topic, 0)
        self._tasks = [asyncio.create_task(self._respond()), asyncio.create_task(self._receive())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stack.aclose()

    async def _respond(self) -> None:
        sends: set[asyncio.Task[None]] = set()
        async for msg in self.responder.messages:
            doc = orjson.loads(msg.payload)
            reply = orjson.dumps({"jsonrpc": "2.0", "id": doc["id"], "result": doc["params"]})
            # Not awaited inline: a serial PUBACK wait per reply would make the baseline a strawman.
            task = asyncio.create_task(self.responder.publish(doc["replyTo"], reply, 1))
            sends.add(task)
            task.add_done_callback(sends.discard)

    async def _receive(self) -> None:
        async for msg in self.requester.messages:
            doc = orjson.loads(msg.payload)
            fut = self.pending.pop(doc["id"], None)
            if fut is not None and not fut.done():
                fut.set_result(doc["result"])

    async def call(self) -> Any:
        call_id = str(uuid.uuid4())
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = fut
        doc = {
            "jsonrpc": "2.0",
            "id": call_id,
            "method": "getUser",
            "params": PARAMS,
            "replyTo": self.reply_topic,
            "correlationId": call_id,
        }
        await self.requester.publish(self.service_topic, orjson.dumps(doc), 1)
        return await asyncio.wait_for(fut, 30)


def bench_service() -> Service:
    svc = Service(f"Bench-{uuid.uuid4().hex[:8]}")

    @svc.function("getUser")
    async def get_user(userId: str, fields: list[str], limit: int = 10) -> dict[str, Any]:
        return {"userId": userId, "fields": fields, "limit": limit}

    return svc


async def run_async(*, calls: int, concurrency: int, repeats: int) -> dict[str, Any]:
    broker = start_mosquitto()
    try:
        config = MqttConfig.from_url(broker.url)
        svc = bench_service()
        runtime = ServiceRuntime.connect(svc, broker_url=broker.url, cluster="bench")
        bus = MqttBus(config=config)
        sdk_runs: list[dict[str, float]] = []
        bare_runs: list[dict[str, float]] = []
        async with runtime, bus, BareEcho(config.host, config.port) as bare:
            await bus.wait_connected(10)
            client = ServiceClient(bus)
            await client.start()

            async def sdk_call() -> Any:
                return await client.call(svc.name, "getUser", PARAMS)

            await drive(sdk_call, calls=200, concurrency=concurrency)  # warm-up
            await drive(bare.call, calls=200, concurrency=concurrency)
            for r in range(repeats):
                order = [("sdk", sdk_call), ("bare", bare.call)]
                for label, fn in order if r % 2 == 0 else order[::-1]:
                    result = await drive(fn, calls=calls, concurrency=concurrency)
                    (sdk_runs if label == "sdk" else bare_runs).append(result)
    finally:
        broker.stop()

    def med(runs: list[dict[str, float]]) -> dict[str, float]:
        return {k: median([r[k] for r in runs]) for k in runs[0]}

    return {"sdk": med(sdk_runs), "bare": med(bare_runs), "sdk_runs": sdk_runs, "bare_runs": bare_runs}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = asyncio.run(run_async(calls=args.calls, concurrency=args.concurrency, repeats=args.repeats))
    sdk, bare = out["sdk"], out["bare"]
    ratio = sdk["calls_per_s"] / bare["calls_per_s"]
    print_table(
        f"RPC round trips through mosquitto ({args.calls} calls x {args.repeats}, concurrency {args.concurrency})",
        ["side", "calls/s", "p50 ms", "p99 ms"],
        [
            ["sdk (ServiceClient <-> ServiceRuntime)", sdk["calls_per_s"], sdk["p50_ms"], sdk["p99_ms"]],
            ["bare aiomqtt echo", bare["calls_per_s"], bare["p50_ms"], bare["p99_ms"]],
            ["ratio sdk/bare", ratio, "", ""],
        ],
    )
    params = {"calls": args.calls, "concurrency": args.concurrency, "repeats": args.repeats}
    write_result(
        "rpc",
        results={**sdk, **params, "runs": out["sdk_runs"]},
        baseline={**bare, "runs": out["bare_runs"]},
        ratio=round(ratio, 3),
        target=f"sdk calls/s >= {TARGET_RATIO:.0%} of a bare aiomqtt echo",
        met=ratio >= TARGET_RATIO,
    )


if __name__ == "__main__":
    main()
