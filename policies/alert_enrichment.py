"""Alert enrichment, pure: the recent events shown with an alert and its rendered runbook steps.

The AlertManager actor adds both to an alert's annotations (``recentEvents``, ``runbook``) as JSON.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any

from policies.alert_model import Alert, format_time
from policies.runbooks import RunbookError, RunbookPolicy, render_runbook, select_runbook

__all__ = ["RECENT_SHOWN", "RecentEvents", "event_of", "runbook_steps"]

RECENT_SHOWN = 5
_EVENT_KEYS = ("timestamp", "type", "event", "alertname", "severity", "status", "service", "component",
               "method", "reason", "message", "summary", "errorType")
# Label → runbook placeholder (policies/runbooks.yaml names them so).
_PLACEHOLDERS = {"service": "SERVICE_NAME", "component": "COMPONENT", "namespace": "NAMESPACE",
                 "node": "NODE", "instance": "INSTANCE"}


class RecentEvents:
    """The last ``per_key`` events per service/component, for at most ``max_keys`` keys (LRU)."""

    def __init__(self, *, per_key: int = 20, max_keys: int = 1000) -> None:
        self.per_key, self.max_keys = per_key, max_keys
        self._rings: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()

    def note(self, event: Mapping[str, Any]) -> None:
        """Keep a trimmed copy (known keys, short strings) under its service and component."""
        slim = {k: (v[:200] if isinstance(v, str) else v) for k in _EVENT_KEYS
                if isinstance(v := event.get(k), str | int | float | bool)}
        for key in {str(event[k]) for k in ("service", "component") if event.get(k)}:
            ring = self._rings.pop(key, None) or deque(maxlen=self.per_key)
            ring.append(slim)
            self._rings[key] = ring
            while len(self._rings) > self.max_keys:
                self._rings.popitem(last=False)

    def related(self, labels: Mapping[str, str], n: int = RECENT_SHOWN) -> list[dict[str, Any]]:
        """The last ``n`` events of the alert's service and component, oldest first."""
        seen: list[dict[str, Any]] = []
        for key in dict.fromkeys(labels[k] for k in ("service", "component") if labels.get(k)):
            seen.extend(e for e in self._rings.get(key, ()) if e not in seen)
        seen.sort(key=lambda e: str(e.get("timestamp", "")))
        return seen[-n:]


def runbook_steps(labels: Mapping[str, str], runbooks: RunbookPolicy) -> list[dict[str, Any]] | None:
    """The selected runbook rendered with the alert's labels, as plain dicts (None: no runbook)."""
    try:
        book = select_runbook(labels, runbooks)
    except RunbookError:
        return None
    values = {ph: labels[k] for k, ph in _PLACEHOLDERS.items() if labels.get(k)}
    return [
        {"runbook": book.name, "title": s.title, "description": s.description, "command": list(s.command),
         "status": str(s.status), "automated": s.automated, "requiresApproval": s.requires_approval,
         "timeoutS": s.timeout_s, "expected": s.expected, "onFailure": s.on_failure}
        for s in render_runbook(book, values)
    ]


def event_of(alert: Alert, status: str) -> dict[str, Any]:
    return {**alert.labels, "type": "alert", "status": status,
            "timestamp": format_time(alert.ends_at if status == "resolved" and alert.ends_at else alert.starts_at),
            "summary": alert.annotations.get("summary", "")}
