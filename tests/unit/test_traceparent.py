"""The ``traceparent`` codec of ``adapters.mqtt.tracing`` against OpenTelemetry's own
``TraceContextTextMapPropagator``: on any user properties, valid or not, ``extract`` finds the same
remote span context the propagator finds (after the same length caps), and ``inject`` writes the
same properties the propagator writes."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from adapters.mqtt import tracing

OTEL = TraceContextTextMapPropagator()
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
HEX = "0123456789abcdef"


def otel_extract(props: Sequence[tuple[str, str]]) -> SpanContext | None:
    """What the OTel propagator reads from the headers ``trace_headers`` keeps."""
    headers = tracing.trace_headers(props)
    ctx = OTEL.extract(headers, getter=tracing.GETTER)
    sc = trace.get_current_span(ctx).get_span_context()
    return sc if sc.is_valid else None


def otel_inject(sc: SpanContext) -> list[tuple[str, str]]:
    carrier: list[tuple[str, str]] = []
    OTEL.inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(sc)), setter=tracing.SETTER)
    return carrier


def key(sc: SpanContext | None) -> object:
    if sc is None:
        return None
    return (sc.trace_id, sc.span_id, sc.is_remote, int(sc.trace_flags), sc.trace_state.to_header())


def hex_text(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=HEX, min_size=n, max_size=n)


# Near-valid values: each field from valid hex, uppercase, zeros, or junk; separators usually '-'.
fields = st.tuples(
    hex_text(2) | st.sampled_from(["00", "01", "fe", "ff", "FF", "0g", " 0"]),
    hex_text(32) | st.just("0" * 32) | hex_text(32).map(str.upper) | st.text(min_size=31, max_size=33),
    hex_text(16) | st.just("0" * 16) | hex_text(16).map(str.upper) | st.text(min_size=15, max_size=17),
    hex_text(2) | st.sampled_from(["00", "01", "ff", "0G", "+1", "_1"]),
    st.lists(st.sampled_from(["-", "-", "-", "_", " ", ""]), min_size=3, max_size=3),
    st.sampled_from(["", "", " ", "\t", "\n", "-", "-00", "0"]),
    st.sampled_from(["", "", " ", "\t"]),
)


@st.composite
def traceparents(draw: st.DrawFn) -> str:
    version, trace_id, span_id, flags, seps, suffix, prefix = draw(fields)
    return f"{prefix}{version}{seps[0]}{trace_id}{seps[1]}{span_id}{seps[2]}{flags}{suffix}"


tracestates = st.none() | st.sampled_from(["", "vendor=abc", "a=1,b=2", "bad state", "x" * 600]) | st.text(max_size=40)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None)
@given(traceparents() | st.text(max_size=60), tracestates, st.booleans())
@example(PARENT, None, False)
@example(PARENT, "vendor=abc", False)
@example("01" + PARENT[2:], None, False)
@example("ff" + PARENT[2:], None, False)
@example(PARENT.upper(), None, False)
@example(PARENT[:-1], None, False)
@example(PARENT + "\n", None, False)
@example(" " + PARENT, None, False)
@example(PARENT.replace("0af7651916cd43dd8448eb211c80319c", "0" * 32), None, False)
@example(PARENT.replace("b7ad6b7169203331", "0" * 16), None, False)
def test_extract_equals_the_otel_propagator(traceparent: str, tracestate: str | None, noise: bool) -> None:
    props = [("traceparent", traceparent)]
    if tracestate is not None:
        props.append(("tracestate", tracestate))
    if noise:
        props = [("x", "1"), *props, ("traceparent", PARENT)]
    ours = tracing.extract_span_context(props)
    assert key(ours) == key(otel_extract(props))
    ctx = tracing.extract(props)
    assert (ctx is None) == (ours is None)
    if ctx is not None:
        assert key(trace.get_current_span(ctx).get_span_context()) == key(ours)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**128 - 1), st.integers(0, 2**64 - 1), st.integers(0, 255),
       st.none() | st.sampled_from(["vendor=abc", "a=1,b=2"]))
def test_inject_equals_the_otel_propagator(trace_id: int, span_id: int, flags: int, state: str | None) -> None:
    sc = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags),
                     trace_state=TraceState.from_header([state]) if state else None)
    assert tracing.span_context_headers(sc) == otel_inject(sc)
    assert tracing.inject(trace.set_span_in_context(NonRecordingSpan(sc))) == otel_inject(sc)
    if sc.is_valid:  # and back again
        assert key(tracing.extract_span_context(otel_inject(sc))) == key(otel_extract(otel_inject(sc)))


def test_the_strict_form_only() -> None:
    """Spot checks of the rules the codec enforces (the property tests compare it to OTel)."""
    sc = tracing.parse_traceparent(PARENT, "vendor=abc")
    assert sc is not None
    assert (f"{sc.trace_id:032x}", f"{sc.span_id:016x}", sc.trace_flags.sampled, sc.is_remote) == (
        "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", True, True)
    assert sc.trace_state.get("vendor") == "abc"
    for bad in (PARENT.upper(), "ff" + PARENT[2:], PARENT[:-1] + "g", PARENT.replace("-", "_"),
                PARENT[:3] + "0" * 32 + PARENT[35:], PARENT[:36] + "0" * 16 + PARENT[52:], PARENT + " ", ""):
        assert tracing.parse_traceparent(bad) is None, bad
    assert tracing.parse_traceparent("01" + PARENT[2:]) is not None  # a later version, read as 00
