"""Distributed traces over MQTT 5: W3C Trace Context in user properties, spans through OpenTelemetry.

- The carrier is a message's MQTT 5 user properties (pairs). :func:`inject` writes the current
  (or given) span context as ``traceparent``/``tracestate`` pairs; :func:`extract` reads them back
  into an OpenTelemetry ``Context``. The ``traceparent`` is formatted and parsed here, on the
  per-call path (the OTel ``TraceContextTextMapPropagator`` costs a regex, a getter and two context
  copies a call): strictly the W3C form ``version-traceid-spanid-flags``, lowercase hex, and
  tested equal to that propagator (hypothesis) on valid and invalid values. ``tracestate`` is
  still read and written by OTel's ``TraceState``.
- Every input is hostile: :func:`trace_headers` keeps at most one ``traceparent`` (≤ 55
  characters, the W3C version-00 length) and one ``tracestate`` (≤ 512 characters, the W3C
  propagation limit) from a message's properties; anything else is ignored, never an error.
- Tracing is off until a real ``TracerProvider`` exists (injected, or set globally by
  :func:`configure_tracing`). :class:`TracerSource` answers ``None`` then, so callers skip spans
  and carriers entirely instead of paying for the API's no-op objects.
- :func:`configure_tracing` is the one place a provider is built: over OTLP/HTTP only when
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, or to a given
  exporter (tests: ``InMemorySpanExporter``). ``OTEL_SERVICE_NAME`` names the service.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TraceState,
)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACEPARENT_MAX = 55
TRACESTATE_MAX = 512

Pairs = tuple[tuple[str, str], ...]

_RECHECK_OFF_S = 1.0
_configured = 0  # bumped each time configure_tracing sets the global provider

_HEX = "0123456789abcdef"


class UserPropertiesGetter(Getter[Sequence[tuple[str, str]]]):
    """Reads W3C headers from MQTT 5 user properties (names are case-sensitive, as in MQTT)."""

    def get(self, carrier: Sequence[tuple[str, str]], key: str) -> list[str] | None:
        values = [v for k, v in carrier if k == key]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, str]]) -> list[str]:
        return [k for k, _ in carrier]


class UserPropertiesSetter(Setter[list[tuple[str, str]]]):
    """Appends W3C headers to a list of MQTT 5 user properties."""

    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key, value))


GETTER = UserPropertiesGetter()
SETTER = UserPropertiesSetter()


def _first_headers(user_properties: Sequence[tuple[str, str]]) -> tuple[str | None, str | None]:
    """The first ``traceparent`` and the first ``tracestate`` value within their length caps."""
    parent = state = None
    for pair in user_properties:
        if len(pair) != 2:
            continue
        key, value = pair
        if key == TRACEPARENT:
            if parent is None and isinstance(value, str) and len(value) <= TRACEPARENT_MAX:
                parent = value
        elif key == TRACESTATE and state is None and isinstance(value, str) and len(value) <= TRACESTATE_MAX:
            state = value
    return parent, state


def trace_headers(user_properties: Sequence[tuple[str, str]]) -> Pairs:
    """The first ``traceparent`` and ``tracestate`` of ``user_properties`` within their length
    caps; ``()`` when there is no usable ``traceparent`` (a tracestate alone means nothing)."""
    if not user_properties:
        return ()
    parent, state = _first_headers(user_properties)
    if parent is None:
        return ()
    return ((TRACEPARENT, parent),) if state is None else ((TRACEPARENT, parent), (TRACESTATE, state))


def span_context_headers(sc: SpanContext) -> list[tuple[str, str]]:
    """The user properties that carry ``sc`` (``traceparent``, and ``tracestate`` when it has one);
    ``[]`` for the invalid span context. What the OTel propagator's ``inject`` writes."""
    if sc == INVALID_SPAN_CONTEXT:
        return []
    props = [(TRACEPARENT, f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}")]
    if sc.trace_state:
        props.append((TRACESTATE, sc.trace_state.to_header()))
    return props


def inject(context: Context | None = None) -> list[tuple[str, str]]:
    """The user properties that carry ``context`` (default: the current one); ``[]`` without a
    valid span in it."""
    return span_context_headers(trace.get_current_span(context).get_span_context())


def parse_traceparent(value: str, tracestate: str | None = None) -> SpanContext | None:
    """The remote span context a W3C ``traceparent`` names, or ``None`` when it is not one.

    Within the 55-character cap a valid value is exactly ``vv-{32}-{16}-ff`` in lowercase hex
    (version ``ff`` is invalid; other versions are read as 00), with non-zero trace and span ids.
    """
    if (len(value) != TRACEPARENT_MAX or value[2] != "-" or value[35] != "-" or value[52] != "-"
            or (value[:2] + value[3:35] + value[36:52] + value[53:]).strip(_HEX)):
        return None
    trace_id, span_id = int(value[3:35], 16), int(value[36:52], 16)
    if value[:2] == "ff" or not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(value[53:], 16)),
                       trace_state=None if tracestate is None else TraceState.from_header([tracestate]))


def extract_span_context(user_properties: Sequence[tuple[str, str]]) -> SpanContext | None:
    """The remote parent span context carried by ``user_properties``, or ``None``."""
    if not user_properties:
        return None
    parent, state = _first_headers(user_properties)
    return None if parent is None else parse_traceparent(parent, state)


def extract(user_properties: Sequence[tuple[str, str]]) -> Context | None:
    """The remote parent context carried by ``user_properties``; ``None`` when they carry none
    (a malformed ``traceparent`` counts as none, as the W3C rules say)."""
    sc = extract_span_context(user_properties)
    return None if sc is None else trace.set_span_in_context(NonRecordingSpan(sc))


class TracerSource:
    """The tracer to use now: the injected provider's, else the global provider's; ``None`` while
    no real provider is configured. Cheap to ask per call: an identity check when a provider is
    known; while off, the global is looked at again only after :func:`configure_tracing` or once a
    second (``trace.get_tracer_provider()`` reads ``os.environ`` each time: ~2 µs)."""

    __slots__ = ("_gen", "_name", "_next_check", "_provider", "_seen", "_tracer")

    def __init__(self, name: str, provider: trace.TracerProvider | None = None) -> None:
        self._name = name
        self._provider = provider
        self._seen: object = None
        self._tracer: Tracer | None = None
        self._gen = -1
        self._next_check = 0.0

    def get(self) -> Tracer | None:
        if self._provider is not None:
            tp: trace.TracerProvider = self._provider
        else:
            if self._tracer is None and self._gen == _configured and time.monotonic() < self._next_check:
                return None
            self._gen, self._next_check = _configured, time.monotonic() + _RECHECK_OFF_S
            tp = trace.get_tracer_provider()
        if tp is not self._seen:
            self._seen = tp
            off = isinstance(tp, ProxyTracerProvider | NoOpTracerProvider)
            self._tracer = None if off else tp.get_tracer(self._name)
        return self._tracer


def record_refusal(tracer: Tracer, headers: Pairs, service: str, call_id: object, event: str,
                   attributes: Mapping[str, str | float]) -> None:
    """A SERVER span of sfa-ops answering -32503 for ``service``, child of the caller's span named
    by ``headers``, with one ``event`` (``circuit_open``, ``service_unavailable``); nothing when
    the headers carry no valid parent."""
    parent = extract(headers)
    if parent is None:
        return
    span = tracer.start_span(f"{service} -32503 by sfa-ops", context=parent, kind=SpanKind.SERVER,
                             attributes={"rpc.system": "jsonrpc", "rpc.service": service,
                                         "rpc.jsonrpc.error_code": -32503,
                                         "rpc.jsonrpc.request_id": str(call_id)[:256]})
    span.add_event(event, dict(attributes))
    span.set_status(Status(StatusCode.ERROR, event))
    span.end()


def otlp_endpoint(environ: Mapping[str, str] = os.environ) -> str | None:
    """The OTLP/HTTP URL spans are posted to, when the environment names one: the traces endpoint
    as given, or the base endpoint with ``/v1/traces`` (the OTLP exporter's own rule)."""
    traces = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return f"{base.rstrip('/')}/v1/traces" if base else None


def ray_runtime_env(environ: Mapping[str, str] = os.environ) -> dict[str, dict[str, str]] | None:
    """A Ray ``runtime_env`` handing this process's ``OTEL_*`` variables to its actors (which may run
    on other nodes), or ``None`` when there are none."""
    env = {k: v for k, v in environ.items() if k.startswith("OTEL_")}
    return {"env_vars": env} if env else None


def configure_tracing(
    service_name: str,
    *,
    exporter: SpanExporter | None = None,
    batch: bool = True,
    set_global: bool = True,
    environ: Mapping[str, str] = os.environ,
) -> TracerProvider | None:
    """A tracer provider for this process, or ``None`` (tracing stays off).

    With ``exporter`` spans go there; otherwise over OTLP/HTTP when an endpoint variable is set
    (headers, timeout and compression from the other ``OTEL_EXPORTER_OTLP_*`` variables, read by
    the exporter); otherwise ``None``.
    ``OTEL_SERVICE_NAME`` overrides ``service_name``. ``set_global`` makes it the process's
    provider (which the SDK uses when no provider is passed to it); OTel allows that once.
    """
    if exporter is None:
        endpoint = otlp_endpoint(environ)
        if endpoint is None:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint)
    name = environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    if set_global:
        global _configured
        trace.set_tracer_provider(provider)
        _configured += 1
    return provider


__all__ = [
    "GETTER", "SETTER", "TRACEPARENT", "TRACESTATE", "Pairs", "TracerSource", "UserPropertiesGetter",
    "UserPropertiesSetter", "configure_tracing", "extract", "extract_span_context", "inject", "otlp_endpoint",
    "parse_traceparent", "ray_runtime_env", "record_refusal", "span_context_headers", "trace_headers",
]
