"""The responder's effects as values, and what the non-enforcement response actions produce.

Effects (returned by ``policies.response.incident``; the IncidentResponder only carries them out,
in order): :class:`Remember` an offender, :class:`Persist` the incident, :class:`Hold` an action
(refused, or waiting for approval), :class:`Enforce` an action, :class:`Publish` the incident,
:class:`Escalate` it (publish and :class:`Notify`), :class:`Fold` an alert into an incident.

Notification content (the IncidentResponder sends it):

- ``notify_security_team`` → an alert labelled ``notify=security-team``, which the shipped
  alerting tree routes to the ``security-team`` receiver (``security_team_alert``);
- ``notify_user`` → a ``SecurityNotice`` for the target user on
  ``system/{cluster}/security/notices``, which the platform delivers (``user_notice``).

Pure: ``now`` is passed in; text taken from an alert is cut to bounded lengths.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from policies.response.plan import EscalationDecision, IncidentRecord, PlannedAction
from policies.security.events import SecurityAlert
from protocol.security import SecurityNotice

SECURITY_TEAM = "security-team"
"""The ``notify`` label value the shipped alerting tree routes to the ``security-team`` receiver."""
_LABEL_MAX = 256
_SUMMARY_MAX = 1024

_USER_TEXT: Mapping[str, str] = {
    "brute_force_attempt": "Several failed sign-in attempts on your account were detected{from_ip}. "
                           "If this was not you, change your password.",
    "credential_stuffing": "Sign-in attempts with leaked credentials were detected{from_ip}. "
                           "If you reuse this password elsewhere, change it.",
    "unusual_service_access": "Your account used services it does not usually use{from_ip}. "
                              "If this was not you, contact support.",
    "unusual_login_pattern": "A sign-in to your account from a new network, device or time of day was "
                             "detected{from_ip}. If this was not you, change your password.",
}
_USER_DEFAULT = "Unusual activity on your account was detected{from_ip}. If this was not you, contact support."
_USER_ADVICE = ("Change your password", "Review your recent sign-ins")


@dataclass(frozen=True, slots=True, kw_only=True)
class Remember:
    """Store ``entity``'s offence times and latest incident (restored after a restart)."""

    entity: str
    incidents: tuple[float, ...]
    last_incident: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Persist:
    """Write the incident with this status and data (before its actions: they reference it)."""

    incident: IncidentRecord
    status: str
    data: Mapping[str, Any]
    automated_response: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    """Record ``action`` as refused (``waiting`` False) or store its approval request."""

    action: PlannedAction
    waiting: bool
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Enforce:
    """Carry out ``action``: persisted first, then applied to Redis/EMQX, or the notification sent,
    or the evidence preserved; published on the actions topic. Its outcome goes back to the policy."""

    action: PlannedAction
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Publish:
    """Publish the incident, as stored, with ``event`` on each of ``topics``."""

    event: str
    topics: tuple[str, ...]
    resolution: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Notify:
    """Raise a security-component alert (through the alert manager)."""

    name: str
    severity: str
    summary: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Escalate:
    """The incident was escalated: publish it (``publish``) and raise ``alert``."""

    decision: EscalationDecision
    publish: Publish
    alert: Notify


@dataclass(frozen=True, slots=True, kw_only=True)
class Fold:
    """A source over its incident limit: log ``entry`` in its latest incident (None: there is
    none to fold it into), count it, carry nothing out."""

    incident_id: str | None
    entry: Mapping[str, Any]


Effect = Remember | Persist | Hold | Enforce | Publish | Escalate | Notify


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _address(text: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(text)) if text and len(text) <= 64 else None
    except ValueError:
        return None


def security_team_alert(action: PlannedAction, alert: SecurityAlert, cluster: str, now: float, *,
                        resolve_after: float | None) -> dict[str, Any]:
    """The alert (AlertManager ingest shape) that brings ``alert`` to the security team. Nothing
    resolves it later, so it ends ``resolve_after`` seconds from ``now`` (when given)."""
    labels = {"alertname": "SecurityTeamNotification", "severity": alert.severity, "component": "security",
              "cluster": cluster, "notify": SECURITY_TEAM, "incident": action.incident_id,
              "type": alert.type, "target": action.target}
    if alert.user_id:
        labels["user"] = alert.user_id
    if alert.ip_address:
        labels["ip"] = alert.ip_address
    summary = f"{alert.type} on {action.target}: {alert.description}"
    annotations = {"summary": _cut(summary, _SUMMARY_MAX), "description": _cut(alert.description, _SUMMARY_MAX)}
    if alert.recommended_actions:
        annotations["recommendedActions"] = _cut("; ".join(alert.recommended_actions), _SUMMARY_MAX)
    return {"labels": {k: _cut(str(v), _LABEL_MAX) for k, v in labels.items()}, "annotations": annotations,
            "startsAt": now, "endsAt": None if resolve_after is None else now + resolve_after}


def user_notice(action: PlannedAction, alert: SecurityAlert, cluster: str, now: float) -> SecurityNotice:
    """The notice for ``action.target`` (a user id) about ``alert``. Its text is fixed per alert
    type: nothing an attacker wrote reaches the user except the (validated) source address."""
    ip = _address(alert.ip_address)
    text = _USER_TEXT.get(alert.type, _USER_DEFAULT).format(from_ip=f" from {ip}" if ip else "")
    return SecurityNotice(cluster_id=cluster, notice_id=action.action_id, user_id=action.target,
                          incident_id=action.incident_id, reason=_cut(alert.type, 64), severity=alert.severity,
                          message=text, ip_address=ip, occurred_at=alert.timestamp, recommended_actions=list(
                              _USER_ADVICE), timestamp=now)

