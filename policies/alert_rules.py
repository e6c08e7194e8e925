"""Which of the operations job's decisions become alerts, with what labels (pure).

Alert label conventions (they route through ``policies/alerting.yaml``): ``alertname``,
``severity`` (info/warning/error/critical/emergency), ``component`` (``service`` for tier 2,
the infrastructure component for tier 3), ``service``, ``cluster``.
"""

from __future__ import annotations

from typing import Any


def _alert(name: str, severity: str, service: str, cluster: str, now: float, *, summary: str,
           resolved: bool = False, **extra: str) -> dict[str, Any]:
    labels = {"alertname": name, "severity": severity, "component": "service", "service": service,
              "cluster": cluster, **extra}
    return {
        "labels": labels,
        "annotations": {"summary": summary},
        "startsAt": now,
        "endsAt": now if resolved else None,
    }


def alerts_for_health(message: dict[str, Any], cluster: str, now: float) -> list[dict[str, Any]]:
    """service_unavailable → critical; service_degraded → warning; service_recovered resolves both."""
    kind = message.get("type")
    service = str(message.get("service"))
    if kind == "service_unavailable":
        return [
            _alert("ServiceUnavailable", "critical", service, cluster, now,
                   summary=f"{service} is unavailable ({message.get('reason')})"),
            _alert("ServiceDegraded", "warning", service, cluster, now, summary="superseded", resolved=True),
        ]
    if kind == "service_degraded":
        return [
            _alert("ServiceDegraded", "warning", service, cluster, now,
                   summary=f"{service} is degraded ({', '.join(message.get('reasons') or [])})"),
            _alert("ServiceUnavailable", "critical", service, cluster, now, summary="recovered", resolved=True),
        ]
    if kind == "service_recovered":
        return [
            _alert("ServiceUnavailable", "critical", service, cluster, now, summary="recovered", resolved=True),
            _alert("ServiceDegraded", "warning", service, cluster, now, summary="recovered", resolved=True),
        ]
    return []


def alerts_for_breaker(event: dict[str, Any], cluster: str, now: float) -> list[dict[str, Any]]:
    """A breaker opening is an error alert; closing resolves it."""
    service = str(event.get("service"))
    to = event.get("to")
    if to in ("open", "forced_open"):
        return [_alert("CircuitBreakerOpen", "error", service, cluster, now,
                       summary=f"Circuit breaker for {service} opened: {event.get('reason')}")]
    if to == "closed":
        return [_alert("CircuitBreakerOpen", "error", service, cluster, now, summary="closed", resolved=True)]
    return []


class FiringSet:
    """Resolutions only for alerts that fired: a recovery must not resolve what never fired."""

    def __init__(self) -> None:
        self.firing: set[tuple[tuple[str, str], ...]] = set()

    def filter(self, alerts: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
        """Firing alerts pass; a resolution passes only for a key that fired. With ``now``, an
        alert whose ``endsAt`` is still ahead (a resolve timeout) is firing, not a resolution."""
        out = []
        for a in alerts:
            key = tuple(sorted(a["labels"].items()))
            if a["endsAt"] is None or (now is not None and a["endsAt"] > now):
                self.firing.add(key)
                out.append(a)
            elif key in self.firing:
                self.firing.discard(key)
                out.append(a)
        return out
