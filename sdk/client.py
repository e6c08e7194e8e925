"""Calling services (seed: ``ServiceClient``): many concurrent calls over one bus connection.

::

    client = ServiceClient(bus)
    await client.start()
    user = await client.call("UserManagement", "getUser", {"userId": "u1"})

Each call is published on ``service/{Service}`` with ``replyTo = session/{sid}/response`` and a
fresh id; one subscription to that topic receives every answer, matched to its waiting future by
id. An error answer raises the ``ServiceCallError`` subclass of its code (``sdk.errors``); no
answer within ``timeout`` raises ``ServiceTimeoutException(local=True)``.

Traces: while a tracer provider is configured (passed as ``tracer_provider``, or set globally by
``adapters.mqtt.tracing.configure_tracing``) every call is a CLIENT span, child of the current span,
whose W3C ``traceparent``/``tracestate`` travel as MQTT 5 user properties of the call. Without one
the call carries no trace properties and builds no span.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from adapters.mqtt import tracing
from adapters.mqtt.bus import Message, MqttBus
from protocol import topics
from protocol.rpc import UserContext
from sdk.errors import ServiceTimeoutException, exception_for

logger = logging.getLogger(__name__)

DEFAULT_CALL_TIMEOUT = 30.0
# Calls and replies are *published* at QoS 1 (the bus queues them across a reconnect) but
# *subscribed* at QoS 0: with clean sessions a QoS 1 delivery buys nothing across reconnects, and
# the PUBACK it makes us send right before our next publish stalls that publish in Nagle's
# algorithm against the broker's delayed ACK (~40 ms a round trip, measured).
SUBSCRIBE_QOS = 0
Params = Mapping[str, Any] | list[Any] | None


class ServiceClient:
    """JSON-RPC calls over a started ``MqttBus`` under one session id."""

    def __init__(
        self,
        bus: MqttBus,
        *,
        session_id: str | None = None,
        qos: int = 1,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.bus = bus
        self._tracing = tracing.TracerSource("sfa_sdk.client", tracer_provider)
        self.session_id = session_id or uuid.uuid4().hex
        self.reply_topic = topics.session_response(self.session_id)
        self._qos = qos
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._started = False
        self.counts = {"sent": 0, "answered": 0, "timed_out": 0, "late_or_unknown": 0, "malformed": 0}

    async def start(self) -> None:
        """Subscribe to this session's response topic (idempotent)."""
        if not self._started:
            await self.bus.subscribe(self.reply_topic, self._on_response, qos=SUBSCRIBE_QOS)
            self._started = True

    async def __aenter__(self) -> ServiceClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Unsubscribe; pending calls fail with a local timeout."""
        for call_id, fut in list(self._pending.items()):
            if not fut.done():
                fut.set_exception(
                    ServiceTimeoutException(f"call {call_id} abandoned: client closed", local=True)
                )
        self._pending.clear()
        if self._started:
            await self.bus.unsubscribe(self.reply_topic)
            self._started = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def call(
        self,
        service: str,
        method: str,
        params: Params = None,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        user_context: UserContext | Mapping[str, Any] | None = None,
        correlation_id: str | None = None,
    ) -> Any:
        """Call ``service.method(params)`` and return its result; raises ``ServiceCallError``."""
        response = await self.call_raw(
            service, method, params, timeout=timeout, user_context=user_context, correlation_id=correlation_id
        )
        error = response.get("error")
        if error is not None:
            raise exception_for(error if isinstance(error, Mapping) else {}, service=service, method=method)
        return response.get("result")

    async def call_raw(
        self,
        service: str,
        method: str,
        params: Params = None,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        user_context: UserContext | Mapping[str, Any] | None = None,
        correlation_id: str | None = None,
    ) -> dict[str, Any]:
        """Like :meth:`call` but returns the whole response document (result or error)."""
        if not self._started:
            await self.start()
        call_id = str(uuid.uuid4())
        doc: dict[str, Any] = {
            "jsonrpc": "2.0",
            "id": call_id,
            "method": method,
            "params": params if params is not None else {},
            "replyTo": self.reply_topic,
            "correlationId": correlation_id or call_id,
        }
        if user_context is not None:
            doc["userContext"] = (
                user_context.to_wire() if isinstance(user_context, UserContext) else dict(user_context)
            )
        tracer = self._tracing.get()
        if tracer is None:
            return await self._exchange(service, method, call_id, doc, timeout, None)
        span = tracer.start_span(
            f"{service}/{method}",
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "jsonrpc", "rpc.service": service, "rpc.method": method},
        )
        try:
            response = await self._exchange(
                service, method, call_id, doc, timeout, tracing.span_context_headers(span.get_span_context())
            )
            error = response.get("error")
            code = error.get("code") if isinstance(error, Mapping) else None
            if isinstance(code, int):
                span.set_attribute("rpc.jsonrpc.error_code", code)
                span.set_status(Status(StatusCode.ERROR))
            return response
        except ServiceTimeoutException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, "no answer in time"))
            raise
        finally:
            span.end()

    async def _exchange(
        self,
        service: str,
        method: str,
        call_id: str,
        doc: dict[str, Any],
        timeout: float,
        user_properties: list[tuple[str, str]] | None,
    ) -> dict[str, Any]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = fut
        try:
            await self.bus.publish(
                topics.service_call(service), orjson.dumps(doc), qos=self._qos, user_properties=user_properties
            )
            self.counts["sent"] += 1
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self.counts["timed_out"] += 1
            raise ServiceTimeoutException(
                f"Service {service} did not respond within {timeout:g}s",
                local=True,
                service=service,
                method=method,
            ) from None
        finally:
            self._pending.pop(call_id, None)

    def _on_response(self, msg: Message) -> None:
        try:
            doc = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            self.counts["malformed"] += 1
            logger.warning("session %s: a response that is not JSON was dropped", self.session_id)
            return
        call_id = doc.get("id") if isinstance(doc, dict) else None
        fut = self._pending.get(call_id) if isinstance(call_id, str) else None
        if fut is None:
            self.counts["late_or_unknown"] += 1
            return
        if not fut.done():
            self.counts["answered"] += 1
            fut.set_result(doc)
