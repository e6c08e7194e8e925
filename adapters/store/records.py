"""The store's records: what the ``Store`` interface takes and returns (outbox, alerts, incidents,
actions, audit rows and their verification, metric rollups, dependencies, baselines)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True, slots=True)
class OutboxRecord:
    """A message written before it is published (findings, system messages)."""

    id: int
    topic: str
    payload: dict[str, Any]
    qos: int
    retain: bool
    kind: str
    created_at: float
    published_at: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class AlertRecord:
    """An alert as the alert manager tracks it, keyed by ``fingerprint``."""

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    status: str = "firing"
    starts_at: float
    ends_at: float | None = None
    updated_at: float | None = None  # set by the store; ignored on upsert


@dataclass(frozen=True, kw_only=True, slots=True)
class IncidentRecord:
    """A security or operations incident. ``created_at`` is kept from the first upsert."""

    id: str
    type: str
    severity: str
    title: str
    description: str = ""
    source: str = ""
    status: str = "open"
    automated_response: bool = False
    created_at: float
    updated_at: float | None = None  # set by the store; ignored on upsert
    data: dict[str, Any] = field(default_factory=dict)


# Incident statuses that are no longer open; anything else counts as open.
CLOSED_INCIDENT_STATUSES = ("resolved", "closed")


@dataclass(frozen=True, kw_only=True, slots=True)
class ActionRecord:
    """An enforcement action (block_ip, rate_limit_user, …), maybe tied to an incident.

    Active means ``status == "applied"``, not undone, and ``until`` unset or in the future.
    """

    id: str
    incident_id: str | None
    action: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)
    status: str = "applied"
    created_at: float
    until: float | None = None
    undo_at: float | None = None
    undone_at: float | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditRecord:
    """One row of a hash-chained audit log (``chain`` is the retention class)."""

    id: int
    chain: str
    ts: float
    kind: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyResult:
    """Outcome of ``audit_verify``: ``first_broken_id`` is the first row whose link fails."""

    ok: bool
    checked: int
    first_broken_id: int | None = None
    reason: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricRollup:
    """Per-service, per-minute call statistics. ``latency_sketch`` is opaque to the store."""

    service: str
    minute: float
    calls: int
    outcomes: dict[str, int] = field(default_factory=dict)  # error code (or "ok") -> count
    latency_sketch: bytes = b""
    concurrency_max: int = 0
    concurrency_avg: float = 0.0
    timeouts: int = 0
    queue_depth: int = 0
    """Calls still awaiting an answer at the minute's end."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Dependency:
    """A learned call edge ``caller -> callee``."""

    caller: str
    callee: str
    count: int
    last_seen: float


@dataclass(frozen=True, kw_only=True, slots=True)
class BaselineRecord:
    """One version of a learned baseline of some ``kind``."""

    kind: str
    version: int
    data: dict[str, Any]
    created_at: float
