"""Running one instance of a service on the bus: shared subscription, concurrent calls, presence.

::

    runtime = ServiceRuntime.connect(service, broker_url="mqtt://…", cluster="prod")
    async with runtime:
        await runtime.serve_forever()

- Instances of a service share its calls through ``$share/{Service}/service/{Service}``.
- Each call runs in its own task (at most ``max_concurrency`` at once) so a slow function never
  holds up the others; the bus handler only parses and starts the task. At the limit the handler
  waits for a slot, which holds back the bus's dispatch (back-pressure instead of unbounded tasks).
- Presence: ``system/{cluster}/presence/{Service}/{instance}`` is published retained ``online`` on
  start (and again after every reconnect), is the connection's Last Will with ``offline``
  retained, and is published ``offline`` on a graceful stop.
- Traces: while a tracer provider is configured (``tracer_provider``, or the global one set by
  ``adapters.mqtt.tracing.configure_tracing``) each call runs in a SERVER span whose parent is the
  ``traceparent`` user property of the call, and that span is current while the function runs, so
  calls it makes through a ``ServiceClient`` continue the same trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from adapters.mqtt import tracing
from adapters.mqtt.bus import LastWill, Message, MqttBus, MqttBusError, MqttConfig
from protocol import topics
from protocol.base import rfc3339_from_epoch
from sdk.client import SUBSCRIBE_QOS
from sdk.executor import EnforcementCheck, Executor, Job, Reply
from sdk.service import Service

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENCY = 256
_PRESENCE_CHECK_S = 0.5


def default_instance_id() -> str:
    """``{host}-{pid}-{random}``: unique per process, readable in presence topics."""
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def presence_will(cluster: str, service: str, instance: str) -> LastWill:
    """The Last Will a service instance's bus must be created with."""
    return LastWill(topics.presence(cluster, service, instance), {"status": "offline"}, qos=1, retain=True)


class ServiceRuntime:
    """Serves ``service`` over ``bus``. Use :meth:`connect` to get a bus with the Last Will set."""

    def __init__(
        self,
        service: Service,
        *,
        bus: MqttBus,
        cluster: str,
        instance: str,
        owns_bus: bool = False,
        enforcement: EnforcementCheck | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        qos: int = 1,
        clock: Callable[[], float] = time.time,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.service = service
        self.bus = bus
        self.cluster = cluster
        self.instance = instance
        self.presence_topic = topics.presence(cluster, service.name, instance)
        self.executor = Executor(service, enforcement=enforcement, clock=clock)
        self._owns_bus = owns_bus
        self._max = max_concurrency
        self._qos = qos
        self._clock = clock
        self._running = 0
        self._slot_free = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._started = False
        self._tracing = tracing.TracerSource("sfa_sdk.runtime", tracer_provider)

    @classmethod
    def connect(
        cls,
        service: Service,
        *,
        broker_url: str,
        cluster: str,
        instance: str | None = None,
        enforcement: EnforcementCheck | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        qos: int = 1,
        tracer_provider: trace.TracerProvider | None = None,
        **bus_kwargs: Any,
    ) -> ServiceRuntime:
        """A runtime with its own bus, whose Last Will is this instance's offline presence."""
        instance = instance or default_instance_id()
        bus = MqttBus(
            config=MqttConfig.from_url(broker_url),
            client_id=f"{service.name}-{instance}"[:64],
            will=presence_will(cluster, service.name, instance),
            **bus_kwargs,
        )
        return cls(
            service,
            bus=bus,
            cluster=cluster,
            instance=instance,
            owns_bus=True,
            enforcement=enforcement,
            max_concurrency=max_concurrency,
            qos=qos,
            tracer_provider=tracer_provider,
        )

    # ------------------------------------------------------------ lifecycle

    async def start(self, *, connect_timeout: float = 10.0) -> None:
        """Subscribe (shared) and announce presence; with an owned bus, start and connect it."""
        if self._started:
            return
        self._started = True
        if self._owns_bus:
            await self.bus.start()
            await self.bus.wait_connected(connect_timeout)
        name = self.service.name
        await self.bus.subscribe(
            topics.service_call(name), self._on_call, qos=SUBSCRIBE_QOS, shared_group=name
        )
        await self._announce_online()
        with contextlib.suppress(MqttBusError):  # started means announced: retained at the broker
            await self.bus.flush(connect_timeout)
        self._watcher = asyncio.create_task(self._keep_presence(), name=f"presence:{name}:{self.instance}")

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop taking calls, let running ones finish for up to ``grace`` s, announce offline."""
        if not self._started or self._stopped.is_set():
            return
        self._stopped.set()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        with contextlib.suppress(MqttBusError):
            await self.bus.unsubscribe(topics.service_call(self.service.name), shared_group=self.service.name)
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning(
                    "%s: %d call(s) still running after %.1fs; cancelled",
                    self.service.name,
                    len(pending),
                    grace,
                )
        with contextlib.suppress(MqttBusError):
            await self.bus.publish(self.presence_topic, self._presence("offline"), qos=1, retain=True)
        if self._owns_bus:
            await self.bus.stop(flush_timeout=2.0)
        else:
            with contextlib.suppress(MqttBusError):
                await self.bus.flush(2.0)

    async def __aenter__(self) -> ServiceRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Wait until :meth:`stop` is called (or the task is cancelled)."""
        await self._stopped.wait()

    def stats(self) -> dict[str, int]:
        """Executor counters (received, ok, malformed, error<code>, dropped…) and calls running."""
        return {**self.executor.counts, "running": self._running}

    # ------------------------------------------------------------ calls

    def _on_call(self, msg: Message) -> Awaitable[None] | None:
        # Runs in the bus's sequential dispatcher: parse, then hand the work to a task at once.
        prepared = self.executor.prepare(
            msg.payload, response_topic=msg.response_topic, correlation_data=msg.correlation_data
        )
        if prepared is None:
            return None
        if isinstance(prepared, Reply):
            self._send(prepared)
            return None
        # With tracing off (no provider) the call's user properties are not even looked at.
        tracer = self._tracing.get()
        run = self._run(prepared) if tracer is None else self._run_traced(
            prepared, tracer, tracing.extract(msg.user_properties))
        if self._running >= self._max:
            return self._start_when_free(run)
        self._start(run)
        return None

    async def _start_when_free(self, run: Coroutine[Any, Any, None]) -> None:
        try:
            while self._running >= self._max:
                self._slot_free.clear()
                await self._slot_free.wait()
        except BaseException:
            run.close()  # never started: no "never awaited" warning
            raise
        self._start(run)

    def _start(self, run: Coroutine[Any, Any, None]) -> None:
        self._running += 1
        task = asyncio.create_task(run)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Job) -> None:
        try:
            self._send(await self.executor.run(job))
        finally:
            self._running -= 1
            self._slot_free.set()

    async def _run_traced(self, job: Job, tracer: trace.Tracer, parent: Context | None) -> None:
        ctx = job.ctx
        span = tracer.start_span(
            f"{ctx.service}/{ctx.method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "jsonrpc", "rpc.service": ctx.service, "rpc.method": ctx.method},
        )
        # What trace.use_span(span, end_on_exit=True) does without its exception bookkeeping
        # (turned off here anyway): the span is current while the function runs.
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            reply = await self.executor.run(job)
            if reply.code is not None:
                span.set_attribute("rpc.jsonrpc.error_code", reply.code)
                span.set_status(Status(StatusCode.ERROR))
            self._send(reply)
        finally:
            otel_context.detach(token)
            span.end()
            self._running -= 1
            self._slot_free.set()

    def _send(self, reply: Reply) -> None:
        try:
            self.bus.publish_nowait(
                reply.topic, reply.payload, qos=self._qos, correlation_data=reply.correlation_data
            )
        except (MqttBusError, ValueError) as exc:
            logger.warning("%s: reply to %r not sent: %s", self.service.name, reply.topic[:100], exc)

    # ------------------------------------------------------------ presence

    def _presence(self, status: str) -> dict[str, Any]:
        doc: dict[str, Any] = {"status": status, "timestamp": rfc3339_from_epoch(self._clock())}
        if status == "online":
            doc["instance"] = self.instance
            doc["functions"] = sorted(self.service.functions)
            doc["cacheable"] = self.service.cacheable_methods
        return doc

    async def _announce_online(self) -> None:
        await self.bus.publish(self.presence_topic, self._presence("online"), qos=1, retain=True)

    async def _keep_presence(self) -> None:
        """Re-announce online after a reconnect: our Last Will may have fired meanwhile."""
        seen = self.bus.stats().get("reconnects", 0)
        while True:
            await asyncio.sleep(_PRESENCE_CHECK_S)
            now = self.bus.stats().get("reconnects", 0)
            if now != seen and self.bus.connected:
                seen = now
                try:
                    await self._announce_online()
                except MqttBusError as exc:
                    logger.warning("%s: presence not re-announced: %s", self.service.name, exc)
