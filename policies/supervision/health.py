"""The supervisor's health summary and the messages it relays (pure).

- :func:`roll_up`: the system status from the services' statuses (the worst of them, except that the
  system is ``down`` only when every service is).
- :func:`system_health`: the retained ``system/{cluster}/health`` message, built through
  :class:`protocol.system.SystemHealth`.
- :class:`HealthMemo` and :func:`health_due`: the summary is republished when it changed (apart from
  its timestamp) or after :data:`HEALTH_MAX_SILENCE_S` without one.
- :func:`system_message`: a tier 2 or tier 3 message another actor built, parsed through its model.
- :func:`alert_message`: an alert as published on ``system/{cluster}/alerts`` when no alert manager
  routes it; :func:`store_alert`: the alert about the store being unavailable, or back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from protocol.security import AlertMessage
from protocol.system import (
    InfrastructureError,
    InfrastructureRecovered,
    ServiceDegraded,
    ServiceRecovered,
    ServiceUnavailable,
    SystemHealth,
)

HEALTH_MAX_SILENCE_S = 10.0
"""The retained health summary is published at least this often, changed or not."""
SEVERITY_ORDER = {"healthy": 0, "unknown": 0, "degraded": 1, "down": 2}
OBSERVED_KEYS = ("calls", "responses", "timeouts", "malformed", "dropped", "rejected", "unknownServices",
                 "answerFailed", "capped")

SystemMessage = ServiceUnavailable | ServiceDegraded | ServiceRecovered | InfrastructureError | InfrastructureRecovered
_SYSTEM_MESSAGES: dict[str, TypeAdapter[Any]] = {
    m.model_fields["type"].default: TypeAdapter(m)
    for m in (ServiceUnavailable, ServiceDegraded, ServiceRecovered, InfrastructureError, InfrastructureRecovered)
}


def roll_up(statuses: Iterable[str]) -> str:
    """healthy when no service is degraded or down (``unknown`` counts as healthy); degraded when one
    is; down only when every service is down. No services: healthy."""
    seen = list(statuses)
    if seen and all(s == "down" for s in seen):
        return "down"
    worst = max((SEVERITY_ORDER.get(s, 0) for s in seen), default=0)
    return "healthy" if worst == 0 else "degraded"


def observed_totals(per_observer: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The observers' counters summed (the names of ``ObservedCounters``)."""
    out = dict.fromkeys(OBSERVED_KEYS, 0)
    for c in per_observer:
        for k in OBSERVED_KEYS:
            out[k] += int(c.get(k, 0))
    return out


def system_health(cluster: str, now: float, summaries: Mapping[str, Mapping[str, Any]],
                  infrastructure: Mapping[str, Any], counters: Iterable[Mapping[str, Any]]) -> SystemHealth:
    """The health summary: every service's entry, the infrastructure section, the observers' totals."""
    status = roll_up(str(s.get("status", "healthy")) for s in summaries.values())
    return SystemHealth.model_validate(
        {"clusterId": cluster, "status": status, "timestamp": now, "services": dict(sorted(summaries.items())),
         "infrastructure": dict(infrastructure), "observed": observed_totals(counters)})


@dataclass(frozen=True, slots=True)
class HealthMemo:
    """What was last published: the summary without its timestamp, and when."""

    last: dict[str, Any] | None = None
    at: float = float("-inf")


def health_due(memo: HealthMemo, health: SystemHealth, now: float) -> tuple[HealthMemo, bool]:
    """Publish ``health`` now? Yes when it differs from the last one apart from its timestamp, or
    when the last one is :data:`HEALTH_MAX_SILENCE_S` old. Returns the memo to keep and the answer."""
    comparable = {k: v for k, v in health.to_wire().items() if k != "timestamp"}
    if comparable != memo.last or now - memo.at >= HEALTH_MAX_SILENCE_S:
        return HealthMemo(comparable, now), True
    return memo, False


def system_message(message: SystemMessage | Mapping[str, Any]) -> SystemMessage | dict[str, Any]:
    """A tier 2/3 message (service_* or infrastructure_*) through its model; one that does not parse
    is returned as the dict it came as (published all the same: a finding is never dropped)."""
    if not isinstance(message, Mapping):
        return message
    adapter = _SYSTEM_MESSAGES.get(str(message.get("type")))
    if adapter is None:
        return dict(message)
    try:
        parsed: SystemMessage = adapter.validate_python(dict(message))
    except ValidationError:
        return dict(message)
    return parsed


def alert_message(alert: Mapping[str, Any], cluster: str, now: float) -> AlertMessage:
    """An alert dict (``labels``, ``annotations``, ``startsAt``, ``endsAt``) as the ``mqtt`` receiver
    shape, resolved when it has ended by ``now``."""
    ends = alert.get("endsAt")
    return AlertMessage(cluster_id=cluster, status="resolved" if ends is not None and ends <= now else "firing",
                        labels=alert["labels"], annotations=alert.get("annotations") or {},
                        starts_at=alert["startsAt"], ends_at=ends, timestamp=now)


def store_alert(cluster: str, now: float, *, error: str | None) -> dict[str, Any]:
    """``StoreUnavailable`` firing (``error``: why) or, with ``error=None``, resolved."""
    return {"labels": {"alertname": "StoreUnavailable", "severity": "critical", "component": "store",
                       "cluster": cluster},
            "annotations": {"summary": "store recovered" if error is None else f"sfa-ops store unavailable: {error}"},
            "startsAt": now, "endsAt": now if error is None else None}


__all__ = ["HEALTH_MAX_SILENCE_S", "HealthMemo", "SystemMessage", "alert_message", "health_due", "observed_totals",
           "roll_up", "store_alert", "system_health", "system_message"]
