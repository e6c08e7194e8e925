"""The IncidentResponder's decisions, pure, returned as effects (``policies.response.effects``).

One alert: :func:`admit` folds it into its source's latest incident (over ``per_source``) or plans
the response — the offenders to remember, the incident to persist, the actions to hold or carry
out. Once the ``Enforce`` effects were carried out, :func:`conclude` takes their outcomes: an action
that failed may raise the escalation (``on_action_failed``), the incident's status and log, and what
to persist and publish. The emergency rule (:func:`incident_topics`): a critical or emergency
incident is also published on ``system/{cluster}/emergency`` when created or escalated.

Around it: how a stored incident changes (:func:`updated_incident`, :func:`resolved_incident`),
what carrying out an action involves (:func:`disposition`), undos (:func:`due_undos`,
:func:`plan_undo`), operators' approval decisions (:func:`approval_outcome`) and the restore.

Pure: ``now`` is passed in; the actions the enforcement backends apply (``enforced``) are named by
the caller.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from policies.response.config import ResponsePolicy
from policies.response.effects import Enforce, Escalate, Fold, Hold, Notify, Persist, Publish, Remember
from policies.response.guard import (
    ApprovalStep,
    GatedAction,
    ProtectedTargets,
    capped_escalation,
    gate_actions,
    source_over_limit,
)
from policies.response.plan import (
    EscalationDecision,
    OffenderHistory,
    PlannedAction,
    ResponsePlan,
    on_action_failed,
    plan_response,
)
from policies.security.events import SEVERITY_RANK, SecurityAlert
from protocol import topics
from protocol.base import rfc3339_from_epoch

LOG_CAP = 200
"""Entries kept in an incident's log."""
NOTIFIERS = ("notify_security_team", "notify_user")
_LEVEL_SEVERITY = {1: "error", 2: "critical"}  # higher levels: emergency


# --- the incident log --------------------------------------------------------------------------


def log_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """``entry`` without None and infinite values."""
    return {k: v for k, v in entry.items() if v is not None and not (isinstance(v, float) and math.isinf(v))}


def with_log(log: Sequence[Mapping[str, Any]], entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``log`` with ``entries`` appended, the last ``LOG_CAP`` kept."""
    return [*(dict(e) for e in log), *(log_entry(e) for e in entries)][-LOG_CAP:]


def action_entry(action: PlannedAction, now: float, error: str | None) -> dict[str, Any]:
    return log_entry({"ts": now, "action": action.action, "target": action.target, "actionId": action.action_id,
                      "result": "failed" if error else "applied", "error": error, "until": action.until})


def hold_entry(hold: Hold, now: float) -> dict[str, Any]:
    a = hold.action
    return log_entry({"ts": now, "action": a.action, "target": a.target, "actionId": a.action_id,
                      "result": "awaiting_approval" if hold.waiting else "refused", "reason": hold.reason})


def escalation_wire(e: EscalationDecision) -> dict[str, Any]:
    return {"level": e.level, "reason": e.reason, "rule": e.rule, "notify": list(e.notify),
            "at": rfc3339_from_epoch(e.at)}


def incident_topics(cluster: str, severity: str, event: str) -> tuple[str, ...]:
    """Where an incident ``event`` goes: the incidents topic, and the emergency topic too for a
    critical or emergency incident that is created or escalated."""
    if SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK["critical"] and event in ("created", "escalated"):
        return topics.system_incidents(cluster), topics.system_emergency(cluster)
    return (topics.system_incidents(cluster),)


# --- one alert ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Respond:
    """The response to one alert, before its actions are carried out. ``effects``: offenders to
    remember, the incident to persist (open), actions to hold, then those to carry out."""

    plan: ResponsePlan
    gated: tuple[GatedAction, ...]
    escalation: EscalationDecision | None
    history: OffenderHistory
    data: Mapping[str, Any]
    effects: tuple[Remember | Persist | Hold | Enforce, ...]

    @property
    def carried(self) -> tuple[PlannedAction, ...]:
        return tuple(e.action for e in self.effects if isinstance(e, Enforce))


def admit(alert: SecurityAlert, alert_wire: Mapping[str, Any], *, history: OffenderHistory,
          last_incident: Mapping[str, str], now: float, policy: ResponsePolicy, protected: ProtectedTargets,
          pending: int) -> Fold | Respond:
    """Fold the alert, or plan its response (``pending``: approval requests already waiting)."""
    if source_over_limit(history, alert.source, now, policy.per_source):
        return Fold(incident_id=last_incident.get(alert.source), entry={
            "ts": now, "action": "folded", "result": "folded", "alertType": alert.type, "severity": alert.severity,
            "target": alert.target, "description": alert.description[:200]})
    plan = plan_response(alert, history, now, policy)
    gated = gate_actions(plan, alert, protected, policy, pending=pending)
    recorded = history.recorded(plan.offenders(), now)
    carried = [g.action for g in gated if g.verdict == "carry_out"]
    inc = plan.incident
    data = {"alertType": inc.alert_type, "target": inc.target, "offence": plan.offence,
            "automatedResponse": [a.action for a in carried], "alert": dict(alert_wire),
            "skipped": [{"action": s.action, "reason": s.reason} for s in plan.skipped],
            "awaitingApproval": [g.action.action_id for g in gated if g.verdict == "approval"],
            "refused": [g.action.action_id for g in gated if g.verdict == "refused"], "log": []}
    effects: list[Remember | Persist | Hold | Enforce] = [
        Remember(entity=e, incidents=tuple(recorded.incidents[e]), last_incident=inc.id) for e in plan.offenders()]
    effects.append(Persist(incident=inc, status="open", data=data, automated_response=bool(carried)))
    effects += [Hold(action=g.action, waiting=g.verdict == "approval", reason=g.reason)
                for g in gated if g.verdict != "carry_out"]
    effects += [Enforce(action=a, reason=alert.description) for a in carried]
    return Respond(plan=plan, gated=gated, escalation=capped_escalation(plan.escalation, alert, policy),
                   history=recorded, data=data, effects=tuple(effects))


@dataclass(frozen=True, slots=True, kw_only=True)
class Carried:
    """How carrying out one action ended (``error`` None: applied)."""

    action: PlannedAction
    error: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Conclusion:
    status: str
    escalation: EscalationDecision | None
    data: Mapping[str, Any]
    effects: tuple[Persist | Publish | Escalate, ...]


def conclude(respond: Respond, carried: Sequence[Carried], *, now: float, policy: ResponsePolicy, cluster: str,
             enforced: Collection[str]) -> Conclusion:
    """After the actions: escalate further when failures reach a higher rule; ``escalated``, else
    ``contained`` when an enforced action was applied, else ``open``; persist and publish."""
    plan, escalation, failed = respond.plan, respond.escalation, 0
    for c in carried:
        if c.error is not None:
            failed += 1
            later = on_action_failed(plan, c.action, c.error, now, policy, failed_count=failed)
            if later is not None and (escalation is None or later.level > escalation.level):
                escalation = later
    contained = any(c.error is None and c.action.action in enforced for c in carried)
    status = "escalated" if escalation is not None else "contained" if contained else "open"
    holds = [e for e in respond.effects if isinstance(e, Hold)]
    data = {**respond.data, "log": with_log([], [*(hold_entry(h, now) for h in holds),
                                                 *(action_entry(c.action, now, c.error) for c in carried)])}
    if escalation is not None:
        data["escalation"] = escalation_wire(escalation)
    inc = plan.incident
    effects: list[Persist | Publish | Escalate] = [
        Persist(incident=inc, status=status, data=data, automated_response=bool(respond.carried)),
        Publish(event="created", topics=incident_topics(cluster, inc.severity, "created"))]
    if escalation is not None:
        effects.append(Escalate(
            decision=escalation, publish=Publish(event="escalated",
                                                 topics=incident_topics(cluster, inc.severity, "escalated")),
            alert=Notify(name="SecurityIncidentEscalated", severity=_LEVEL_SEVERITY.get(escalation.level, "emergency"),
                         summary=f"{inc.title} ({inc.target}) escalated to level {escalation.level}: "
                                 f"{escalation.reason}",
                         labels={"incident": inc.id, "level": str(escalation.level),
                                 "notify": ",".join(escalation.notify)})))
    return Conclusion(status=status, escalation=escalation, data=data, effects=tuple(effects))


def summary(respond: Respond, conclusion: Conclusion) -> dict[str, Any]:
    """What ``handle`` answers for a planned response."""
    e = conclusion.escalation
    return {"incidentId": respond.plan.incident.id, "status": conclusion.status, "offence": respond.plan.offence,
            "actions": [a.to_wire() for a in respond.carried], "awaitingApproval": list(respond.data["awaitingApproval"]),
            "refused": list(respond.data["refused"]), "escalation": escalation_wire(e) if e is not None else None}


def fold_summary(fold: Fold) -> dict[str, Any]:
    return {"incidentId": fold.incident_id, "status": "folded", "offence": None, "actions": [], "escalation": None}


# --- a stored incident changes ------------------------------------------------------------------


def updated_incident(status: str, data: Mapping[str, Any], entries: Iterable[Mapping[str, Any]], *,
                     enforced: Collection[str], folded: bool = False, settled: str | None = None,
                     applied: str | None = None) -> tuple[str, dict[str, Any]]:
    """The incident's status and data with ``entries`` logged; ``folded`` counts a folded alert,
    ``settled`` takes an action id off its awaiting list, ``applied`` (an action carried out after
    approval) joins its automated response, and an enforced one contains an open incident."""
    out = dict(data)
    out["log"] = with_log(list(data.get("log", [])), entries)
    if folded:
        out["folded"] = int(data.get("folded", 0)) + 1
    if settled is not None:
        out["awaitingApproval"] = [x for x in data.get("awaitingApproval", []) if x != settled]
    if applied is not None:
        out["automatedResponse"] = [*data.get("automatedResponse", []), applied]
    return ("contained" if applied in enforced and status == "open" else status), out


def resolved_incident(data: Mapping[str, Any], now: float, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The data of an incident resolved at ``now`` (``entry`` logged as its ``resolve``)."""
    return {**data, "log": with_log(list(data.get("log", [])), [{"ts": now, "action": "resolve", **entry}])}


# --- carrying out, undoing, approving -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Disposition:
    """How an action is recorded and followed up: ``one_shot`` actions (no undo, nothing held in
    the backends) are ``done`` and never join the active set; ``follow_up`` names the
    notification to send or ``preserve_evidence``."""

    one_shot: bool
    status: Literal["done", "applied"]
    undo_at: float | None
    follow_up: Literal["notify_security_team", "notify_user", "preserve_evidence"] | None


def disposition(action: PlannedAction, enforced: Collection[str]) -> Disposition:
    one_shot = action.undo_action is None and action.action not in enforced
    follow: Literal["notify_security_team", "notify_user", "preserve_evidence"] | None = None
    if action.action == "notify_security_team":
        follow = "notify_security_team"
    elif action.action == "notify_user":
        follow = "notify_user"
    elif action.action == "preserve_evidence":
        follow = "preserve_evidence"
    return Disposition(one_shot=one_shot, status="done" if one_shot else "applied",
                       undo_at=action.until if action.undo_action is not None else None, follow_up=follow)


class HeldAction(Protocol):
    """What the undo decision reads of a stored action."""

    @property
    def id(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def until(self) -> float | None: ...


def due_undos(undo_at: Mapping[str, float], now: float) -> list[str]:
    """Action ids whose undo is due, earliest first."""
    return [aid for _, aid in sorted((at, aid) for aid, at in undo_at.items() if at <= now)]


def undo_reason(until: float | None, now: float) -> Literal["expired", "lifted"]:
    return "expired" if until is not None and until <= now else "lifted"


@dataclass(frozen=True, slots=True, kw_only=True)
class UndoPlan:
    """Undo ``name``; ``held_by`` (another, longer action on the same target) leaves the backends
    alone."""

    name: str
    held_by: str | None
    params: Mapping[str, Any]


def plan_undo(rec: HeldAction, active: Iterable[HeldAction], now: float, policy: ResponsePolicy,
              why: str) -> UndoPlan:
    """``active``: the other actions in force (``rec`` already taken out)."""
    spec = policy.actions.get(rec.action)
    name = spec.undo if spec is not None and spec.undo else f"undo_{rec.action}"
    holder = next((o for o in active if o.action == rec.action and o.target == rec.target
                   and (o.until is None or o.until > now)), None)
    params: dict[str, Any] = {"undoes": rec.action, "reason": why}
    if holder is not None:
        params["heldBy"] = holder.id
    return UndoPlan(name=name, held_by=None if holder is None else holder.id, params=params)


ApprovalOutcome = Literal["carry_out", "refused", "rejected", "expired", "malformed"]
APPROVAL_COUNTS: Mapping[str, str] = {"carry_out": "approved", "refused": "refused", "rejected": "rejected",
                                      "expired": "approvals_expired"}
"""The responder's counter per approval outcome."""


def approval_outcome(step: ApprovalStep, protected: ProtectedTargets) -> ApprovalOutcome:
    """An approved action is carried out unless its target became protected meanwhile."""
    if step.decision == "malformed" or step.action is None or step.incident_id is None:
        return "malformed"
    if step.decision == "approved":
        return "refused" if protected.protects(step.action.target) else "carry_out"
    return step.decision


def active_refresh_due(published_at: float, now: float, every_s: float) -> bool:
    """Republish the retained active set when ``every_s`` passed since the last one."""
    return now - published_at >= every_s


def restored_history(docs: Mapping[str, Mapping[str, Any]], now: float,
                     policy: ResponsePolicy) -> tuple[OffenderHistory, dict[str, str]]:
    """Offender history (pruned to the lookback) and each entity's latest incident, from the
    stored offender documents."""
    history = OffenderHistory(incidents={
        e: tuple(float(t) for t in d.get("incidents", [])) for e, d in docs.items()
    }).pruned(now - policy.repeat.lookback)
    last = {e: str(d["lastIncident"]) for e, d in docs.items() if e in history.incidents and d.get("lastIncident")}
    return history, last
