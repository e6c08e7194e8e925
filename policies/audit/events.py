"""Audit events (seed: AuditLogger.LogServiceFunctionCall / LogDataAccess) built from what sfa-ops
observed, with compliance info, sanitized — pure: no I/O, ``now`` passed in.

Every event is a dict ready for ``Store.audit_append``: ``ts`` (epoch seconds), ``kind``
(``service_call``, ``data_access``, ``auth``, ``authz``, ``compliance_violation``, ``audit_purge``,
``audit_loss``; kinds and field names are ``policies.audit.schema``, which the analysis jobs read)
and ``retention`` — the chain, one per retention period (``retention-365d``), so purging one
period never breaks another chain. The rest is camelCase, as the seed's AuditEvent.

Sanitizing (``compliance.yaml`` → ``redaction``): parameters and results go through
``policies.audit.redaction.sanitize`` (secret keys redacted, personal data masked, secrets in text
scrubbed, control characters neutralised, sizes capped); every other string (ids, user agent,
method) through ``clean_text``. Nothing raw survives into an event. A call by a user or from an
address under the ``enhanced_logging`` response action keeps its full parameters: the same
redaction with the larger caps of ``enhanced_redaction`` (marked ``enhancedLogging``).

``ComplianceTracker`` keeps each user's records touched over 24 h (bucketed, bounded) and runs
``policies.compliance.classification.check_access`` on each data access; a violation repeats at most once per
``repeat_s`` per (type, user), so a flood of reads gives one alert, not thousands.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from policies.audit import schema
from policies.audit.redaction import RedactionPolicy, clean_text, sanitize
from policies.common.config import format_duration, parse_duration
from policies.compliance.classification import (
    ComplianceInfo,
    CompliancePolicy,
    ComplianceViolation,
    DataAccess,
    check_access,
    classify,
)
from policies.security.entity_state import BoundedLRU, BucketedSum, Suppressions

CHAIN_PREFIX = "retention-"
META_CHAIN = f"{CHAIN_PREFIX}meta"
"""Chain of the audit log's own events (purges, loss), never purged by retention."""
_ID_LEN = 256
_TEXT_LEN = 512
_RECORD_IDS_MAX = 100
_ROLES_MAX = 32
_VIOLATION_SEVERITY = {"low": "info", "medium": "warning", "high": "error", "critical": "critical"}
ENHANCED_CAPS: Mapping[str, int] = {"max_string_length": 65_536, "max_items": 10_000, "max_depth": 64,
                                    "max_total_bytes": 1 << 20}
"""Size caps for calls under enhanced logging (never below the configured ones)."""


def enhanced_redaction(base: RedactionPolicy) -> RedactionPolicy:
    """``base``'s redaction rules with the ``ENHANCED_CAPS`` size caps: full parameters, still
    redacted (secrets removed, personal data masked), still bounded."""
    return base.model_copy(update={k: max(int(getattr(base, k)), v) for k, v in ENHANCED_CAPS.items()})


def chain_for(info: ComplianceInfo) -> str:
    """The retention chain of an event with this compliance info (``retention-365d``)."""
    return f"{CHAIN_PREFIX}{format_duration(info.retention_seconds)}"


def retention_of(chain: str) -> float | None:
    """Seconds of retention a chain stands for; None for the meta chain and foreign chains."""
    if not chain.startswith(CHAIN_PREFIX) or chain == META_CHAIN:
        return None
    try:
        return parse_duration(chain[len(CHAIN_PREFIX):])
    except ValueError:
        return None


def retention_chains(policy: CompliancePolicy) -> dict[str, float]:
    """Every chain the policy can produce, with its retention in seconds."""
    periods = {policy.default.retention, *(r.retention for r in policy.rules if r.retention is not None)}
    return {f"{CHAIN_PREFIX}{format_duration(p)}": float(p) for p in periods}


def purge_plan(chains: Mapping[str, float], now: float) -> list[tuple[str, float]]:
    """(chain, before_ts) pairs: events older than their chain's retention go."""
    return [(c, now - keep) for c, keep in sorted(chains.items())]


def _text(value: Any, limit: int = _ID_LEN) -> str | None:
    if value is None:
        return None
    return clean_text(value if isinstance(value, str) else str(value), limit)


def _roles(roles: Iterable[Any]) -> list[str]:
    return sorted(_text(r, 64) or "" for r in roles)[:_ROLES_MAX]


def _ts(value: Any, now: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value and abs(value) < 1e11:
        return float(value)
    return now


def _duration(value: Any) -> float | None:
    """A finite, non-negative number of milliseconds, else None (never raises: an integer too big
    for a float is not a duration)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        ms = float(value)
    except OverflowError:
        return None
    return ms if 0 <= ms < 1e15 else None


def payload_bytes(params: Any) -> int | None:
    """Size of a call's raw ``params`` as JSON (what ``payloadBytes`` records); None if it has none."""
    if params is None:
        return None
    try:
        return len(orjson.dumps(params))
    except (TypeError, orjson.JSONEncodeError):
        return None


def call_event(record: Mapping[str, Any], policy: CompliancePolicy, now: float, *,
               enhanced: RedactionPolicy | None = None) -> dict[str, Any]:
    """An observed call → its audit event. ``record``: ``ts``, ``service``, ``method``,
    ``userId``, ``sessionId``, ``correlationId``, ``durationMs``, ``code`` (None or 0 = success),
    ``ipAddress``, ``userAgent``, ``params`` (raw), optionally ``payloadBytes`` (else measured from
    ``params``) and ``result`` (raw). ``enhanced`` (``enhanced_redaction``) replaces the
    configured redaction for a call under enhanced logging."""
    redaction = enhanced if enhanced is not None else policy.redaction
    service = _text(record.get("service")) or "unknown"
    info = classify(service, None, policy)
    code = record.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) and code != 0 else None
    duration = record.get("durationMs")
    size = record.get("payloadBytes")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        size = payload_bytes(record.get("params"))
    event: dict[str, Any] = {
        "ts": _ts(record.get("ts"), now),
        "kind": schema.CALL,
        "retention": chain_for(info),
        "eventType": "ServiceFunctionCall",
        "service": service,
        "method": _text(record.get("method")),
        "userId": _text(record.get("userId")),
        "sessionId": _text(record.get("sessionId")),
        "correlationId": _text(record.get("correlationId")),
        "ipAddress": _text(record.get("ipAddress"), 64),
        "userAgent": _text(record.get("userAgent"), _TEXT_LEN),
        "parameters": sanitize(record.get("params"), redaction),
        "success": code is None,
        "resultCode": code,
        "durationMs": _duration(duration),
        "payloadBytes": size,
        "compliance": info.to_wire(),
    }
    if "result" in record:
        event["result"] = sanitize(record["result"], redaction)
    event[schema.ENHANCED_LOGGING] = enhanced is not None
    return event


def data_access_event(access: DataAccess, record_ids: Iterable[Any] | None, policy: CompliancePolicy,
                      now: float) -> dict[str, Any]:
    """A reported data access (``audit/{Service}/data-access``) → its audit event."""
    info = classify(access.service, access.collection, policy)
    ids = None
    if record_ids is not None:
        listed = list(record_ids)
        ids = sanitize(listed[:_RECORD_IDS_MAX], policy.redaction)
    return {
        "ts": _ts(access.timestamp, now),
        "kind": schema.DATA_ACCESS,
        "retention": chain_for(info),
        "eventType": "DataAccess",
        "service": _text(access.service),
        "userId": _text(access.user_id),
        "roles": _roles(access.roles),
        "collection": _text(access.collection),
        "operation": _text(access.operation, 32),
        "recordCount": access.record_count,
        "recordIds": ids,
        "compliance": info.to_wire(),
    }


def auth_event(*, user_id: str | None, ip_address: str | None, success: bool, timestamp: float,
               method: str | None, user_agent: str | None, reason: str | None, policy: CompliancePolicy,
               now: float) -> dict[str, Any]:
    """An authentication attempt (``security/auth/{event}``) → its audit event (default retention)."""
    return {
        "ts": _ts(timestamp, now),
        "kind": schema.AUTH,
        "retention": f"{CHAIN_PREFIX}{format_duration(policy.default.retention)}",
        "eventType": "Authentication",
        "userId": _text(user_id),
        "ipAddress": _text(ip_address, 64),
        "success": bool(success),
        "method": _text(method, 64),
        "userAgent": _text(user_agent, _TEXT_LEN),
        "reason": _text(reason, _TEXT_LEN),
    }


def authz_event(*, user_id: str, service: str, method: str, allowed: bool, timestamp: float,
                roles: Iterable[str], ip_address: str | None, policy: CompliancePolicy,
                now: float) -> dict[str, Any]:
    """An authorization decision (``security/authz/{event}``) → its audit event (the service's retention)."""
    name = _text(service) or "unknown"
    return {
        "ts": _ts(timestamp, now),
        "kind": schema.AUTHZ,
        "retention": chain_for(classify(name, None, policy)),
        "eventType": "Authorization",
        "userId": _text(user_id),
        "service": name,
        "method": _text(method),
        "allowed": bool(allowed),
        "roles": _roles(roles),
        "ipAddress": _text(ip_address, 64),
    }


def violation_record(v: ComplianceViolation, now: float) -> dict[str, Any]:
    """A compliance violation → its audit event (also the stored entry)."""
    return {
        "ts": now,
        "kind": "compliance_violation",
        "retention": META_CHAIN,
        "eventType": "ComplianceViolation",
        "type": v.type,
        "regulation": v.regulation,
        "severity": v.severity.value,
        "userId": _text(v.user_id),
        "description": _text(v.description, _TEXT_LEN),
        "details": dict(v.details),
    }


def violation_alert(v: ComplianceViolation, cluster: str, now: float) -> dict[str, Any]:
    """The alert dict for the AlertManager; the regulation is named as in the seed."""
    return {
        "labels": {"alertname": "ComplianceViolation", "severity": _VIOLATION_SEVERITY.get(v.severity.value, "warning"),
                   "component": "security", "cluster": cluster, "type": v.type, "regulation": v.regulation,
                   "user": _text(v.user_id) or ""},
        "annotations": {"summary": f"{v.regulation}: {_text(v.description, _TEXT_LEN)}"},
        "startsAt": now,
        "endsAt": None,
    }


def purge_event(chain: str, before_ts: float, deleted: int, now: float) -> dict[str, Any]:
    """The audit record of a retention purge (the purge itself is audited)."""
    return {"ts": now, "kind": "audit_purge", "retention": META_CHAIN, "eventType": "AuditPurge",
            "chain": chain, "before": before_ts, "deleted": deleted}


def loss_event(lost: int, reason: str, now: float) -> dict[str, Any]:
    """The audit record of events lost while the store was away (written once it is back)."""
    return {"ts": now, "kind": "audit_loss", "retention": META_CHAIN, "eventType": "AuditLoss",
            "lost": lost, "reason": _text(reason, _TEXT_LEN)}


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackerLimits:
    max_users: int = 100_000
    repeat_s: float = 3600.0


class _Usage:
    __slots__ = ("records",)

    def __init__(self) -> None:
        self.records = BucketedSum(window_s=86400.0, buckets=24)


class ComplianceTracker:
    """Per-user 24 h usage and the seed's compliance checks (module docstring)."""

    def __init__(self, *, policy: CompliancePolicy, limits: TrackerLimits | None = None) -> None:
        self.policy = policy
        self.limits = limits or TrackerLimits()
        self._users: BoundedLRU[str, _Usage] = BoundedLRU(capacity=self.limits.max_users)
        self._repeat = Suppressions(capacity=self.limits.max_users)
        self.violations = 0
        self.repeats = 0

    def observe(self, access: DataAccess, now: float) -> list[ComplianceViolation]:
        usage = self._users.get_or_create(access.user_id, _Usage)
        total = usage.records.add(now, max(0, access.record_count))
        out: list[ComplianceViolation] = []
        for v in check_access(access, total, self.policy):
            key = v.details.get("rule", v.type) if isinstance(v.details, Mapping) else v.type
            if self._repeat.admit(str(key), v.user_id, now, self.limits.repeat_s):
                out.append(v)
            else:
                self.repeats += 1
        self.violations += len(out)
        return out


__all__ = [
    "CHAIN_PREFIX",
    "META_CHAIN",
    "ComplianceTracker",
    "TrackerLimits",
    "auth_event",
    "authz_event",
    "call_event",
    "chain_for",
    "data_access_event",
    "loss_event",
    "payload_bytes",
    "purge_event",
    "purge_plan",
    "retention_chains",
    "retention_of",
    "violation_alert",
    "violation_record",
]
