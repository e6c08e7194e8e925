"""Open incidents, active enforcement actions and recent alerts, as the status page shows them
(pure: no I/O, ``now`` passed in).

The supervisor keeps one :class:`OpsBoard` and feeds it what already passes through it — every
alert it routes to the alert manager (:meth:`OpsBoard.alerts_sent`) and every incident message and
retained active-action set the incident responder publishes through it (:meth:`OpsBoard.published`)
— so the status page costs no actor call beyond the supervisor's ``status()``. The open incidents
are also read from the store at start and every 30 s (:meth:`OpsBoard.restore_incidents`), so one
resolved outside operate (``drivers.incidents resolve``) leaves the page.

Bounds: the summary lists the :data:`RECENT_ALERTS` (20) alerts changed last, the
:data:`SHOWN_INCIDENTS` (50) open incidents opened last and the first :data:`SHOWN_ACTIONS` (50)
active actions; the counts beside them cover up to :data:`MAX_OPEN_INCIDENTS` (1 000) open
incidents, :data:`MAX_ACTIVE_ACTIONS` active actions (the wire's own cap) and
:data:`MAX_FIRING_ALERTS` (10 000) firing alerts (oldest forgotten first; ``dropped`` counts what a
cap pushed out). Text fields are cut to :data:`TEXT_CAP` characters.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol import ProtocolError, parse_model
from protocol.base import epoch_from_rfc3339, rfc3339_from_epoch
from protocol.security import MAX_ACTIVE_ACTIONS, ActiveActions, IncidentMessage

RECENT_ALERTS = 20
SHOWN_INCIDENTS = 50
SHOWN_ACTIONS = 50
MAX_OPEN_INCIDENTS = 1_000
MAX_FIRING_ALERTS = 10_000
TEXT_CAP = 300

_Key = tuple[tuple[str, str], ...]


def _text(value: Any) -> str:
    return str(value if value is not None else "")[:TEXT_CAP]


def _when(value: Any) -> str | None:
    """Epoch seconds or RFC 3339 text → RFC 3339 text (None when absent or unreadable)."""
    if isinstance(value, int | float) and value == value and abs(value) < 1e11:
        return rfc3339_from_epoch(float(value))
    if isinstance(value, str):
        try:
            return rfc3339_from_epoch(epoch_from_rfc3339(value))
        except ValueError:
            return None
    return None


def _epoch(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return epoch_from_rfc3339(value)
        except ValueError:
            return None
    return None


def active_actions_view(actions: Iterable[Mapping[str, Any]], now: float) -> dict[str, Any]:
    """Enforcement actions (``EnforcementAction`` wire dicts) still in force at ``now``: the first
    :data:`SHOWN_ACTIONS` (``action``, ``target``, ``until`` or None for no expiry, ``incidentId``),
    the count per action and the total."""
    live = []
    for a in actions:
        until = _epoch(a.get("until"))
        if until is None or until > now:
            live.append({"action": _text(a.get("action")), "target": _text(a.get("target")),
                         "until": _when(a.get("until")), "incidentId": a.get("incidentId") and _text(a["incidentId"])})
    return {"active": live[:SHOWN_ACTIONS], "byAction": dict(sorted(Counter(a["action"] for a in live).items())),
            "total": len(live)}


@dataclass
class OpsBoard:
    """See the module docstring."""

    alerts: OrderedDict[_Key, dict[str, Any]] = field(default_factory=OrderedDict)
    """The last alerts, by label set, most recently changed last."""
    firing: OrderedDict[_Key, float | None] = field(default_factory=OrderedDict)
    """Label sets firing, with their ``endsAt`` (None: until resolved)."""
    sent: Counter[str] = field(default_factory=Counter)
    """Alerts that started firing, per severity (a counter)."""
    incidents: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    incident_changes: int = 0
    """Incident messages seen (a store read taken before a change is not applied over it)."""
    dropped: int = 0
    refused: int = 0

    def alerts_sent(self, alerts: Iterable[Mapping[str, Any]], now: float) -> None:
        """Alert dicts (``labels``, ``annotations``, ``startsAt``, ``endsAt``) routed at ``now``."""
        for a in alerts:
            labels = a.get("labels")
            if not isinstance(labels, Mapping):
                self.refused += 1
                continue
            key: _Key = tuple(sorted((str(k), str(v)) for k, v in labels.items()))
            ends = _epoch(a.get("endsAt"))
            severity = _text(labels.get("severity") or "warning")
            if ends is None or ends > now:
                ended = self.firing.pop(key) if key in self.firing else now  # absent: a new alert
                if ended is not None and ended <= now:  # absent, or its resolve timeout passed
                    self.sent[severity] += 1
                self.firing[key] = ends
                while len(self.firing) > MAX_FIRING_ALERTS:
                    self.firing.popitem(last=False)
                    self.dropped += 1
            else:
                self.firing.pop(key, None)
            annotations = a.get("annotations") if isinstance(a.get("annotations"), Mapping) else {}
            self.alerts.pop(key, None)
            self.alerts[key] = {
                "alertname": _text(labels.get("alertname")), "severity": severity,
                "service": _text(labels.get("service") or labels.get("component") or ""),
                "summary": _text(annotations.get("summary") if annotations else ""),
                "startsAt": _when(a.get("startsAt")), "endsAt": ends, "updatedAt": now}
            while len(self.alerts) > RECENT_ALERTS:
                self.alerts.popitem(last=False)

    def published(self, kind: str, payload: Mapping[str, Any]) -> None:
        """A message the supervisor published for another actor: an incident (``kind`` incident,
        an ``IncidentMessage``) or the active set (``security_active``, ``ActiveActions``)."""
        if kind not in ("incident", "security_active"):
            return
        try:
            if kind == "security_active":
                self.actions = parse_model(ActiveActions, dict(payload)).to_wire()["actions"]
                return
            msg = parse_model(IncidentMessage, dict(payload))
        except ProtocolError:
            self.refused += 1
            return
        self.incident_changes += 1
        if msg.status == "resolved" or msg.event == "resolved":
            self.incidents.pop(msg.incident_id, None)
            return
        at = msg.timestamp.timestamp()
        before = self.incidents.pop(msg.incident_id, None)
        self._open(msg.incident_id, msg.severity, msg.incident_type, msg.title, msg.source, msg.status,
                   before["openedAt"] if before else at)

    def restore_incidents(self, records: Iterable[Any], *, changes: int | None = None) -> bool:
        """Replace the open incidents with the store's (``IncidentRecord``s, oldest first): after a
        restart, and now and then so one resolved outside operate (``drivers.incidents resolve``)
        leaves. ``changes``: :attr:`incident_changes` when the read began; if an incident message
        came since, nothing is replaced (False; the next read tries again)."""
        if changes is not None and changes != self.incident_changes:
            return False
        self.incidents.clear()
        for r in records:
            self._open(r.id, r.severity, r.type, r.title, r.source, r.status, float(r.created_at))
        return True

    def _open(self, inc_id: str, severity: str, kind: str, title: str, source: str, state: str,
              opened_at: float) -> None:
        self.incidents[_text(inc_id)] = {"id": _text(inc_id), "severity": _text(severity), "kind": _text(kind),
                                         "title": _text(title), "source": _text(source), "state": _text(state),
                                         "openedAt": opened_at}
        while len(self.incidents) > MAX_OPEN_INCIDENTS:
            self.incidents.popitem(last=False)
            self.dropped += 1

    def summary(self, now: float) -> dict[str, Any]:
        """What the supervisor's ``status()`` carries under ``ops`` (bounded; see the module doc)."""
        recent = [{**{k: v for k, v in a.items() if k not in ("endsAt", "updatedAt")},
                   "state": "resolved" if a["endsAt"] is not None and a["endsAt"] <= now else "firing",
                   "endsAt": None if a["endsAt"] is None else _when(a["endsAt"])}
                  for a in reversed(self.alerts.values())]
        newest = sorted(self.incidents.values(), key=lambda i: i["openedAt"], reverse=True)[:SHOWN_INCIDENTS]
        return {
            "alerts": {"recent": recent, "sent": dict(sorted(self.sent.items())),
                       "firing": sum(1 for e in self.firing.values() if e is None or e > now)},
            "incidents": {"open": [{**i, "openedAt": _when(i["openedAt"])} for i in newest],
                          "bySeverity": dict(sorted(Counter(i["severity"] for i in self.incidents.values()).items())),
                          "total": len(self.incidents)},
            "actions": active_actions_view(self.actions[:MAX_ACTIVE_ACTIONS], now),
            "dropped": self.dropped, "refused": self.refused,
        }
