"""Which of the operations job's decisions become alerts, with what labels (pure).

Alert label conventions (they route through ``policies/alerting.yaml``): ``alertname``,
``severity`` (info/warning/error/critical/emergency), ``component`` (``service`` for tier 2,
the infrastructure component for tier 3), ``service``, ``cluster``.
"""

from __future__ import annotations

from typing import Any

from policies.alerting.routing import HELD_ALERT_REFRESH_S


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
    """Resolutions only for alerts that fired; and the conditions still held, to re-send.

    The alert manager ends an alert it does not hear of again within its resolve timeout (as
    Alertmanager does), so the conditions sfa-ops holds (a breaker open, a service down, an
    infrastructure error) are handed out again by :meth:`due` every ``refresh_s``. Security alerts
    (``component: security``) are events: their producers never resolve them, so they are not
    re-sent and end by the timeout. At most ``max_held`` alerts are remembered (oldest first out;
    ``dropped`` counts them).
    """

    def __init__(self, *, refresh_s: float = HELD_ALERT_REFRESH_S, max_held: int = 10_000) -> None:
        self.refresh_s, self.max_held = refresh_s, max_held
        self.firing: dict[tuple[tuple[str, str], ...], tuple[dict[str, Any], float]] = {}
        self.dropped = 0

    def filter(self, alerts: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        """The alerts to send: every firing one (remembered, sent at ``now``), and a resolution only
        for what fired. An alert whose ``endsAt`` is still ahead of ``now`` (a resolve timeout) is
        firing, not a resolution."""
        out = []
        for a in alerts:
            key = tuple(sorted(a["labels"].items()))
            if a["endsAt"] is None or a["endsAt"] > now:
                self.hold(a, now)
                out.append(a)
            elif key in self.firing:
                del self.firing[key]
                out.append(a)
        return out

    def hold(self, alert: dict[str, Any], sent_at: float) -> None:
        """Remember a firing alert as sent at ``sent_at`` (also used to restore after a restart)."""
        key = tuple(sorted(alert["labels"].items()))
        self.firing.pop(key, None)
        self.firing[key] = (alert, sent_at)
        while len(self.firing) > self.max_held:
            self.firing.pop(next(iter(self.firing)))
            self.dropped += 1

    def due(self, now: float) -> list[dict[str, Any]]:
        """Held conditions last sent ``refresh_s`` or more ago, to send again (marked sent at ``now``).
        Alerts whose ``endsAt`` (a resolve timeout) has passed have ended: they are forgotten."""
        out = []
        for key, (alert, sent_at) in list(self.firing.items()):
            if alert["endsAt"] is not None and alert["endsAt"] <= now:
                del self.firing[key]
            elif now - sent_at >= self.refresh_s and alert["labels"].get("component") != "security":
                self.hold(alert, now)
                out.append(alert)
        return out
