"""Builders and parsers for every topic of the wire contract (DESIGN.md §1).

Builders validate what goes into a segment (``protocol.names``); parsers return a small frozen
``Topic`` (kind plus the named parts) or ``None`` for a topic outside the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.names import check_segment, check_service_name, is_service_name


def _cluster(cluster: str) -> str:
    return check_segment(cluster, field="cluster", max_len=63)


def service_call(service: str) -> str:
    return f"service/{check_service_name(service)}"


def session_response(session_id: str) -> str:
    return f"session/{check_segment(session_id, field='sessionId')}/response"


def ui_change(*parts: str) -> str:
    if not parts:
        raise ValueError("ui_change needs at least one segment")
    return "ui/change/" + "/".join(check_segment(p, field="ui/change segment") for p in parts)


def system_errors(cluster: str) -> str:
    return f"system/{_cluster(cluster)}/errors"


def system_emergency(cluster: str) -> str:
    return f"system/{_cluster(cluster)}/emergency"


def circuit_breaker_events(cluster: str) -> str:
    return f"system/{_cluster(cluster)}/circuit-breaker"


def circuit_breaker_state(cluster: str, service: str) -> str:
    return f"system/{_cluster(cluster)}/circuit-breaker/{check_service_name(service)}"


def system_health(cluster: str) -> str:
    return f"system/{_cluster(cluster)}/health"


def presence(cluster: str, service: str, instance: str) -> str:
    return f"system/{_cluster(cluster)}/presence/{check_service_name(service)}/{check_segment(instance, field='instance')}"


def system_alerts(cluster: str) -> str:
    return f"system/{_cluster(cluster)}/alerts"


def system_incidents(cluster: str) -> str:
    return f"system/{_cluster(cluster)}/incidents"


def security_actions(cluster: str) -> str:
    return f"system/{_cluster(cluster)}/security/actions"


def security_notices(cluster: str) -> str:
    return f"system/{_cluster(cluster)}/security/notices"


def audit_anchor(cluster: str) -> str:
    return f"system/{_cluster(cluster)}/audit/anchor"


def security_auth(event: str) -> str:
    return f"security/auth/{check_segment(event, field='event')}"


def security_authz(event: str) -> str:
    return f"security/authz/{check_segment(event, field='event')}"


def service_security(service: str) -> str:
    return f"service/{check_service_name(service)}/security"


def data_access(service: str) -> str:
    return f"audit/{check_service_name(service)}/data-access"


def data_subject(service: str) -> str:
    return f"audit/{check_service_name(service)}/data-subject"


# Subscription filters used by observers and analysts.
CALLS_FILTER = "service/+"
RESPONSES_FILTER = "session/+/response"
UI_CHANGES_FILTER = "ui/change/#"
AUTH_FILTER = "security/auth/+"
AUTHZ_FILTER = "security/authz/+"
SERVICE_SECURITY_FILTER = "service/+/security"
DATA_ACCESS_FILTER = "audit/+/data-access"
DATA_SUBJECT_FILTER = "audit/+/data-subject"


def presence_filter(cluster: str) -> str:
    return f"system/{_cluster(cluster)}/presence/+/+"


def breaker_state_filter(cluster: str) -> str:
    return f"system/{_cluster(cluster)}/circuit-breaker/+"


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed contract topic: ``kind`` and its named parts (service, session_id, cluster, …)."""

    kind: str
    parts: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> str:
        return self.parts[key]


_SYSTEM_FIXED = {
    ("errors",): "system_errors",
    ("emergency",): "system_emergency",
    ("circuit-breaker",): "circuit_breaker_events",
    ("health",): "system_health",
    ("alerts",): "system_alerts",
    ("incidents",): "system_incidents",
    ("security", "actions"): "security_actions",
    ("security", "notices"): "security_notices",
    ("audit", "anchor"): "audit_anchor",
}


def parse(topic: str) -> Topic | None:
    """Parse a concrete topic into its contract kind, or ``None`` when it is not one of ours or
    a segment fails validation (an untrusted name never leaves this function unchecked)."""
    segs = topic.split("/")
    n = len(segs)
    try:
        head = segs[0]
        if head == "service":
            if n == 2:
                return Topic("service_call", {"service": check_service_name(segs[1])})
            if n == 3 and segs[2] == "security":
                return Topic("service_security", {"service": check_service_name(segs[1])})
        elif head == "session" and n == 3 and segs[2] == "response":
            return Topic("session_response", {"session_id": check_segment(segs[1], field="sessionId")})
        elif head == "ui" and n >= 3 and segs[1] == "change":
            for s in segs[2:]:
                check_segment(s, field="ui/change segment")
            return Topic("ui_change", {"path": "/".join(segs[2:])})
        elif head == "security" and n == 3 and segs[1] in ("auth", "authz"):
            return Topic(f"security_{segs[1]}", {"event": check_segment(segs[2], field="event")})
        elif head == "audit" and n == 3 and segs[2] == "data-access":
            return Topic("data_access", {"service": check_service_name(segs[1])})
        elif head == "audit" and n == 3 and segs[2] == "data-subject":
            return Topic("data_subject", {"service": check_service_name(segs[1])})
        elif head == "system" and n >= 3:
            cluster = _cluster(segs[1])
            rest = tuple(segs[2:])
            kind = _SYSTEM_FIXED.get(rest)
            if kind:
                return Topic(kind, {"cluster": cluster})
            if len(rest) == 2 and rest[0] == "circuit-breaker":
                return Topic("circuit_breaker_state", {"cluster": cluster, "service": check_service_name(rest[1])})
            if len(rest) == 3 and rest[0] == "presence":
                return Topic(
                    "presence",
                    {
                        "cluster": cluster,
                        "service": check_service_name(rest[1]),
                        "instance": check_segment(rest[2], field="instance"),
                    },
                )
    except ValueError:
        return None
    return None


def service_of_call_topic(topic: str) -> str | None:
    """Fast path for the observer: the service of a ``service/{Service}`` topic, validated."""
    if not topic.startswith("service/"):
        return None
    name = topic[8:]
    if "/" in name:
        return None
    return name if is_service_name(name) else None
