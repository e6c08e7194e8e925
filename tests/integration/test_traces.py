"""Traces over the real broker: W3C ``traceparent`` travels as an MQTT 5 user property from a client
through OrderManagement to UserManagement (one trace, correct parent links), nothing is added while
tracing is off, and sfa-ops' own -32503 answers carry the caller's ``traceparent``.

Each participant has its own ``TracerProvider`` (as separate processes would), all exporting to one
in-memory exporter: the only way a trace can continue is through the message's user properties.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from adapters.mqtt import tracing
from adapters.mqtt.bus import Message
from protocol import topics
from sdk import ServiceClient, ServiceRuntime
from sdk.service import Service
from tests.support.broker import SessionBroker
from tests.support.mqtt import Collector, running_bus, wait_until
from tests.support.operations import ServiceProcess, operations

pytestmark = pytest.mark.integration


def provider(name: str, exporter: InMemorySpanExporter) -> TracerProvider:
    tp = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


def traceparent(msg: Message) -> str | None:
    found = [v for k, v in msg.user_properties if k == "traceparent"]
    assert len(found) <= 1
    return found[0] if found else None


def header_of(span: ReadableSpan) -> str:
    sc = span.context
    assert sc is not None
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def caller(url: str, tp: TracerProvider | None) -> AsyncIterator[ServiceClient]:
    """A platform client logged in as ``caller``: it may read its own session's answers only."""
    async with running_bus(url) as bus:
        client = ServiceClient(bus, session_id=bus.client_id, tracer_provider=tp)
        await client.start()
        yield client
        await client.close()


async def test_client_order_user_chain_is_one_trace(session_broker: SessionBroker, broker_url: str,
                                                    caller_url: str) -> None:
    """client → OrderManagement.getOrder → UserManagement.getUser: four spans of one trace, each the
    child of the one before (client, server, nested client, server); each call carries its client
    span's ``traceparent`` as a user property on the wire. A second call is a second trace."""
    exporter = InMemorySpanExporter()
    users, orders = Service(unique("UserManagement")), Service(unique("OrderManagement"))

    @users.function("getUser")
    async def get_user(userId: str) -> dict[str, Any]:
        return {"userId": userId, "name": "Ada"}

    def login(svc: Service) -> str:
        return session_broker.url(session_broker.service_principal(svc.name))

    user_rt = ServiceRuntime.connect(users, broker_url=login(users), cluster="itest",
                                     tracer_provider=provider(users.name, exporter))
    order_tp = provider(orders.name, exporter)
    order_rt = ServiceRuntime.connect(orders, broker_url=login(orders), cluster="itest", tracer_provider=order_tp)
    nested = ServiceClient(order_rt.bus, session_id=order_rt.bus.client_id, tracer_provider=order_tp)

    @orders.function("getOrder")
    async def get_order(orderId: str) -> dict[str, Any]:
        return {"orderId": orderId, "user": await nested.call(users.name, "getUser", {"userId": "u1"}, timeout=5)}

    wire = Collector()
    async with running_bus(broker_url) as tap:
        await tap.subscribe(topics.service_call(orders.name), wire)
        await tap.subscribe(topics.service_call(users.name), wire)
        async with user_rt, order_rt, caller(caller_url, provider("client", exporter)) as client:
            await nested.start()
            result = await client.call(orders.name, "getOrder", {"orderId": "o1"}, timeout=10)
            assert result == {"orderId": "o1", "user": {"userId": "u1", "name": "Ada"}}
            await wait_until(lambda: len(exporter.get_finished_spans()) == 4, 5)
            await wire.wait_for(2)
            spans = exporter.get_finished_spans()
            await client.call(orders.name, "getOrder", {"orderId": "o2"}, timeout=10)
            await wait_until(lambda: len(exporter.get_finished_spans()) == 8, 5)
            await nested.close()

    by = {(s.kind, s.name): s for s in spans}
    c1 = by[(SpanKind.CLIENT, f"{orders.name}/getOrder")]
    s1 = by[(SpanKind.SERVER, f"{orders.name}/getOrder")]
    c2 = by[(SpanKind.CLIENT, f"{users.name}/getUser")]
    s2 = by[(SpanKind.SERVER, f"{users.name}/getUser")]
    assert len({s.context.trace_id for s in spans if s.context}) == 1
    assert c1.parent is None
    for child, parent in ((s1, c1), (c2, s1), (s2, c2)):
        assert child.parent is not None and parent.context is not None
        assert child.parent.span_id == parent.context.span_id, (child.name, parent.name)
        assert child.parent.is_remote == (child.kind == SpanKind.SERVER)
    assert [s.resource.attributes[SERVICE_NAME] for s in (c1, s1, c2, s2)] == [
        "client", orders.name, orders.name, users.name]
    assert s2.attributes is not None and s2.attributes["rpc.method"] == "getUser"
    # On the wire: each call carried its client span's traceparent.
    assert {m.topic: traceparent(m) for m in wire.messages[:2]} == {
        topics.service_call(orders.name): header_of(c1), topics.service_call(users.name): header_of(c2)}
    second = [s for s in exporter.get_finished_spans()[4:] if s.context]
    assert len({s.context.trace_id for s in second}) == 1 and second[0].context.trace_id != c1.context.trace_id


async def test_no_trace_properties_while_tracing_is_off(session_broker: SessionBroker, broker_url: str,
                                                        caller_url: str) -> None:
    """No tracer provider anywhere (this process never sets a global one): calls carry no user
    properties at all and the chain still works."""
    users = Service(unique("UserManagement"))

    @users.function("getUser")
    async def get_user(userId: str) -> dict[str, Any]:
        return {"userId": userId}

    url = session_broker.url(session_broker.service_principal(users.name))
    wire = Collector()
    async with running_bus(broker_url) as tap, ServiceRuntime.connect(users, broker_url=url, cluster="itest"):
        await tap.subscribe(topics.service_call(users.name), wire)
        async with caller(caller_url, None) as client:
            assert await client.call(users.name, "getUser", {"userId": "u1"}, timeout=5) == {"userId": "u1"}
        [msg] = await wire.wait_for(1)
        assert msg.user_properties == ()


class OtlpReceiver(ThreadingHTTPServer):
    """A local OTLP/HTTP traces endpoint: keeps every ExportTraceServiceRequest posted to it."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
                    receiver.requests.append(ExportTraceServiceRequest.FromString(body))
                    self.send_response(200)
                else:
                    self.send_response(404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


async def test_spans_export_over_otlp_when_the_endpoint_is_set(broker_url: str, session_broker: SessionBroker,
                                                               caller_url: str) -> None:
    """``configure_tracing`` with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set: a traced call's client and
    server spans reach a real OTLP/HTTP endpoint (protobuf, ``/v1/traces``) under the service names."""
    users = Service(unique("UserManagement"))

    @users.function("getUser")
    async def get_user(userId: str) -> dict[str, Any]:
        return {"userId": userId}

    receiver = OtlpReceiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_port}"}
    client_tp = tracing.configure_tracing("client", environ=env, set_global=False)
    service_tp = tracing.configure_tracing(users.name, environ=env, set_global=False)
    assert client_tp is not None and service_tp is not None
    try:
        url = session_broker.url(session_broker.service_principal(users.name))
        async with ServiceRuntime.connect(users, broker_url=url, cluster="itest", tracer_provider=service_tp), \
                caller(caller_url, client_tp) as client:
            assert await client.call(users.name, "getUser", {"userId": "u1"}, timeout=5) == {"userId": "u1"}
        for tp in (client_tp, service_tp):
            assert await asyncio.to_thread(tp.force_flush, 5000)
    finally:
        client_tp.shutdown()
        service_tp.shutdown()
        receiver.shutdown()
        receiver.server_close()
    got = {}
    for req in receiver.requests:
        for rs in req.resource_spans:
            name = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
            for ss in rs.scope_spans:
                got.update({(name, sp.name): sp for sp in ss.spans})
    c, s = got[("client", f"{users.name}/getUser")], got[(users.name, f"{users.name}/getUser")]
    assert c.trace_id == s.trace_id and s.parent_span_id == c.span_id


@pytest.mark.usefixtures("ray_session")
async def test_unavailable_answers_carry_the_callers_traceparent(broker_url: str, caller_url: str,
                                                                 tmp_path: Path) -> None:
    """A service crashes with traced calls pending: sfa-ops answers each -32503 on the reply topic
    with that call's own ``traceparent`` as a user property (read by a raw subscriber); the client's
    spans end in error with code -32503."""
    exporter = InMemorySpanExporter()
    svc_name = unique("Inventory")
    procs: list[ServiceProcess] = []
    try:
        async with operations(broker_url, tmp_path, policies={
                "observation.yaml": "call_timeout: 30s\ntick: 100ms\n"}) as ops, \
                caller(caller_url, provider("client", exporter)) as client, \
                running_bus(broker_url) as tap:
            calls, answers = Collector(), Collector()
            await tap.subscribe(topics.service_call(svc_name), calls)
            await tap.subscribe(client.reply_topic, answers)
            procs.append(ServiceProcess(broker_url, ops.cluster, svc_name).start())
            assert await client.call(svc_name, "ok", {}, timeout=5) == {"ok": True, "service": svc_name}
            await ops.watcher.wait(lambda w: any(svc_name in h.get("services", {}) for h in w.on("/health")),
                                   10, f"{svc_name} in the health summary")
            pending = [asyncio.create_task(client.call_raw(svc_name, "hang", {}, timeout=20)) for _ in range(3)]
            await calls.wait_for(4)
            procs[0].kill()
            docs = await asyncio.wait_for(asyncio.gather(*pending), 10)
            assert {d["error"]["code"] for d in docs} == {-32503}
            got = await answers.wait_for(4)
    finally:
        for p in procs:
            p.stop()
    sent = {doc["id"]: traceparent(m) for m in calls.messages if (doc := orjson.loads(m.payload))["method"] == "hang"}
    refused = [(orjson.loads(m.payload), m) for m in got if "error" in orjson.loads(m.payload)]
    assert len(refused) == 3 and all(doc["error"]["code"] == -32503 for doc, _ in refused)
    answered = {doc["id"]: traceparent(m) for doc, m in refused}
    assert answered == sent and all(sent.values()) and len(set(sent.values())) == 3
    hung = [s for s in exporter.get_finished_spans() if s.name == f"{svc_name}/hang"]
    assert sorted(header_of(s) for s in hung) == sorted(v for v in sent.values() if v)
    assert all(s.attributes and s.attributes["rpc.jsonrpc.error_code"] == -32503 for s in hung)
