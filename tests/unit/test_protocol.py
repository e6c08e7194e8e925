"""Wire models and topics against DESIGN.md §1 and the seed's own JSON examples."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import ProtocolError, epoch_from_rfc3339, loads, parse_model, rfc3339_from_epoch, topics
from protocol.names import check_segment, check_service_name, is_service_name
from protocol.rpc import (
    Call,
    ErrorResponse,
    circuit_open_response,
    error_response,
    service_unavailable_response,
)
from protocol.security import AuthEvent, DataAccessEvent, EnforcementAction
from protocol.system import (
    BreakerStateChange,
    InfrastructureError,
    ServiceDegraded,
    ServiceUnavailable,
    SystemHealth,
)
from tests.support.seed import seed_json_examples

SEED_MODELS = {
    "service_unavailable": ServiceUnavailable,
    "infrastructure_error": InfrastructureError,
}


def _model_for(doc: dict) -> type:
    if "error" in doc:
        return ErrorResponse
    return SEED_MODELS[doc["type"]]


def test_seed_has_the_four_examples() -> None:
    """The seed's text yields its two error responses, service_unavailable and infrastructure_error."""
    docs = seed_json_examples()
    kinds = sorted(d.get("type") or f"error{d['error']['code']}" for d in docs)
    assert kinds == ["error-32001", "error-32002", "infrastructure_error", "service_unavailable"]


@pytest.mark.parametrize("doc", seed_json_examples(), ids=lambda d: d.get("type") or str(d["error"]["code"]))
def test_seed_examples_round_trip(doc: dict) -> None:
    """Each seed example parses into its model and serialises back to equal JSON."""
    model = _model_for(doc)
    parsed = parse_model(model, orjson.dumps(doc))
    assert orjson.loads(parsed.to_json()) == doc


def test_unknown_fields_are_kept() -> None:
    """Tolerant where the platform is: an extra field survives a round trip."""
    call = parse_model(Call, b'{"jsonrpc":"2.0","id":"1","method":"m","traceId":"abc"}')
    assert call.to_wire()["traceId"] == "abc"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"jsonrpc":"2.0","id":"1"}', "method"),
        (b'{"jsonrpc":"1.0","id":"1","method":"m"}', "jsonrpc"),
        (b'{"jsonrpc":"2.0","id":"1","method":"m","params":"x"}', "params"),
        (b'{"jsonrpc":"2.0","id":"1","method":""}', "method"),
        (b'{"jsonrpc":"2.0","id":"1","method":"m","userContext":{"roles":"admin"}}', "userContext.roles"),
        (b"not json", "(payload)"),
        (b"[1,2]", "(payload)"),
    ],
)
def test_parse_errors_name_the_field(payload: bytes, field: str) -> None:
    """Strict where safety needs it: a bad field raises ProtocolError naming it."""
    with pytest.raises(ProtocolError) as info:
        parse_model(Call, payload)
    assert info.value.field == field


def test_size_and_depth_limits() -> None:
    """Oversized and deeply nested payloads are refused before any model sees them."""
    with pytest.raises(ProtocolError, match="over the"):
        loads(b" " * 100 + b"{}", max_bytes=50)
    deep = b"[" * 100 + b"]" * 100
    with pytest.raises(ProtocolError, match="nested deeper"):
        loads(deep)
    assert loads(b"[" * 10 + b"]" * 10) == [[[[[[[[[[]]]]]]]]]]


def test_error_response_shape() -> None:
    """error_response fills errorType and message from the code table, camelCase on the wire."""
    ts = datetime(2024, 12, 15, 10, 30, tzinfo=UTC)
    resp = error_response(call_id="r1", code=-32004, details={"id": "u1"}, correlation_id="c1",
                          service="UserManagement", method="getUser", timestamp=ts)
    assert resp.to_wire() == {
        "jsonrpc": "2.0",
        "id": "r1",
        "error": {
            "code": -32004,
            "message": "Resource Not Found",
            "data": {"errorType": "ResourceNotFound", "details": {"id": "u1"}, "correlationId": "c1",
                     "timestamp": "2024-12-15T10:30:00Z", "service": "UserManagement", "method": "getUser"},
        },
    }


def test_503_answers() -> None:
    """Both -32503 answers carry the design's data fields; ``retryAfter`` is an instant (the seed's
    DateTime), ``retryAfterSeconds`` the same as a delay."""
    ts = datetime(2024, 12, 15, tzinfo=UTC)
    cb = circuit_open_response(call_id=1, service="Payments", retry_after_seconds=30.0, correlation_id="c",
                               timestamp=ts).to_wire()
    assert cb["error"]["code"] == -32503 and cb["error"]["message"] == "Circuit Breaker Open"
    assert cb["error"]["data"]["errorType"] == "CircuitBreakerOpen"
    assert {"serviceName", "message", "retryAfter", "correlationId", "timestamp"} <= cb["error"]["data"].keys()
    assert cb["error"]["data"]["retryAfter"] == "2024-12-15T00:00:30Z"
    assert cb["error"]["data"]["retryAfterSeconds"] == 30.0
    su = service_unavailable_response(call_id=1, service="Payments", reason="no_running_pods",
                                      estimated_recovery="2-5 minutes", retry_after_seconds=60, correlation_id="c",
                                      timestamp=ts).to_wire()
    assert su["error"]["message"] == "Service Temporarily Unavailable"
    assert {"errorType", "serviceName", "reason", "estimatedRecovery", "retryAfter"} <= su["error"]["data"].keys()
    assert su["error"]["data"]["retryAfter"] == "2024-12-15T00:01:00Z"
    assert parse_model(ErrorResponse, su).error.data.retry_after == datetime(2024, 12, 15, 0, 1, tzinfo=UTC)


def test_error_response_keeps_a_null_id() -> None:
    """JSON-RPC 2.0: a response whose call id is unknown still says ``"id": null``."""
    wire = circuit_open_response(call_id=None, service="A", retry_after_seconds=1, correlation_id=None,
                                 timestamp=0.0).to_wire()
    assert "id" in wire and wire["id"] is None


def test_rates_are_fractions_and_retry_after_an_instant() -> None:
    """A percentage where a fraction belongs, or seconds where an instant belongs, does not parse."""
    base = {"type": "circuit_breaker_state_change", "service": "A", "topic": "service/A", "from": "closed",
            "to": "open", "reason": "r", "timestamp": "2024-01-01T00:00:00Z"}
    assert parse_model(BreakerStateChange, {**base, "failureRate": 0.625}).failure_rate == 0.625
    with pytest.raises(ProtocolError, match="failureRate"):
        parse_model(BreakerStateChange, {**base, "failureRate": 62.5})
    with pytest.raises(ProtocolError, match="errorRate"):
        parse_model(ServiceDegraded, {"clusterId": "c", "service": "A", "reason": "high_error_rate",
                                      "details": {"errorRate": 40.0}, "timestamp": "2024-01-01T00:00:00Z",
                                      "correlationId": "x"})


def test_rfc3339_round_trip() -> None:
    """One format out (milliseconds only when present); Go's nanoseconds and offsets parse."""
    assert rfc3339_from_epoch(1_717_200_000.0) == "2024-06-01T00:00:00Z"
    assert rfc3339_from_epoch(1_717_200_000.25) == "2024-06-01T00:00:00.250Z"
    assert epoch_from_rfc3339("2024-06-01T00:00:00.250000123Z") == pytest.approx(1_717_200_000.25)
    assert epoch_from_rfc3339("2024-06-01T02:00:00+02:00") == 1_717_200_000.0
    assert epoch_from_rfc3339("2024-06-01T00:00:00") == 1_717_200_000.0
    assert rfc3339_from_epoch(epoch_from_rfc3339("0001-01-01T00:00:00Z")) == "0001-01-01T00:00:00Z"
    assert rfc3339_from_epoch(1_717_200_000.0004) == "2024-06-01T00:00:00.000Z"
    for bad in ("yesterday", "", "2024-13-01T00:00:00Z", "x" * 500):
        with pytest.raises(ValueError):
            epoch_from_rfc3339(bad)


def test_breaker_event_uses_from_to() -> None:
    """Breaker events say ``from``/``to`` on the wire."""
    ev = BreakerStateChange(service="A", topic="service/A", from_state="closed", to_state="open",
                            reason="Circuit opened due to 62.5% failure rate", failure_rate=0.625,
                            timestamp=datetime(2024, 1, 1, tzinfo=UTC))
    wire = ev.to_wire()
    assert wire["from"] == "closed" and wire["to"] == "open" and wire["failureRate"] == 0.625
    assert parse_model(BreakerStateChange, wire).to_state == "open"


def test_health_summary_shape() -> None:
    """The retained health summary has the design's keys."""
    h = SystemHealth(cluster_id="local", status="healthy", timestamp=datetime(2024, 1, 1, tzinfo=UTC),
                     services={"A": {"status": "healthy", "breaker": "closed", "p95Ms": 12.0}})
    wire = h.to_wire()
    assert set(wire) == {"type", "clusterId", "status", "timestamp", "services", "infrastructure", "observed"}
    assert wire["services"]["A"]["p95Ms"] == 12.0
    assert wire["observed"] == {"calls": 0, "responses": 0, "timeouts": 0, "malformed": 0, "dropped": 0,
                                "rejected": 0, "unknownServices": 0, "answerFailed": 0, "capped": 0}


def test_security_models() -> None:
    """Auth, data-access and enforcement messages parse from their wire form."""
    a = parse_model(AuthEvent, {"userId": "u", "ipAddress": "203.0.113.7", "success": False,
                                "timestamp": "2024-12-15T10:30:00Z"})
    assert a.success is False and a.timestamp.tzinfo is not None
    d = parse_model(DataAccessEvent, {"userId": "u", "collection": "users", "operation": "read",
                                      "recordIds": ["1", "2"], "timestamp": "2024-12-15T10:30:00Z"})
    assert d.records == 2
    e = EnforcementAction(action="block_ip", target="203.0.113.7", until=datetime(2024, 1, 1, 1, tzinfo=UTC),
                          incident_id="inc-1")
    assert e.to_wire() == {"action": "block_ip", "target": "203.0.113.7", "until": "2024-01-01T01:00:00Z",
                           "incidentId": "inc-1", "undo": False, "params": {}}


@pytest.mark.parametrize(
    ("builder", "args", "expected"),
    [
        (topics.service_call, ("UserManagement",), "service/UserManagement"),
        (topics.session_response, ("s-1",), "session/s-1/response"),
        (topics.system_errors, ("prod",), "system/prod/errors"),
        (topics.system_emergency, ("prod",), "system/prod/emergency"),
        (topics.circuit_breaker_events, ("prod",), "system/prod/circuit-breaker"),
        (topics.circuit_breaker_state, ("prod", "Payments"), "system/prod/circuit-breaker/Payments"),
        (topics.system_health, ("prod",), "system/prod/health"),
        (topics.presence, ("prod", "Payments", "i-1"), "system/prod/presence/Payments/i-1"),
        (topics.system_alerts, ("prod",), "system/prod/alerts"),
        (topics.system_incidents, ("prod",), "system/prod/incidents"),
        (topics.security_actions, ("prod",), "system/prod/security/actions"),
        (topics.security_auth, ("login",), "security/auth/login"),
        (topics.security_authz, ("check",), "security/authz/check"),
        (topics.service_security, ("Payments",), "service/Payments/security"),
        (topics.data_access, ("Payments",), "audit/Payments/data-access"),
        (topics.ui_change, ("orders", "42"), "ui/change/orders/42"),
    ],
)
def test_topic_builders_and_parser_agree(builder, args, expected: str) -> None:  # type: ignore[no-untyped-def]
    """Every contract topic is built as the design writes it and parses back to its kind."""
    built = builder(*args)
    assert built == expected
    parsed = topics.parse(built)
    assert parsed is not None and parsed.kind == builder.__name__


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "a#", "x\x00", "-lead", "trail-", "a" * 64, "sp ace", "é"])
def test_bad_service_names(bad: str) -> None:
    """Service names must be Kubernetes label values and safe topic segments."""
    assert not is_service_name(bad)
    with pytest.raises(ProtocolError):
        check_service_name(bad)
    with pytest.raises(ProtocolError):
        topics.service_call(bad)


def test_segments_and_unknown_topics() -> None:
    """Segments refuse separators and wildcards; foreign topics parse to None."""
    for bad in ("", "a/b", "+", "#", "x\x00", "y" * 200):
        with pytest.raises(ProtocolError):
            check_segment(bad, field="f")
    assert topics.parse("other/thing") is None
    assert topics.parse("service/bad name") is None
    assert topics.parse("system/c/unknown") is None
    assert topics.service_of_call_topic("service/A.b-c_1") == "A.b-c_1"
    assert topics.service_of_call_topic("service/A/security") is None


@given(st.text(min_size=1, max_size=80))
def test_service_name_rule_is_label_value_rule(name: str) -> None:
    """is_service_name matches the Kubernetes label-value grammar exactly (property)."""
    import re

    label = re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", name) is not None
    assert is_service_name(name) == (label and 0 < len(name) <= 63 and name.isascii())
