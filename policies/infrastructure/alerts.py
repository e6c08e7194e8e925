"""What an infrastructure checker reports besides the tier-3 message (pure).

- :func:`transition_alerts` — the alerts for a tracker :class:`~policies.infrastructure.checks.Transition`
  (``alertname`` ``InfrastructureError``; an escalation fires the new severity and resolves the old
  one, since severity is a label and so part of the alert's identity), annotated with the
  component's runbook steps rendered through :mod:`policies.alerting.runbooks` (placeholders filled only
  with values that pass its checks) and the services that depend on the component.
- :func:`affected_services` — services whose ``service_dependencies`` list the component.
- :func:`health_entry` / :func:`restored_state` — the component's entry in the health summary's
  ``infrastructure`` section, and the tracker state a restarted checker rebuilds from it (so an
  outage announced before the restart is still recovered after it).
- :func:`merge_results` — one result from several probes of one component (several Redis URLs;
  the broker round trip plus EMQX's API).
- :func:`monitor_pods` — a Kubernetes pod status as the service monitors take it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from policies.alerting.runbooks import RunbookError, RunbookPolicy, render_runbook, select_runbook
from policies.infrastructure.checks import (
    SEVERITY_RANK,
    ProbeResult,
    Severity,
    Status,
    TrackerState,
    Transition,
    TransitionKind,
)
from protocol.base import rfc3339_from_epoch

ERROR_ALERT = "InfrastructureError"
MISCONFIGURED_ALERT = "InfrastructureMisconfigured"
RESTARTED_ALERT = "InfraCheckerRestarted"
MAX_ERROR_TEXT = 300  # the health summary is republished often: keep its entries small

# Top-level details worth showing in the health summary, per component (the rest stays in the
# tier-3 message and the checker's status).
KEY_DETAILS: dict[str, tuple[str, ...]] = {
    "mqtt_broker": ("roundTripMs", "p95Ms", "samples"),
    "emqx_cluster": ("runningNodes", "totalNodes", "disconnectedNode", "clusterState", "messagesDropped",
                     "roundTripMs", "p95Ms"),
    "postgresql_cluster": ("reachableTargets", "totalTargets"),
    "mongodb_cluster": ("reachableTargets", "totalTargets", "expectedReplicas"),
    "redis": ("pingMs", "role", "memoryUsagePercent", "connectedSlaves", "blockedClients",
              "reachableTargets", "totalTargets"),
    "kubernetes_cluster": ("readyNodes", "totalNodes", "namespace"),
}


def affected_services(component: str, dependencies: Mapping[str, Sequence[str]]) -> list[str]:
    """Services that declare a dependency on ``component``, sorted."""
    return sorted(s for s, comps in dependencies.items() if component in comps)


# -- alerts -------------------------------------------------------------------------------------


def runbook_steps(labels: Mapping[str, str], runbooks: RunbookPolicy,
                  values: Mapping[str, str]) -> list[dict[str, Any]]:
    """The runbook selected for ``labels``, rendered with ``values`` (a value that fails the
    runbook's placeholder check leaves its step unfilled and marked, never half-filled)."""
    try:
        book = select_runbook(labels, runbooks)
    except RunbookError:
        return []
    return [
        {"runbook": book.name, "title": s.title, "description": s.description, "command": list(s.command),
         "status": str(s.status), "automated": s.automated, "requiresApproval": s.requires_approval,
         "timeoutS": s.timeout_s, "expected": s.expected, "onFailure": s.on_failure,
         **({"problems": list(s.problems)} if s.problems else {})}
        for s in render_runbook(book, values)
    ]


def runbook_values(result: ProbeResult, *, hosts: Sequence[str] = ()) -> dict[str, str]:
    """Placeholder values a check knows: ``INSTANCE`` (the failing target's host, else the first
    configured host), ``NODE`` (a Kubernetes node that is not Ready). Unchecked here on purpose:
    :func:`policies.alerting.runbooks.render_step` refuses unsafe ones."""
    values: dict[str, str] = {}
    targets = result.details.get("targets")
    failing = [str(label) for label, t in targets.items()
               if isinstance(t, Mapping) and t.get("reachable") is False] if isinstance(targets, Mapping) else []
    instance = failing[0].split(":")[0] if failing else (hosts[0] if hosts else None)
    if instance:
        values["INSTANCE"] = instance
    nodes = result.details.get("nodes")
    if isinstance(nodes, list):
        bad = [str(n.get("name")) for n in nodes if isinstance(n, Mapping) and not n.get("ready", True)]
        if bad:
            values["NODE"] = bad[0]
    return values


def _alert(name: str, severity: str, component: str, cluster_id: str, *, starts_at: float,
           ends_at: float | None, annotations: Mapping[str, str]) -> dict[str, Any]:
    return {"labels": {"alertname": name, "severity": severity, "component": component, "cluster": cluster_id},
            "annotations": dict(annotations), "startsAt": starts_at, "endsAt": ends_at}


def transition_alerts(
    transition: Transition, *, cluster_id: str, previous_severity: Severity | None, runbooks: RunbookPolicy,
    summary: str, values: Mapping[str, str] | None = None, affected: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The alerts for ``transition``: ERROR fires; ESCALATED fires the new severity and resolves
    ``previous_severity``; RECOVERED resolves ``previous_severity`` (the announced one);
    MISCONFIGURED fires and CONFIG_RESOLVED resolves an ``InfrastructureMisconfigured`` warning.
    ``summary`` is the human line (the tier-3 message's text)."""
    t, comp = transition, transition.component
    since = t.outage_since if t.outage_since is not None else t.at
    notes: dict[str, str] = {"summary": summary}
    if affected:
        notes["affectedServices"] = ", ".join(affected)
    if t.correlation_id:
        notes["correlationId"] = t.correlation_id
    if t.kind in (TransitionKind.ERROR, TransitionKind.ESCALATED):
        labels = {"alertname": ERROR_ALERT, "severity": t.severity, "component": comp, "cluster": cluster_id}
        steps = runbook_steps(labels, runbooks, values or {})
        fire = notes | ({"runbook": orjson.dumps(steps).decode()} if steps else {})
        out = [_alert(ERROR_ALERT, t.severity, comp, cluster_id, starts_at=since, ends_at=None, annotations=fire)]
        if t.kind is TransitionKind.ESCALATED and previous_severity and previous_severity != t.severity:
            out.append(_alert(ERROR_ALERT, previous_severity, comp, cluster_id, starts_at=since, ends_at=t.at,
                              annotations={"summary": f"escalated to {t.severity}"}))
        return out
    if t.kind is TransitionKind.RECOVERED:
        if previous_severity is None:
            return []
        return [_alert(ERROR_ALERT, previous_severity, comp, cluster_id, starts_at=since, ends_at=t.at,
                       annotations=notes)]
    if t.kind is TransitionKind.MISCONFIGURED:
        return [_alert(MISCONFIGURED_ALERT, "warning", comp, cluster_id, starts_at=t.at, ends_at=None,
                       annotations=notes)]
    return [_alert(MISCONFIGURED_ALERT, "warning", comp, cluster_id, starts_at=t.at, ends_at=t.at,
                   annotations=notes)]


def restarted_alert(component: str, cluster_id: str, now: float, *, resolved: bool = False) -> dict[str, Any]:
    """An info alert: the checker of ``component`` was restarted by Ray (resolved once it checked again)."""
    text = (f"infrastructure checker for {component} is checking again after a restart" if resolved
            else f"infrastructure checker for {component} crashed and was restarted")
    return _alert(RESTARTED_ALERT, "info", component, cluster_id, starts_at=now,
                  ends_at=now if resolved else None, annotations={"summary": text})


# -- health summary -------------------------------------------------------------------------------


def health_entry(
    result: ProbeResult, state: TrackerState, *, now: float, severity: Severity,
    affected: Sequence[str] = (), restarted_at: float | None = None,
) -> dict[str, Any]:
    """The component's entry in the health summary after a check: tracker status, severity (the
    announced one during an outage, else this check's), time, latency, problem codes, key details."""
    keys = KEY_DETAILS.get(result.component, ())
    entry: dict[str, Any] = {
        "status": state.status.value,
        "severity": state.severity if state.status is Status.ERROR and state.severity else severity,
        "ok": result.ok,
        "lastCheck": rfc3339_from_epoch(now),
        "latencyMs": round(result.latency_ms, 3),
        "problems": sorted({p.code for p in result.problems}),
        "details": {k: result.details[k] for k in keys if k in result.details},
    }
    if result.error:
        entry["error"] = result.error[:MAX_ERROR_TEXT]
    if state.outage_since is not None:
        entry["outageSince"] = rfc3339_from_epoch(state.outage_since)
        entry["outageSinceEpoch"] = state.outage_since
    if affected:
        entry["affectedServices"] = list(affected)
    if restarted_at is not None:
        entry["checkerRestartedAt"] = rfc3339_from_epoch(restarted_at)
    return entry


def restored_state(entry: Mapping[str, Any] | None, *, failures_before_error: int) -> TrackerState | None:
    """The tracker state behind a health entry whose outage was announced (None otherwise): a
    restarted checker resumes it, so the outage's recovery is still announced and paired."""
    if not entry or entry.get("status") != Status.ERROR.value:
        return None
    since, severity = entry.get("outageSinceEpoch"), entry.get("severity")
    if not isinstance(since, int | float) or severity not in SEVERITY_RANK:
        return None
    return TrackerState(status=Status.ERROR, failures=failures_before_error, severity=severity,
                        outage_since=float(since))


# -- combining probes -----------------------------------------------------------------------------


def merge_results(component: str, results: Mapping[str, ProbeResult], *, primary: str | None = None) -> ProbeResult:
    """One result for ``component`` from labelled probe results.

    A single result is relabelled as it is. Several give every problem, the errors joined (each
    with its label), the slowest latency, and details either flat (with ``primary``: the other
    results' details under the primary's, as for EMQX's API plus the broker round trip) or per
    label under ``targets`` (with ``reachable``; several Redis servers). The merged check is a
    configuration error only when every failure is one: a broker that does not answer while its
    API refuses our key is an outage, not a configuration problem."""
    if len(results) == 1:
        (only,) = results.values()
        return ProbeResult.build(component=component, latency_ms=only.latency_ms, details=only.details,
                                 problems=only.problems, error=only.error, config_error=only.config_error)
    problems = [p for r in results.values() for p in r.problems]
    errors = [f"{label}: {r.error}" for label, r in results.items() if r.error]
    failed = [r for r in results.values() if r.error is not None or r.config_error]
    config_error = bool(failed) and all(r.config_error for r in failed)
    details: dict[str, Any]
    if primary is not None and primary in results:
        details = {}
        for label, r in results.items():
            if label != primary:
                details.update(r.details)
        details.update(results[primary].details)
    else:
        targets: dict[str, Any] = {}
        for label, r in results.items():
            targets[label] = {"reachable": r.error is None, "latencyMs": round(r.latency_ms, 3), **r.details}
            if r.error:
                targets[label]["error"] = r.error
        reachable = sum(1 for r in results.values() if r.error is None)
        details = {"reachableTargets": reachable, "totalTargets": len(results), "targets": targets}
    return ProbeResult.build(component=component, latency_ms=max(r.latency_ms for r in results.values()),
                             details=details, problems=problems, error="; ".join(errors) or None,
                             config_error=config_error)


def monitor_pods(*, running: int, ready: int, total: int, reason: str | None,
                 failure_reason: str | None) -> dict[str, Any]:
    """A service's pod status as ``MonitorCore.apply(..., pods=)`` takes it. The monitor has one
    failure reason: the restart loop wins (the seed's ``reason: pod_restart_loop``), else an
    OOM kill; Kubernetes' other last reasons (``Completed``, ``Error``) are kept as ``lastReason``
    only, since a pod that exited once is not by itself a failure."""
    cause = reason or (failure_reason if failure_reason == "container_oom_killed" else None)
    return {"running": running, "ready": ready, "total": total, "failureReason": cause,
            "restartLoop": reason == "pod_restart_loop", "lastReason": failure_reason}
