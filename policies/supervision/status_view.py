"""What the status page, ``/status.json`` and ``/metrics`` show, derived from one supervisor status
(pure: the caller passes the status and ``now``).

Metric names follow Prometheus conventions (``sfa_ops_`` prefix, base units, ``_total`` for
counters, which the exposition adds). A breaker's state is a number so it can be graphed and
alerted on: 0 closed, 1 half_open, 2 open (``forced_open`` too); -1 when the breaker does not act
(``disabled``, ``metrics_only``). A service's and a component's status is a state set: one series
per possible status, 1 for the current one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from policies.infrastructure.checks import Status as InfraStatus

BREAKER_VALUE = {"closed": 0.0, "half_open": 1.0, "open": 2.0, "forced_open": 2.0,
                 "disabled": -1.0, "metrics_only": -1.0}
SERVICE_STATUSES = ("healthy", "degraded", "down", "unknown")
INFRA_STATUSES = tuple(s.value for s in InfraStatus)
"""What an infrastructure checker reports (``policies.infrastructure.checks.Status``)."""
OBSERVED = {
    "calls": "calls observed on service/+",
    "responses": "responses observed",
    "timeouts": "calls that got no response within the call timeout",
    "malformed": "messages that did not parse",
    "dropped": "messages dropped by a full intake queue",
    "rejected": "calls naming a reply topic sfa-ops never answers on",
    "unknownServices": "calls to traffic-only services beyond max_discovered_services",
    "answerFailed": "answers sfa-ops could not send",
    "capped": "entries refused by a table cap",
}
STALE_AFTER_S = 10.0
"""A status older than this (the supervisor not answering) makes ``/readyz`` fail."""


@dataclass(frozen=True)
class Sample:
    labels: tuple[tuple[str, str], ...]
    value: float
    suffix: str = ""
    """A histogram's ``_bucket``, ``_sum`` or ``_count``."""


@dataclass(frozen=True)
class Family:
    name: str
    kind: Literal["gauge", "counter", "histogram"]
    help: str
    samples: list[Sample] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append(Sample(tuple(sorted(labels.items())), float(value)))


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def metric_families(status: Mapping[str, Any] | None, *, age_s: float | None) -> list[Family]:
    """Every series for one status (``None``: the supervisor has not answered yet)."""
    up = Family("sfa_ops_up", "gauge", "1 while the supervisor answers and its status is fresh")
    up.add(1.0 if status is not None and age_s is not None and age_s <= STALE_AFTER_S else 0.0)
    families = [up]
    if status is None:
        return families
    health = status.get("health") or {}
    cluster = str(health.get("clusterId", ""))
    svc_status = Family("sfa_ops_service_status", "gauge", "1 for the service's current status")
    breaker = Family("sfa_ops_breaker_state", "gauge",
                     "circuit breaker: 0 closed, 1 half_open, 2 open, -1 not acting")
    error_ratio = Family("sfa_ops_service_error_ratio", "gauge",
                         "server-side failures / calls in the health window (0..1)")
    p95 = Family("sfa_ops_service_latency_p95_seconds", "gauge", "95th percentile call latency")
    rate = Family("sfa_ops_service_calls_per_second", "gauge", "calls per second in the health window")
    for name, entry in sorted((health.get("services") or {}).items()):
        if not isinstance(entry, Mapping):
            continue
        current = entry.get("status", "unknown")
        for s in SERVICE_STATUSES:
            svc_status.add(1.0 if s == current else 0.0, cluster=cluster, service=name, status=s)
        breaker.add(BREAKER_VALUE.get(str(entry.get("breaker")), -1.0), cluster=cluster, service=name)
        error_ratio.add(float(entry.get("errorRate") or 0.0), cluster=cluster, service=name)
        if entry.get("p95Ms") is not None:
            p95.add(float(entry["p95Ms"]) / 1000.0, cluster=cluster, service=name)
        rate.add(float(entry.get("callsPerSecond") or 0.0), cluster=cluster, service=name)
    infra = Family("sfa_ops_infrastructure_status", "gauge", "1 for the component's current status")
    for component, entry in sorted((health.get("infrastructure") or {}).items()):
        current = entry.get("status", "unknown") if isinstance(entry, Mapping) else "unknown"
        for s in INFRA_STATUSES:
            infra.add(1.0 if s == current else 0.0, cluster=cluster, component=component, status=s)
    observed = Family("sfa_ops_observed", "counter", "messages observed, by outcome")
    for key in OBSERVED:
        observed.add(float((health.get("observed") or {}).get(key, 0)), cluster=cluster, outcome=_snake(key))
    published = Family("sfa_ops_published", "counter", "messages sfa-ops published, by kind")
    for kind, n in sorted((status.get("published") or {}).items()):
        published.add(float(n), cluster=cluster, kind=str(kind))
    monitors = Family("sfa_ops_monitored_services", "gauge", "services with a monitor actor")
    monitors.add(float(len(status.get("monitors") or ())), cluster=cluster)
    from policies.metrics.ops_series import ops_families
    from policies.metrics.series import series_families  # here: they build on Family (no import cycle)

    return [*families, svc_status, breaker, error_ratio, p95, rate, infra, observed, published, monitors,
            *series_families(status, cluster), *ops_families(status, cluster)]


def status_view(status: Mapping[str, Any] | None, *, age_s: float | None) -> dict[str, Any]:
    """The document behind ``/status.json`` and the page: one row per service and component."""
    if status is None:
        return {"ready": False, "ageSeconds": None, "cluster": None, "status": "unknown",
                "services": [], "infrastructure": [], "observed": {}, **ops_view(None)}
    health = status.get("health") or {}
    services = [
        {"service": name, "status": e.get("status", "unknown"), "breaker": e.get("breaker", "closed"),
         "errorRate": e.get("errorRate", 0.0), "p95Ms": e.get("p95Ms"),
         "callsPerSecond": e.get("callsPerSecond", 0.0)}
        for name, e in sorted((health.get("services") or {}).items()) if isinstance(e, Mapping)
    ]
    infrastructure = [
        {"component": name, "status": e.get("status", "unknown") if isinstance(e, Mapping) else "unknown",
         "details": {k: v for k, v in e.items() if k != "status"} if isinstance(e, Mapping) else {}}
        for name, e in sorted((health.get("infrastructure") or {}).items())
    ]
    return {"ready": age_s is not None and age_s <= STALE_AFTER_S, "ageSeconds": age_s,
            "cluster": health.get("clusterId"), "status": health.get("status", "unknown"),
            "timestamp": health.get("timestamp"), "services": services, "infrastructure": infrastructure,
            "observed": dict(health.get("observed") or {}), **ops_view(status.get("ops"))}


def ops_view(ops: Mapping[str, Any] | None) -> dict[str, Any]:
    """``incidents`` (open: ``id``, ``severity``, ``kind``, ``title``, ``source``, ``openedAt``,
    ``state``; at most 50, opened last first), ``actions`` (active: ``action``, ``target``, ``until``,
    ``incidentId``; at most 50) and ``alerts`` (``alertname``, ``severity``, ``service``, ``summary``,
    ``startsAt``, ``endsAt``, ``state`` firing|resolved; the 20 changed last, newest first), from the
    supervisor's ``ops`` summary (``policies.supervision.ops_board``); ``…Total`` counts beyond the lists. A
    section the source does not carry is None (unknown), not an empty list (none)."""
    ops = ops if isinstance(ops, Mapping) else {}

    def section(name: str, key: str) -> tuple[list[Any] | None, int | None]:
        part = ops.get(name)
        if not isinstance(part, Mapping) or not isinstance(part.get(key), list):
            return None, None
        rows = [dict(r) for r in part[key] if isinstance(r, Mapping)]
        return rows, int(part.get("total", len(rows)))

    incidents, incidents_total = section("incidents", "open")
    actions, actions_total = section("actions", "active")
    alerts, _ = section("alerts", "recent")
    firing = ops.get("alerts", {}).get("firing") if isinstance(ops.get("alerts"), Mapping) else None
    return {"incidents": incidents, "incidentsTotal": incidents_total, "actions": actions,
            "actionsTotal": actions_total, "alerts": alerts, "alertsFiring": firing}
