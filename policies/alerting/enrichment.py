"""Alert enrichment, pure: the recent events shown with an alert and its rendered runbook steps.

:func:`enrich` adds both to an alert's annotations (``recentEvents``, ``runbook``) as JSON, unless
the alert brings its own. :class:`RecentEvents` keeps the events per service/component, fed with
every change of an alert's status (:class:`StatusChanges`) and with the events the AlertManager
is told about. The AlertManager actor only holds these objects and calls them.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson

from policies.alerting.model import Alert, format_time
from policies.alerting.runbooks import RunbookError, RunbookPolicy, render_runbook, select_runbook

__all__ = ["RECENT_SHOWN", "RecentEvents", "StatusChanges", "enrich", "event_of", "runbook_steps"]

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


def enrich(alert: Alert, *, runbooks: RunbookPolicy | None, recent: RecentEvents) -> Alert:
    """``alert`` with ``runbook`` (rendered steps) and ``recentEvents`` (the last related events)
    annotations as JSON, each only when the alert has none of its own and there is something to show."""
    extra: dict[str, str] = {}
    if "runbook" not in alert.annotations and runbooks is not None:
        steps = runbook_steps(alert.labels, runbooks)
        if steps:
            extra["runbook"] = orjson.dumps(steps).decode()
    if "recentEvents" not in alert.annotations:
        related = recent.related(alert.labels)
        if related:
            extra["recentEvents"] = orjson.dumps(related).decode()
    return replace(alert, annotations={**alert.annotations, **extra}) if extra else alert


class StatusChanges:
    """The last status seen per alert fingerprint (at most ``max_alerts``, least recently seen
    forgotten first): an alert counts as an event only when its status changed."""

    def __init__(self, *, max_alerts: int = 10_000) -> None:
        self.max_alerts = max_alerts
        self._last: OrderedDict[str, str] = OrderedDict()

    def changed(self, alert: Alert, now: float) -> bool:
        """Record the alert's status at ``now``; True when it differs from the last one seen."""
        fp, status = alert.fingerprint, alert.status(now)
        changed = self._last.pop(fp, None) != status
        self._last[fp] = status
        while len(self._last) > self.max_alerts:
            self._last.popitem(last=False)
        return changed

    def __len__(self) -> int:
        return len(self._last)
