"""When an incident that nobody resolves ends (pure; ``now`` is passed in).

Incidents raised from events (a detection, a service's own report) have no natural end: nothing
ever says the attack is over. So an open incident (``open``, ``contained``, ``escalated``, …) with
no new event for ``response.yaml`` ``incident_ttl`` is resolved as ``expired`` by the
IncidentResponder. An event is anything written to its log — a folded alert, an action carried
out or undone, an approval decided, evidence preserved — or its creation. An incident with actions
still waiting for approval does not expire: the approval request lapses first (``approval:
expire_after``), which is an event, and the TTL runs from then. The actions of an expired incident
keep their own schedule (a timed ban still runs to its end).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

CLOSED = frozenset({"resolved", "closed"})


def last_event_at(created_at: float, data: Mapping[str, Any]) -> float:
    """The latest of the incident's creation and the times (``ts``) in its log; entries without a
    finite numeric time are ignored."""
    latest = created_at
    log = data.get("log")
    if isinstance(log, list):
        for entry in log:
            ts = entry.get("ts") if isinstance(entry, Mapping) else None
            if isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts):
                latest = max(latest, float(ts))
    return latest


def incident_expired(*, status: str, created_at: float, data: Mapping[str, Any], now: float, ttl: float) -> bool:
    """True when the incident is still open, waits for no approval, and has had no event for
    ``ttl`` seconds at ``now``."""
    if status in CLOSED or data.get("awaitingApproval"):
        return False
    return now - last_event_at(created_at, data) >= ttl
