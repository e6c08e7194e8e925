"""How the IncidentResponder writes incidents and actions: wire shapes of stored records. No I/O
beyond the store lookup named as such (the incident log is ``policies.response.incident``)."""

from __future__ import annotations

from typing import Any

from adapters.store import ActionRecord, IncidentRecord, StoreError
from adapters.store.buffer import BufferedStore
from policies.security.events import SEVERITY_RANK
from protocol.security import EnforcementAction, IncidentMessage


def incident_message(inc: IncidentRecord, event: str, cluster: str, now: float,
                     resolution: str | None = None) -> dict[str, Any]:
    """The ``system/{cluster}/incidents`` payload (protocol ``IncidentMessage``); ``resolution``
    (``operator`` or ``expired``) on a ``resolved`` event."""
    severity = inc.severity if inc.severity in SEVERITY_RANK else "warning"
    status = inc.status if inc.status in ("open", "investigating", "contained", "escalated", "resolved") else "open"
    return IncidentMessage.model_validate(
        {"event": event, "clusterId": cluster, "incidentId": inc.id,
         "incidentType": inc.type, "alertType": inc.data.get("alertType"), "severity": severity,
         "title": inc.title, "description": inc.description, "source": inc.source,
         "target": inc.data.get("target", ""), "status": status,
         "automatedResponse": list(inc.data.get("automatedResponse", [])),
         "awaitingApproval": list(inc.data.get("awaitingApproval", [])),
         "refused": list(inc.data.get("refused", [])),
         "escalation": inc.data.get("escalation"), "resolution": resolution, "timestamp": now}).to_wire()


def action_wire(rec: ActionRecord) -> dict[str, Any]:
    """A stored action as its ``EnforcementAction`` wire dict."""
    return EnforcementAction(action=rec.action, target=rec.target, incident_id=rec.incident_id, action_id=rec.id,
                             params=dict(rec.params), until=rec.until).to_wire()


async def stored(store: BufferedStore, inc_id: str) -> bool:
    """True when the incident is already in the store (an alert replayed after a restart)."""
    try:
        return await store.inner.incident_get(inc_id) is not None
    except StoreError:
        return False
