"""Security, audit, alert, incident and enforcement messages."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from protocol.base import Timestamp, WireModel
from protocol.system import Severity

_ID = 256
MAX_ACTIVE_ACTIONS = 10_000


class AuthEvent(WireModel):
    """``security/auth/{event}`` from the auth service."""

    user_id: str | None = Field(default=None, max_length=_ID)
    ip_address: str | None = Field(default=None, max_length=64)
    success: bool
    timestamp: Timestamp
    method: str | None = None
    user_agent: str | None = Field(default=None, max_length=512)
    reason: str | None = None


class AuthzEvent(WireModel):
    """``security/authz/{event}`` from services."""

    user_id: str = Field(max_length=_ID)
    service: str = Field(max_length=63)
    method: str = Field(max_length=128)
    allowed: bool
    timestamp: Timestamp
    roles: list[str] = Field(default_factory=list)
    ip_address: str | None = Field(default=None, max_length=64)


class ServiceSecurityEvent(WireModel):
    """``service/{Service}/security``: what a service itself reports."""

    event_type: str = Field(max_length=128)
    severity: Severity = "warning"
    timestamp: Timestamp
    user_id: str | None = Field(default=None, max_length=_ID)
    ip_address: str | None = Field(default=None, max_length=64)
    description: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class DataAccessEvent(WireModel):
    """``audit/{Service}/data-access``."""

    user_id: str = Field(max_length=_ID)
    collection: str = Field(max_length=128)
    operation: str = Field(max_length=32)
    record_ids: list[str] | None = None
    record_count: int | None = Field(default=None, ge=0)
    timestamp: Timestamp
    roles: list[str] = Field(default_factory=list)

    @property
    def records(self) -> int:
        if self.record_count is not None:
            return self.record_count
        return len(self.record_ids or ())


DataSubjectRequestType = Literal["access", "erasure", "rectification", "portability", "restriction", "objection"]
"""GDPR Art. 15 (access), 17 (erasure), 16 (rectification), 20 (portability), 18 (restriction),
21 (objection)."""


class DataSubjectRequest(WireModel):
    """``audit/{Service}/data-subject``: a GDPR data-subject request, reported by the service that
    handles it when it is received and again when it is completed or rejected (same ``requestId``)."""

    request_id: str = Field(min_length=1, max_length=_ID)
    """The service's id for the request: the received and the final event carry the same one."""
    user_id: str = Field(max_length=_ID)
    """The data subject."""
    request_type: DataSubjectRequestType
    status: Literal["received", "completed", "rejected"]
    timestamp: Timestamp
    """When the request reached this status."""
    received_at: Timestamp | None = None
    """When it was received (on a completed or rejected event: the time to answer is measured from
    it when the received event was not seen)."""
    reason: str | None = Field(default=None, max_length=512)
    """Why it was rejected (free text; no personal data)."""


class AlertMessage(WireModel):
    """An alert as the ``mqtt`` receiver publishes it on ``system/{cluster}/alerts``."""

    type: Literal["alert"] = "alert"
    cluster_id: str
    status: Literal["firing", "resolved"]
    receiver: str | None = None
    group_key: str | None = None
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: Timestamp
    ends_at: Timestamp | None = None
    fingerprint: str | None = None
    runbook: list[dict[str, Any]] | None = None
    timestamp: Timestamp | None = None
    """When sfa-ops published the message (what a signature's freshness is judged by)."""


class IncidentMessage(WireModel):
    """``system/{cluster}/incidents``: created/updated/escalated/resolved."""

    type: Literal["incident"] = "incident"
    event: Literal["created", "updated", "escalated", "resolved"]
    cluster_id: str
    incident_id: str
    incident_type: str
    severity: Severity
    title: str
    description: str = ""
    source: str = ""
    status: Literal["open", "investigating", "contained", "escalated", "resolved"]
    automated_response: list[str] = Field(default_factory=list)
    """Actions carried out automatically."""
    awaiting_approval: list[str] = Field(default_factory=list)
    """Action ids held for an operator (``drivers.incidents approve|reject ID``)."""
    refused: list[str] = Field(default_factory=list)
    """Action ids refused (protected target, approval queue full)."""
    resolution: Literal["operator", "expired"] | None = None
    """On ``resolved``: an operator resolved it, or it ``expired`` (no new event for the
    response policy's ``incident_ttl``)."""
    timestamp: Timestamp


class EnforcementAction(WireModel):
    """``system/{cluster}/security/actions``: an action or its undo."""

    action: str = Field(max_length=64)
    target: str = Field(max_length=_ID)
    until: Timestamp | None = None
    incident_id: str | None = None
    action_id: str | None = None
    undo: bool = False
    params: dict[str, Any] = Field(default_factory=dict)
    timestamp: Timestamp | None = None


class ActiveActions(WireModel):
    """Retained on ``system/{cluster}/security/actions/active``: the current set, for late joiners."""

    type: Literal["active_actions"] = "active_actions"
    actions: list[EnforcementAction] = Field(max_length=MAX_ACTIVE_ACTIONS)
    timestamp: Timestamp


class SecurityNotice(WireModel):
    """``system/{cluster}/security/notices``: a notice for one user about their account (the
    ``notify_user`` response action), for the platform to deliver (e-mail, in-app, push)."""

    type: Literal["security_notice"] = "security_notice"
    cluster_id: str = Field(max_length=63)
    notice_id: str = Field(max_length=512)
    """The action id that produced it: the same notice retried keeps its id (deduplicate on it)."""
    user_id: str = Field(max_length=_ID)
    incident_id: str = Field(max_length=_ID)
    reason: str = Field(max_length=64)
    """The alert type (``brute_force_attempt`` …)."""
    severity: Severity
    message: str = Field(max_length=1024)
    """Plain text for the user; never carries a secret or another user's data."""
    ip_address: str | None = Field(default=None, max_length=64)
    occurred_at: Timestamp
    """When the activity was detected."""
    recommended_actions: list[str] = Field(default_factory=list, max_length=8)
    timestamp: Timestamp
