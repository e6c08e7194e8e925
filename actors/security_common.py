"""What the security actors (SecurityAnalyst, IncidentResponder, AuditWriter) share: their
options, the persist-then-publish outlet, and alert conversion.

:class:`Outlet` sends through the Supervisor when one is given (``supervisor.publish`` /
``supervisor.alert``: it persists to the outbox, publishes QoS 1 and routes alerts through the
AlertManager); without one (tests, a standalone deployment) it does the same itself: outbox
first, then QoS 1 on its own bus, marked published once flushed; alerts go straight to
``system/{cluster}/alerts`` in the AlertMessage shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.enforcement.actions import EnforcementConfig
from adapters.mqtt.bus import MqttBus
from adapters.mqtt.outbox import Outbox
from adapters.store import Store
from policies.security.events import SecurityAlert
from protocol import topics
from protocol.base import epoch_from_rfc3339
from protocol.security import AlertMessage

logger = logging.getLogger("sfa_ops.security")


@dataclass(frozen=True, kw_only=True)
class SecurityOptions:
    """Tunables of the security actors (defaults are the production values)."""

    enforcement: EnforcementConfig = field(default_factory=EnforcementConfig)
    pattern_interval_s: float = 300.0
    """Periodic pattern rules (unusual volume, new services) run this often (seed: 5 minutes)."""
    baseline_refresh_s: float = 300.0
    alert_flush_s: float = 0.1
    undo_poll_s: float = 0.2
    """In-memory undo schedule check."""
    store_poll_s: float = 2.0
    housekeeping_s: float = 60.0
    """The responder expires idle incidents (``response.yaml`` ``incident_ttl``) and refreshes the
    retained active set this often."""
    active_refresh_s: float = 300.0
    """The retained active set is republished at least this often, so an SDK that refuses stale
    system messages (``sdk.trust``: 15 min) never finds the current one too old."""
    evidence_delay_s: float = 2.0
    """``preserve_evidence`` collects this long after the incident (the audit writer's batch
    holding the triggering events is stored by then: it flushes every ``audit_flush_s``)."""
    """Undos requested through the store (``drivers.incidents lift``) are picked up this often."""
    audit_flush_s: float = 0.25
    audit_purge_s: float = 3600.0
    audit_max_pending: int = 10_000
    store_max_queued: int = 10_000
    subscribe_qos: int = 1
    incoming_queue_size: int = 100_000
    default_rate_per_minute: float = 60.0


def active_actions_topic(cluster: str) -> str:
    """``system/{cluster}/security/actions/active``: the retained ActiveActions set."""
    return f"{topics.security_actions(cluster)}/active"


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("_"))


def alert_labels(alert: Mapping[str, Any], cluster: str) -> dict[str, str]:
    labels = {
        "alertname": _camel(str(alert["type"])), "severity": str(alert["severity"]), "component": "security",
        "cluster": cluster, "type": str(alert["type"]), "source": str(alert.get("source", "")),
        "target": str(alert.get("target", "")),
    }
    if alert.get("userId"):
        labels["user"] = str(alert["userId"])
    if alert.get("ipAddress"):
        labels["ip"] = str(alert["ipAddress"])
    return labels


def security_alert_dict(alert: Mapping[str, Any], cluster: str, now: float, *,
                        resolve_after: float | None = None) -> dict[str, Any]:
    """A SecurityAlert wire dict → the alert dict the AlertManager ingests. Nothing ever resolves
    a detection, so it ends ``resolve_after`` seconds after it starts (when given)."""
    ann = {"summary": str(alert.get("description", "")), "description": str(alert.get("description", ""))}
    if alert.get("recommendedActions"):
        ann["recommendedActions"] = "; ".join(str(a) for a in alert["recommendedActions"])
    return {"labels": alert_labels(alert, cluster), "annotations": ann, "startsAt": now,
            "endsAt": None if resolve_after is None else now + resolve_after}


def plain_alert(name: str, severity: str, cluster: str, now: float, summary: str,
                labels: Mapping[str, str] | None = None, *, resolved: bool = False,
                resolve_after: float | None = None) -> dict[str, Any]:
    """Any other security-component alert (escalations, violations, audit loss). One that no
    later message resolves should say when it ends (``resolve_after`` seconds from ``now``)."""
    ends = now if resolved else None if resolve_after is None else now + resolve_after
    return {"labels": {"alertname": name, "severity": severity, "component": "security", "cluster": cluster,
                       **(labels or {})},
            "annotations": {"summary": summary}, "startsAt": now, "endsAt": ends}


def alert_from_wire(doc: Mapping[str, Any]) -> SecurityAlert:
    """Parse ``SecurityAlert.to_wire()`` back; raises ValueError/KeyError/TypeError on bad input."""
    ts = doc["timestamp"]
    when = epoch_from_rfc3339(ts) if isinstance(ts, str) else float(ts)
    return SecurityAlert(
        type=doc["type"], severity=doc["severity"], source=str(doc["source"]), target=str(doc["target"]),
        description=str(doc.get("description", "")), timestamp=when, user_id=doc.get("userId"),
        ip_address=doc.get("ipAddress"), metadata=dict(doc.get("metadata") or {}),
        recommended_actions=tuple(doc.get("recommendedActions") or ()),
    )


class Outlet:
    """Persist-then-publish and alerting, through the Supervisor or on our own (module doc)."""

    def __init__(self, *, cluster: str, store: Store, bus: MqttBus | None, supervisor: Any = None) -> None:
        self.cluster = cluster
        self.store = store
        self.bus = bus
        self.supervisor = supervisor
        self._outbox = Outbox(store=store, bus=bus, logger=logger) if bus is not None else None
        self.published = 0

    async def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False, kind: str) -> None:
        self.published += 1
        if self.supervisor is not None:
            await self.supervisor.publish.remote(topic, payload, retain, kind)
            return
        assert self._outbox is not None, "an Outlet without a supervisor needs a bus"
        await self._outbox.publish(topic, payload, retain=retain, kind=kind)

    async def alert(self, alerts: list[dict[str, Any]]) -> None:
        if not alerts:
            return
        if self.supervisor is not None:
            self.supervisor.alert.remote(alerts)
            return
        assert self.bus is not None
        for a in alerts:
            ends = a.get("endsAt")
            msg = AlertMessage(cluster_id=self.cluster,
                               status="resolved" if ends is not None and ends <= a["startsAt"] else "firing",
                               labels=a["labels"], annotations=a["annotations"], starts_at=a["startsAt"],
                               ends_at=ends, timestamp=time.time())
            self.bus.publish_nowait(topics.system_alerts(self.cluster), msg.to_wire(), qos=1)

    async def flush(self, timeout: float = 1.0) -> None:
        """Wait for the bus, then mark what the broker acknowledged as published in the outbox."""
        if self._outbox is not None:
            await self._outbox.flush(timeout)
