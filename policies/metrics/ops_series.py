"""Metric series on incidents, enforcement actions and alerts, from the ``ops`` summary of the
supervisor's status (``policies.supervision.ops_board``; pure).

- ``sfa_ops_alerts_total{cluster,severity}`` (counter): alerts that started firing, routed through
  the alert manager (a re-sent or resolved alert is not counted again); it restarts at 0 with the
  supervisor.
- ``sfa_ops_open_incidents{cluster,severity}`` (gauge): open incidents (up to the board's 1 000).
- ``sfa_ops_active_actions{cluster,action}`` (gauge): enforcement actions in force (``block_ip`` …).

Every severity of ``protocol.system.Severity`` has a series (0 when none), so a rule or graph on
one never sees it vanish.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

from policies.supervision.status_view import Family
from protocol.system import Severity

SEVERITIES: tuple[str, ...] = get_args(Severity)


def _counts(part: Any, key: str) -> dict[str, float]:
    counts = part.get(key) if isinstance(part, Mapping) else None
    if not isinstance(counts, Mapping):
        return {}
    return {str(k): float(v) for k, v in counts.items() if isinstance(v, int | float)}


def ops_families(status: Mapping[str, Any], cluster: str) -> list[Family]:
    """The three families for one supervisor status (none when it carries no ``ops`` summary)."""
    ops = status.get("ops")
    if not isinstance(ops, Mapping):
        return []
    alerts = Family("sfa_ops_alerts", "counter", "alerts that started firing, by severity")
    incidents = Family("sfa_ops_open_incidents", "gauge", "open incidents, by severity")
    actions = Family("sfa_ops_active_actions", "gauge", "enforcement actions in force, by action")
    sent, open_ = _counts(ops.get("alerts"), "sent"), _counts(ops.get("incidents"), "bySeverity")
    for severity in sorted({*SEVERITIES, *sent, *open_}):
        alerts.add(sent.get(severity, 0.0), cluster=cluster, severity=severity)
        incidents.add(open_.get(severity, 0.0), cluster=cluster, severity=severity)
    for action, n in sorted(_counts(ops.get("actions"), "byAction").items()):
        actions.add(n, cluster=cluster, action=action)
    return [alerts, incidents, actions]
