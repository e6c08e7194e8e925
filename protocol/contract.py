"""The wire contract as data: which model every message on every topic is built and parsed with.

``CHANNELS`` maps each topic sfa-ops publishes (plus the presence topic services publish and the
-32503 answers it sends on a caller's reply topic) to its models; ``parse_published`` parses one
message with the model its topic and ``type`` name, so a consumer or a test checks what a real
producer sent against the same models the producer built it with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol import topics
from protocol.base import WireModel, loads, parse_model
from protocol.exceptions import ProtocolError
from protocol.rpc import Call, ErrorResponse, SuccessResponse
from protocol.security import (
    ActiveActions,
    AlertMessage,
    AuthEvent,
    AuthzEvent,
    DataAccessEvent,
    DataSubjectRequest,
    EnforcementAction,
    IncidentMessage,
    SecurityNotice,
    ServiceSecurityEvent,
)
from protocol.system import (
    AuditAnchor,
    BreakerState,
    BreakerStateChange,
    CascadingFailurePrevented,
    InfrastructureError,
    InfrastructureRecovered,
    Presence,
    ServiceDegraded,
    ServiceRecovered,
    ServiceUnavailable,
    SystemHealth,
)

ACTIVE_ACTIONS_SUFFIX = "security/actions/active"


@dataclass(frozen=True, slots=True)
class Channel:
    """One topic of the contract: its address template, who publishes, and its messages."""

    name: str
    address: str
    publisher: str
    description: str
    messages: tuple[type[WireModel], ...]
    retained: bool = False


CHANNELS: tuple[Channel, ...] = (
    Channel("system_errors", "system/{cluster}/errors", "sfa-ops",
            "Tier 2 and tier 3 notifications, cascades, recoveries.",
            (ServiceUnavailable, ServiceDegraded, ServiceRecovered, CascadingFailurePrevented,
             InfrastructureError, InfrastructureRecovered)),
    Channel("system_emergency", "system/{cluster}/emergency", "sfa-ops",
            "Copies of critical and emergency infrastructure errors and security incidents.",
            (InfrastructureError, IncidentMessage)),
    Channel("circuit_breaker_events", "system/{cluster}/circuit-breaker", "sfa-ops",
            "Every circuit breaker state change.", (BreakerStateChange,)),
    Channel("circuit_breaker_state", "system/{cluster}/circuit-breaker/{service}", "sfa-ops",
            "The current state of one service's breaker.", (BreakerState,), retained=True),
    Channel("system_health", "system/{cluster}/health", "sfa-ops",
            "The system health summary.", (SystemHealth,), retained=True),
    Channel("system_alerts", "system/{cluster}/alerts", "sfa-ops",
            "Alerts routed to the mqtt receiver.", (AlertMessage,)),
    Channel("system_incidents", "system/{cluster}/incidents", "sfa-ops",
            "Incidents created, updated, escalated, resolved.", (IncidentMessage,)),
    Channel("security_actions", "system/{cluster}/security/actions", "sfa-ops",
            "Enforcement actions and their undo.", (EnforcementAction,)),
    Channel("security_actions_active", "system/{cluster}/security/actions/active", "sfa-ops",
            "The set of active enforcement actions.", (ActiveActions,), retained=True),
    Channel("security_notices", "system/{cluster}/security/notices", "sfa-ops",
            "Notices for a user about their account (response action notify_user), for the platform to "
            "deliver.", (SecurityNotice,)),
    Channel("audit_anchor", "system/{cluster}/audit/anchor", "sfa-ops",
            "The audit chains' heads and row counts, every minute and at shutdown (also appended to the "
            "anchor file): what `drivers.audit verify --anchors` checks the chains against.",
            (AuditAnchor,), retained=True),
    Channel("presence", "system/{cluster}/presence/{service}/{instance}", "service instances",
            "Online on connect; offline as the MQTT Last Will.", (Presence,), retained=True),
    Channel("session_response", "session/{sessionId}/response", "services, and sfa-ops on their behalf",
            "JSON-RPC 2.0 responses; sfa-ops' own are the -32503 answers (Circuit Breaker Open, Service "
            "Temporarily Unavailable).", (SuccessResponse, ErrorResponse)),
    Channel("service_call", "service/{service}", "clients", "A call: JSON-RPC 2.0 request.", (Call,)),
    Channel("security_auth", "security/auth/{event}", "the auth service", "Authentication events.",
            (AuthEvent,)),
    Channel("security_authz", "security/authz/{event}", "services", "Authorization decisions.", (AuthzEvent,)),
    Channel("service_security", "service/{service}/security", "services", "Service-reported security events.",
            (ServiceSecurityEvent,)),
    Channel("data_access", "audit/{service}/data-access", "services", "Personal-data access events.",
            (DataAccessEvent,)),
    Channel("data_subject", "audit/{service}/data-subject", "services",
            "GDPR data-subject requests (access, erasure, rectification, portability, restriction, objection): "
            "received, then completed or rejected, with the same requestId.", (DataSubjectRequest,)),
)

_BY_NAME = {c.name: c for c in CHANNELS}


def channel_of(topic: str) -> Channel | None:
    """The contract channel of a concrete topic, or ``None`` when it is not one of ours."""
    if topic.endswith("/" + ACTIVE_ACTIONS_SUFFIX) and topic.startswith("system/"):
        return _BY_NAME["security_actions_active"]
    parsed = topics.parse(topic)
    return None if parsed is None else _BY_NAME.get(parsed.kind)


def model_for(channel: Channel, doc: dict[str, Any]) -> type[WireModel]:
    """The model of one decoded message on ``channel`` (by its ``type`` when several share it)."""
    if len(channel.messages) == 1:
        return channel.messages[0]
    if channel.name == "session_response":
        return ErrorResponse if "error" in doc else SuccessResponse
    kind = doc.get("type")
    for model in channel.messages:
        if model.model_fields["type"].default == kind:
            return model
    raise ProtocolError("type", f"{str(kind)[:64]!r} is not a message of {channel.address}")


def parse_published(topic: str, payload: bytes | str | dict[str, Any]) -> WireModel:
    """Parse a message as published on ``topic`` with its contract model; raises ``ProtocolError``."""
    channel = channel_of(topic)
    if channel is None:
        raise ProtocolError("(topic)", f"{topic[:128]!r} is not a topic of the contract")
    doc = payload if isinstance(payload, dict) else loads(payload)
    if not isinstance(doc, dict):
        raise ProtocolError("(payload)", f"must be a JSON object, got {type(doc).__name__}")
    return parse_model(model_for(channel, doc), doc)


# ---------------------------------------------------------------- generated documents

ASYNCAPI_VERSION = "3.0.0"
CONTRACT_VERSION = "1.0.0"
_REF = "#/components/schemas/{model}"
_PARAMETERS = {
    "cluster": "The cluster id (``--cluster-id``).",
    "service": "A service name (letters, digits, ``-``, ``_``; 1-63 characters).",
    "instance": "A service instance id.",
    "sessionId": "The caller's session id (its reply topic).",
    "event": "The event name.",
}


def message_models() -> list[type[WireModel]]:
    """Every message model of the contract, each once, in channel order."""
    seen: dict[str, type[WireModel]] = {}
    for channel in CHANNELS:
        for model in channel.messages:
            seen.setdefault(model.__name__, model)
    return list(seen.values())


def json_schemas() -> dict[str, dict[str, Any]]:
    """A standalone JSON Schema (2020-12) per message model, as the message appears on the wire."""
    out = {}
    for model in message_models():
        schema = model.model_json_schema(by_alias=True, mode="serialization")
        out[model.__name__] = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document: channels (topics) -> messages, with shared component schemas."""
    from pydantic.json_schema import models_json_schema

    _, top = models_json_schema([(m, "serialization") for m in message_models()], by_alias=True,
                                ref_template=_REF)
    schemas = top.get("$defs", {})
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for ch in CHANNELS:
        key = _camel(ch.name)
        params = [p.strip("{}") for p in ch.address.split("/") if p.startswith("{")]
        channels[key] = {
            "address": ch.address,
            "description": ch.description + (" Retained." if ch.retained else ""),
            **({"parameters": {p: {"description": _PARAMETERS[p]} for p in params}} if params else {}),
            "messages": {m.__name__: {"$ref": f"#/components/messages/{m.__name__}"} for m in ch.messages},
        }
        ours = ch.publisher.startswith("sfa-ops")
        operations[("send" if ours else "receive") + key[0].upper() + key[1:]] = {
            "action": "send" if ours else "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": f"Published by {ch.publisher}" + ("" if ours else "; sfa-ops subscribes") + ".",
            "messages": [{"$ref": f"#/channels/{key}/messages/{m.__name__}"} for m in ch.messages],
        }
        for m in ch.messages:
            doc = (m.__doc__ or m.__name__).strip().split("\n\n")[0]
            messages[m.__name__] = {"name": m.__name__, "title": m.__name__, "summary": " ".join(doc.split()),
                                    "contentType": "application/json",
                                    "payload": {"$ref": _REF.format(model=m.__name__)}}
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "sfa-ops wire contract",
            "version": CONTRACT_VERSION,
            "description": ("JSON-RPC 2.0 over MQTT as sfa-ops sees it. One meaning per field name: rates are "
                            "fractions 0..1; retryAfter, timestamps and other instants are RFC 3339 UTC; "
                            "a relative delay or duration carries its unit in its name (retryAfterSeconds, "
                            "downtimeSeconds, p95Ms). Generated by python -m drivers.wire_docs; do not edit."),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
