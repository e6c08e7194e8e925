"""Round-trip JSON-RPC calls through mosquitto: the SDK (ServiceClient ↔ ServiceRuntime over
MqttBus) against a bare aiomqtt echo doing the same request/response pattern.

Both sides run in this process on one event loop, against one broker started here, with the same
payload, concurrency and QoS (calls and replies published at QoS 1, subscriptions at QoS 0, as the
SDK does). Runs alternate; medians of the repeats are reported. Target: the SDK reaches at least
75% of the bare echo's calls/s.

Tracing on is measured in the same run: a second client and runtime pair, each with a real
``TracerProvider`` and a ``BatchSpanProcessor`` to an exporter that drops the spans (so export I/O
is not measured, everything up to it is: spans, attributes, W3C user properties on each call,
context extraction). Target: tracing on costs at most 10 % of the calls/s. A third pair samples
10 % of traces (``parentbased_traceidratio``, as ``OTEL_TRACES_SAMPLER`` would set it): the others
still carry a ``traceparent`` but record nothing.

    python -m benchmarks.rpc [--calls N --concurrency C --repeats R]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import orjson
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

from adapters.mqtt.bus import MqttBus, MqttConfig
from adapters.runtime.processes import start_mosquitto
from benchmarks.common import median, quantile, write_result
from drivers.tables import print_table
from sdk.client import ServiceClient
from sdk.runtime import ServiceRuntime
from sdk.service import Service

TARGET_RATIO = 0.75
TRACING_TARGET = 0.90
SAMPLED = 0.1
PARAMS = {"userId": "user-12345", "fields": ["name", "email", "department"], "limit": 10}
CallFn = Callable[[], Awaitable[Any]]


async def drive(call: CallFn, *, calls: int, concurrency: int) -> dict[str, float]:
    """``calls`` calls from ``concurrency`` workers; calls/s, latency quantiles (ms), this
    process's CPU time per call (µs: both ends of the SDK run here, the broker does not) and the
    part of it spent in the cyclic garbage collector (µs a call: spans are short-lived containers)."""
    latencies: list[float] = []
    remaining = calls
    gc_time, gc_start = 0.0, 0.0

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        nonlocal gc_time, gc_start
        if phase == "start":
            gc_start = time.perf_counter()
        else:
            gc_time += time.perf_counter() - gc_start

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    gc.callbacks.append(on_gc)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        gc.callbacks.remove(on_gc)
    elapsed = time.perf_counter() - start
    return {
        "calls_per_s": calls / elapsed,
        "cpu_us_per_call": (time.process_time() - cpu) / calls * 1e6,
        "gc_us_per_call": gc_time / calls * 1e6,
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


class CountingExporter(SpanExporter):
    """Receives the batches and drops them (counts spans): no export I/O in the measurement."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Any) -> SpanExportResult:
        batch: list[ReadableSpan] = list(spans)
        self.spans += len(batch)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def traced_provider(exporter: CountingExporter, sampled: float = 1.0) -> TracerProvider:
    sampler = ParentBased(TraceIdRatioBased(sampled)) if sampled < 1.0 else ParentBased(ALWAYS_ON)
    tp = TracerProvider(sampler=sampler)
    tp.add_span_processor(BatchSpanProcessor(exporter))
    return tp


def bench_service() -> Service:
    svc = Service(f"Bench-{uuid.uuid4().hex[:8]}")

    @svc.function("getUser")
    async def get_user(userId: str, fields: list[str], limit: int = 10) -> dict[str, Any]:
        return {"userId": userId, "fields": fields, "limit": limit}

    return svc


async def run_async(*, calls: int, concurrency: int, repeats: int) -> dict[str, Any]:
    broker = start_mosquitto()
    exporter = CountingExporter()
    # label -> fraction of traces sampled (None: tracing off); each side has its own client and
    # service, the traced ones each with their own provider (as two processes would).
    sides = {"sdk": None, "traced": 1.0, "sampled": SAMPLED}
    providers = {label: (traced_provider(exporter, f), traced_provider(exporter, f))
                 for label, f in sides.items() if f is not None}
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in (*sides, "bare")}
    try:
        config = MqttConfig.from_url(broker.url)
        async with contextlib.AsyncExitStack() as stack:
            order: list[tuple[str, CallFn]] = []
            for label in sides:
                client_tp, service_tp = providers.get(label, (None, None))
                svc = bench_service()
                await stack.enter_async_context(ServiceRuntime.connect(
                    svc, broker_url=broker.url, cluster="bench", tracer_provider=service_tp))
                bus = await stack.enter_async_context(MqttBus(config=config))
                await bus.wait_connected(10)
                client = ServiceClient(bus, tracer_provider=client_tp)
                await client.start()
                order.append((label, functools.partial(client.call, svc.name, "getUser", PARAMS)))
            bare = await stack.enter_async_context(BareEcho(config.host, config.port))
            order.append(("bare", bare.call))
            for _, fn in order:  # warm-up
                await drive(fn, calls=200, concurrency=concurrency)
            for r in range(repeats):
                k = r % len(order)
                for label, fn in order[k:] + order[:k]:  # rotate: no side always runs first
                    runs[label].append(await drive(fn, calls=calls, concurrency=concurrency))
    finally:
        broker.stop()
        for pair in providers.values():
            for tp in pair:
                tp.shutdown()

    def med(label: str) -> dict[str, float]:
        return {k: median([r[k] for r in runs[label]]) for k in runs[label][0]}

    return {"medians": {label: med(label) for label in runs}, "runs": runs, "spans_exported": exporter.spans}


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
    m = out["medians"]
    sdk, bare, traced, sampled = m["sdk"], m["bare"], m["traced"], m["sampled"]
    ratio = sdk["calls_per_s"] / bare["calls_per_s"]
    tracing_ratio = traced["calls_per_s"] / sdk["calls_per_s"]
    sampled_ratio = sampled["calls_per_s"] / sdk["calls_per_s"]
    print_table(
        f"RPC round trips through mosquitto ({args.calls} calls x {args.repeats}, concurrency {args.concurrency})",
        ["side", "calls/s", "p50 ms", "p99 ms", "CPU µs/call", "GC µs/call"],
        [
            *([label, r["calls_per_s"], r["p50_ms"], r["p99_ms"], r["cpu_us_per_call"], r["gc_us_per_call"]]
              for label, r in (
                ("sdk (ServiceClient <-> ServiceRuntime)", sdk),
                ("sdk, tracing on (2 spans a call)", traced),
                (f"sdk, tracing on, {SAMPLED:.0%} of traces sampled", sampled),
                ("bare aiomqtt echo", bare))),
            ["ratio sdk/bare", ratio, "", "", "", ""],
            ["ratio tracing on/off", tracing_ratio, "", "", "", ""],
            [f"ratio tracing {SAMPLED:.0%} sampled/off", sampled_ratio, "", "", "", ""],
        ],
    )
    print(f"spans exported: {out['spans_exported']}")
    params = {"calls": args.calls, "concurrency": args.concurrency, "repeats": args.repeats}
    runs = out["runs"]
    write_result(
        "rpc",
        results={**sdk, **params, "runs": runs["sdk"],
                 "tracing": {**traced, "runs": runs["traced"], "ratio_to_off": round(tracing_ratio, 3),
                             "target": f"tracing on >= {TRACING_TARGET:.0%} of tracing off calls/s",
                             "met": tracing_ratio >= TRACING_TARGET},
                 "tracing_sampled": {**sampled, "sampled": SAMPLED, "runs": runs["sampled"],
                                     "ratio_to_off": round(sampled_ratio, 3)}},
        baseline={**bare, "runs": runs["bare"]},
        ratio=round(ratio, 3),
        target=f"sdk calls/s >= {TARGET_RATIO:.0%} of a bare aiomqtt echo",
        met=ratio >= TARGET_RATIO,
    )


if __name__ == "__main__":
    main()
