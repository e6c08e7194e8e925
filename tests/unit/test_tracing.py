"""W3C Trace Context over MQTT 5 user properties (``adapters.mqtt.tracing``), and sfa-ops' -32503
answers carrying the caller's trace (``ObserverBody`` without Ray: its bus a ``CapturingBus`` that
records the answers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from actors.clock import FakeClock
from actors.observer import ObserverBody
from actors.settings import OperateSettings
from adapters.mqtt import tracing
from adapters.mqtt.bus import Message
from adapters.testing.doubles import CapturingBus
from policies.health.monitor import BreakerView, MonitorResult, Unavailable
from policies.observation.config import ObservationPolicy

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp, exporter


def test_inject_then_extract_is_the_same_span_context() -> None:
    """A span's context written as user properties reads back as the same trace and span id,
    remote and sampled; tracestate travels alongside."""
    tp, _ = provider()
    with tp.get_tracer("t").start_as_current_span("client") as span:
        props = tracing.inject()
    assert [k for k, _ in props] == ["traceparent"]
    sc = span.get_span_context()
    assert props[0][1] == f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
    ctx = tracing.extract([("other", "x"), *props, ("tracestate", "vendor=abc")])
    assert ctx is not None
    got = trace.get_current_span(ctx).get_span_context()
    assert (got.trace_id, got.span_id, got.is_remote, got.trace_flags.sampled) == (sc.trace_id, sc.span_id,
                                                                                   True, True)
    assert got.trace_state.get("vendor") == "abc"
    assert tracing.inject(tracing.extract([("traceparent", PARENT), ("tracestate", "vendor=abc")])) == [
        ("traceparent", PARENT), ("tracestate", "vendor=abc")]


def test_nothing_to_inject_without_a_span() -> None:
    assert tracing.inject() == []


def test_getter_and_setter_over_pairs() -> None:
    carrier: list[tuple[str, str]] = []
    tracing.SETTER.set(carrier, "traceparent", PARENT)
    assert carrier == [("traceparent", PARENT)]
    assert tracing.GETTER.get([("a", "1"), ("traceparent", PARENT), ("a", "2")], "a") == ["1", "2"]
    assert tracing.GETTER.get([("Traceparent", PARENT)], "traceparent") is None  # MQTT names: case-sensitive
    assert tracing.GETTER.keys([("a", "1"), ("b", "2")]) == ["a", "b"]


def test_malformed_or_oversized_trace_headers_carry_no_context() -> None:
    """Bad versions, zero ids, wrong lengths, a tracestate alone, values over the caps: no parent."""
    for props in ([("traceparent", "garbage")],
                  [("traceparent", "00-00000000000000000000000000000000-b7ad6b7169203331-01")],
                  [("traceparent", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
                  [("traceparent", PARENT + "0")],
                  [("tracestate", "vendor=abc")],
                  []):
        assert tracing.extract(props) is None, props
    assert tracing.trace_headers([("tracestate", "x" * 513), ("traceparent", PARENT)]) == (("traceparent", PARENT),)
    # the first traceparent wins; later ones cannot replace it
    assert tracing.trace_headers([("traceparent", PARENT), ("traceparent", "x")]) == (("traceparent", PARENT),)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["traceparent", "tracestate", "x"]) | st.text(max_size=12),
                          st.text(max_size=80) | st.just(PARENT) | st.just("y" * 600)), max_size=12))
def test_arbitrary_user_properties_never_raise(props: list[tuple[str, str]]) -> None:
    """Any user properties: at most one bounded traceparent and tracestate kept, no exception."""
    kept = tracing.trace_headers(props)
    assert len(kept) <= 2 and all(len(v) <= 512 for _, v in kept)
    assert not kept or kept[0][0] == "traceparent"
    tracing.extract(props)


def test_tracer_source_is_off_without_a_provider() -> None:
    """No injected provider and no global one (the test process never sets it): no tracer."""
    assert tracing.TracerSource("t").get() is None
    tp, _ = provider()
    assert tracing.TracerSource("t", tp).get() is not None


def test_configure_tracing_needs_an_endpoint_or_an_exporter() -> None:
    assert tracing.configure_tracing("svc", environ={}, set_global=False) is None
    tp = tracing.configure_tracing("svc", environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
                                   set_global=False)
    assert tp is not None and tp.resource.attributes["service.name"] == "svc"
    tp.shutdown()
    named = tracing.configure_tracing("svc", exporter=InMemorySpanExporter(), set_global=False,
                                      environ={"OTEL_SERVICE_NAME": "orders"})
    assert named is not None and named.resource.attributes["service.name"] == "orders"
    named.shutdown()


def test_otlp_endpoint_and_ray_environment() -> None:
    assert tracing.otlp_endpoint({}) is None
    assert tracing.otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}) == "http://c:4318/v1/traces"
    assert tracing.otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x"}) == "http://t/x"
    assert tracing.ray_runtime_env({"PATH": "/bin"}) is None
    assert tracing.ray_runtime_env({"PATH": "/bin", "OTEL_SERVICE_NAME": "ops"}) == {
        "env_vars": {"OTEL_SERVICE_NAME": "ops"}}


def observer(tp: TracerProvider) -> ObserverBody:
    s = OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id="c", services=("Users",))
    # its bus records what the real bus would send
    return ObserverBody(settings=s, clock=FakeClock(), bus=CapturingBus(), policy=ObservationPolicy(),
                        tracer_provider=tp)


def call(i: int, props: tuple[tuple[str, str], ...] = ()) -> Message:
    return Message("service/Users", json.dumps({"jsonrpc": "2.0", "id": i, "method": "getUser",
                                                "replyTo": f"session/s{i}/response"}).encode(),
                   user_properties=props)


def queued_properties(c: ObserverBody) -> dict[str, list[tuple[str, str]]]:
    return {o.topic: list(o.user_properties) for o in c.bus.published}


def test_unavailable_answers_carry_the_callers_trace_and_record_a_span() -> None:
    """Pending calls answered -32503 when their service goes down: each answer carries its own
    call's traceparent/tracestate (none for an untraced call) and one sfa-ops SERVER span, child of
    the caller's span, records a ``service_unavailable`` event."""
    tp, exporter = provider()
    c = observer(tp)
    c.on_call(call(1, (("traceparent", PARENT), ("tracestate", "v=1"), ("other", "x"))))
    c.on_call(call(2))
    result = MonitorResult(service="Users", view=BreakerView("open", 0.0, 0),
                           unavailable=Unavailable("no_running_pods", None, 30.0))
    assert c.apply_results([result], now=c.clock.now()) == 2
    props = queued_properties(c)
    assert props["session/s1/response"] == [("traceparent", PARENT), ("tracestate", "v=1")]
    assert props["session/s2/response"] == []
    [span] = exporter.get_finished_spans()
    assert span.kind == SpanKind.SERVER and span.parent is not None
    assert (f"{span.context.trace_id:032x}", f"{span.parent.span_id:016x}") == (PARENT[3:35], PARENT[36:52])
    assert [e.name for e in span.events] == ["service_unavailable"]
    assert span.events[0].attributes == {"sfa.reason": "no_running_pods", "sfa.retry_after_s": 30.0}
    assert span.attributes is not None and span.attributes["rpc.jsonrpc.error_code"] == -32503


def test_circuit_open_answer_carries_the_callers_trace() -> None:
    tp, exporter = provider()
    c = observer(tp)
    c.correlator.set_breaker("Users", "forced_open", 0.0, 0, 1)
    c.on_call(call(3, (("traceparent", PARENT),)))
    assert queued_properties(c) == {"session/s3/response": [("traceparent", PARENT)]}
    [span] = exporter.get_finished_spans()
    assert [e.name for e in span.events] == ["circuit_open"]
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT[36:52]


def test_global_provider_is_seen_at_once_after_configure_tracing() -> None:
    """In a fresh interpreter (a global provider can be set once per process): a TracerSource that
    found tracing off sees the provider ``configure_tracing`` sets at once, without waiting for its
    once-a-second re-check."""
    code = (
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "from adapters.mqtt import tracing\n"
        "src = tracing.TracerSource('t')\n"
        "assert src.get() is None and src.get() is None\n"
        "tp = tracing.configure_tracing('svc', exporter=InMemorySpanExporter(), environ={})\n"
        "assert tp is not None and src.get() is not None\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "ok", out.stderr
