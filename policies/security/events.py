"""Security detection vocabulary: input events, user baselines and the alert they produce.

The analyst actor converts wire messages (``security/auth/+``, ``security/authz/+``,
``audit/+/data-access``, per-tick call counts) into the frozen events below and feeds them to
``policies.security.analyzer.SecurityAnalyzer``; what comes back are ``SecurityAlert`` values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from protocol.base import rfc3339_from_epoch

Severity = Literal["info", "warning", "error", "critical", "emergency"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2, "critical": 3, "emergency": 4}

AlertType = Literal[
    "brute_force_attempt",
    "credential_stuffing",
    "unusual_api_volume",
    "unusual_service_access",
    "data_exfiltration_suspected",
    "privilege_escalation",
    "excessive_data_access",
    "unusual_login_pattern",
]


# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthEvent:
    """A login attempt (``security/auth/{event}``). Either id may be missing on the wire."""

    user_id: str | None
    ip_address: str | None
    success: bool
    timestamp: float
    method: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthzEvent:
    """An authorization decision reported by a service (``security/authz/{event}``)."""

    user_id: str
    service: str
    method: str
    allowed: bool
    timestamp: float
    roles: frozenset[str] = frozenset()
    ip_address: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DataAccessEvent:
    """Records touched by one operation (``audit/{Service}/data-access``)."""

    user_id: str
    service: str
    collection: str
    operation: str
    record_count: int
    timestamp: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleChangeEvent:
    """A user's roles changed; ``changed_by`` is who made the change (None if unknown)."""

    user_id: str
    old_roles: frozenset[str]
    new_roles: frozenset[str]
    timestamp: float
    changed_by: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UserActivity:
    """Calls one user made per service during the ``window_s`` seconds ending at the tick's
    ``now`` — a delta: the analyzer sums deltas over its own volume window."""

    user_id: str
    calls: Mapping[str, int]
    window_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class UserBaseline:
    """A user's usual behaviour (computed from history by the baselines job)."""

    requests_per_hour: float
    services: frozenset[str]
    records_per_day: float


# --- output -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityAlert:
    """A detection, shaped like the seed's SecurityAlert plus a timestamp.

    ``source`` is where the activity came from (an IP, or the user for per-user patterns),
    ``target`` what it was aimed at (a user id or an IP). ``user_id``/``ip_address`` repeat the
    entity ids when known so a playbook can address them without parsing. ``metadata`` is
    read-only by convention (JSON-ready values)."""

    type: AlertType
    severity: Severity
    source: str
    target: str
    description: str
    timestamp: float
    user_id: str | None = None
    ip_address: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    recommended_actions: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        """Deterministic id of this alert (same alert, same id — replays and retries dedupe)."""
        raw = f"{self.type}|{self.source}|{self.target}|{self.timestamp:.6f}".encode()
        return hashlib.blake2b(raw, digest_size=8).hexdigest()

    def to_wire(self) -> dict[str, Any]:
        """camelCase JSON-ready dict, as the seed names the fields."""
        out: dict[str, Any] = {
            "type": self.type,
            "severity": self.severity,
            "source": self.source,
            "target": self.target,
            "description": self.description,
            "timestamp": rfc3339_from_epoch(self.timestamp),
            "metadata": dict(self.metadata),
            "recommendedActions": list(self.recommended_actions),
        }
        if self.user_id is not None:
            out["userId"] = self.user_id
        if self.ip_address is not None:
            out["ipAddress"] = self.ip_address
        return out
