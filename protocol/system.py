"""Messages sfa-ops publishes on ``system/{cluster}/…``: tier 2 and tier 3 notifications,
circuit-breaker events and retained state, the health summary, presence.

Units, one per field name in every message (the seed's): rates (``errorRate``, ``failureRate``,
``slowCallRate``, ``responseRate``) are fractions 0..1; ``retryAfter``, ``openUntil``, ``since`` and
``timestamp`` are instants (RFC 3339 UTC); a relative delay or a duration says its unit in its name
(``retryAfterSeconds``, ``downtimeSeconds``, ``p95Ms``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from protocol.base import Timestamp, WireModel

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
"""A rate as a fraction 0..1 (0.25 is 25 %)."""
Seconds = Annotated[float, Field(ge=0.0)]
"""A relative duration in seconds."""

Severity = Literal["info", "warning", "error", "critical", "emergency"]
ServiceStatus = Literal["healthy", "degraded", "down", "unknown"]
BreakerStateName = Literal["closed", "open", "half_open", "forced_open", "disabled", "metrics_only"]
Impact = Literal["low", "medium", "high", "critical"]
InfraComponent = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
"""An infrastructure component's name (``mqtt_broker``, ``postgresql_cluster``, …): lower-case
letters, digits and ``_``, at most 63 characters. Which components exist is the infrastructure
checker's probe registry (``adapters.probes.PROBES``), not a list here."""


class UnavailableDetails(WireModel):
    running_pods: int | None = None
    total_pods: int | None = None
    last_successful_response: Timestamp | None = None
    """Instant of the last successful answer."""
    error_rate: Fraction | None = None
    """Server-side failures / calls in the health window, 0..1 (the seed's ``"errorRate": 1.0``)."""
    failure_reason: str | None = None


class DegradedDetails(WireModel):
    error_rate: Fraction | None = None
    """Server-side failures / calls in the health window, 0..1."""
    response_rate: Fraction | None = None
    """Answered calls / calls in the health window, 0..1."""


class ServiceUnavailable(WireModel):
    """Tier 2: the seed's "System Error Topic Message Format"."""

    type: Literal["service_unavailable"] = "service_unavailable"
    cluster_id: str
    service: str
    reason: str
    details: UnavailableDetails = Field(default_factory=UnavailableDetails)
    estimated_recovery: str | None = None
    affected_operations: list[str] = Field(default_factory=list, max_length=20)
    affected_operations_omitted: int | None = None
    """Methods left out of ``affectedOperations`` (absent in the seed example)."""
    impact: Impact = "high"
    timestamp: Timestamp
    correlation_id: str


class ServiceDegraded(WireModel):
    type: Literal["service_degraded"] = "service_degraded"
    cluster_id: str
    service: str
    reason: str
    reasons: list[str] = Field(default_factory=list)
    details: DegradedDetails = Field(default_factory=DegradedDetails)
    estimated_recovery: str | None = None
    impact: Impact = "medium"
    timestamp: Timestamp
    correlation_id: str


class ServiceRecovered(WireModel):
    type: Literal["service_recovered"] = "service_recovered"
    cluster_id: str
    service: str
    previous_status: str | None = None
    downtime_seconds: Seconds | None = None
    timestamp: Timestamp
    correlation_id: str


class CascadingFailurePrevented(WireModel):
    type: Literal["cascading_failure_prevented"] = "cascading_failure_prevented"
    cluster_id: str
    origin_service: str
    affected_services: list[str]
    action: Literal["circuits_opened_preemptively"] = "circuits_opened_preemptively"
    held_back: list[str] = Field(default_factory=list)
    timestamp: Timestamp
    correlation_id: str


class InfrastructureError(WireModel):
    """Tier 3: the seed's "System-Wide Infrastructure Error Format" (broadcast only)."""

    type: Literal["infrastructure_error"] = "infrastructure_error"
    cluster_id: str
    component: InfraComponent
    severity: Severity
    message: str
    impact: str
    details: dict[str, Any] = Field(default_factory=dict)
    affected_topics: list[str] | None = None
    affected_services: list[str] | None = None
    recommendations: list[str] = Field(default_factory=list)
    timestamp: Timestamp
    correlation_id: str
    estimated_resolution: str | None = None
    escalation_required: bool = False


class InfrastructureRecovered(WireModel):
    type: Literal["infrastructure_recovered"] = "infrastructure_recovered"
    cluster_id: str
    component: InfraComponent
    message: str = ""
    downtime_seconds: float | None = None
    timestamp: Timestamp
    correlation_id: str


class BreakerStateChange(WireModel):
    """Published on ``system/{cluster}/circuit-breaker`` for every transition."""

    type: Literal["circuit_breaker_state_change"] = "circuit_breaker_state_change"
    cluster_id: str | None = None
    service: str
    topic: str
    from_state: BreakerStateName = Field(alias="from")
    to_state: BreakerStateName = Field(alias="to")
    reason: str
    failure_rate: Fraction | None = None
    """Failed / calls in the breaker's window when it changed, 0..1."""
    slow_call_rate: Fraction | None = None
    """Slow / calls in the breaker's window when it changed, 0..1."""
    retry_after: Timestamp | None = None
    """Instant from which calls may be tried again (the seed's ``RetryAfter``); only while the
    new state refuses calls."""
    retry_after_seconds: Seconds | None = None
    """The same as a delay from ``timestamp``."""
    timestamp: Timestamp


class BreakerState(WireModel):
    """Retained on ``system/{cluster}/circuit-breaker/{Service}``: the current state."""

    type: Literal["circuit_breaker_state"] = "circuit_breaker_state"
    cluster_id: str | None = None
    service: str
    state: BreakerStateName
    since: Timestamp
    """Instant the breaker entered ``state``."""
    reason: str | None = None
    retry_after: Timestamp | None = None
    """Instant from which calls may be tried again; only while ``state`` refuses calls."""
    retry_after_seconds: Seconds | None = None
    """The same as a delay from ``since``."""
    open_until: Timestamp | None = None
    """Instant the open state ends (equal to ``retryAfter``)."""
    timestamp: Timestamp


class ServiceHealthEntry(WireModel):
    status: ServiceStatus
    breaker: BreakerStateName
    error_rate: Fraction = 0.0
    """Server-side failures / calls in the health window, 0..1."""
    p95_ms: float | None = Field(default=None, alias="p95Ms")
    """95th percentile latency in milliseconds."""
    calls_per_second: float = 0.0
    instances_dropped: int | None = None
    """Instances that announced themselves beyond the per-service cap (absent when none)."""


class ObservedCounters(WireModel):
    calls: int = 0
    responses: int = 0
    timeouts: int = 0
    malformed: int = 0
    dropped: int = 0
    rejected: int = 0
    """Calls naming a reply topic sfa-ops never answers on (``protocol.intake``)."""
    unknown_services: int = 0
    """Calls to traffic-only service names beyond ``max_discovered_services``."""
    answer_failed: int = 0
    capped: int = 0


class SystemHealth(WireModel):
    """Retained on ``system/{cluster}/health``."""

    type: Literal["system_health"] = "system_health"
    cluster_id: str
    status: ServiceStatus
    timestamp: Timestamp
    services: dict[str, ServiceHealthEntry] = Field(default_factory=dict)
    infrastructure: dict[str, Any] = Field(default_factory=dict)
    observed: ObservedCounters = Field(default_factory=ObservedCounters)


class Presence(WireModel):
    """``system/{cluster}/presence/{Service}/{instance}``, retained; offline is also the Last Will."""

    status: Literal["online", "offline"]
    timestamp: Timestamp | None = None
    functions: list[str] | None = None


MAX_ANCHOR_CHAINS = 256
"""Chains one audit anchor lists (one per retention class: a handful in practice)."""


class AuditChainAnchor(WireModel):
    """One audit chain as it stood: its head row and how many rows it ever held."""

    chain: str = Field(min_length=1, max_length=128)
    count: int = Field(ge=0)
    """Rows ever appended to the chain: those present plus those purged by retention."""
    head_id: int = Field(ge=0)
    head_hash: str = Field(max_length=128)
    """The head row's hash (``hmac-sha256:<hex>``, or sha256 hex on an unkeyed store)."""


class AuditAnchor(WireModel):
    """Retained on ``system/{cluster}/audit/anchor`` (signed with the other system messages) and
    appended as one JSON line to the anchor file: what ``drivers.audit verify --anchors`` checks
    the chains against (tail truncation, whole deletion)."""

    type: Literal["audit_anchor"] = "audit_anchor"
    cluster_id: str
    timestamp: Timestamp
    rows: int = Field(ge=0)
    """Rows ever appended, over every chain."""
    chains: list[AuditChainAnchor] = Field(default_factory=list, max_length=MAX_ANCHOR_CHAINS)
