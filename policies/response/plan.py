"""Incident response (seed: IncidentResponseAutomation): from a ``SecurityAlert`` to a plan —
the incident record, the actions to carry out, when to undo the timed ones, and whether to
escalate. Pure: the IncidentResponder actor executes the plan and reports failures back through
``on_action_failed``.

Repeat offenders: ``OffenderHistory`` (passed in, kept by the actor, restored from the store)
holds incident times per entity; a step with ``increment`` lasts base * factor^(n-1), capped,
where n is the offence number of the action's target within the lookback (fail2ban style).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from policies.response.config import (
    EscalationRule,
    PlaybookStep,
    ResponsePolicy,
)
from policies.security.events import SEVERITY_RANK, SecurityAlert, Severity
from protocol.base import rfc3339_from_epoch
from protocol.security import EnforcementAction


@dataclass(frozen=True, slots=True, kw_only=True)
class OffenderHistory:
    """Incident times per entity (IP or user id), oldest first. Immutable: ``recorded`` returns
    a new history; ``max_per_entity`` keeps it bounded (only recent offences matter)."""

    incidents: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    max_per_entity: int = 32

    def count(self, entity: str, *, now: float, lookback_s: float) -> int:
        """Incidents for ``entity`` in (now - lookback, now]."""
        cutoff = now - lookback_s
        return sum(1 for t in self.incidents.get(entity, ()) if cutoff < t <= now)

    def recorded(self, entities: Iterable[str], at: float) -> OffenderHistory:
        """A history with one more incident at ``at`` for each distinct entity."""
        out = dict(self.incidents)
        for entity in dict.fromkeys(entities):
            out[entity] = (*out.get(entity, ()), at)[-self.max_per_entity :]
        return OffenderHistory(incidents=out, max_per_entity=self.max_per_entity)

    def pruned(self, before: float) -> OffenderHistory:
        """Drop incidents at or before ``before`` (and entities left with none)."""
        out = {e: kept for e, ts in self.incidents.items() if (kept := tuple(t for t in ts if t > before))}
        return OffenderHistory(incidents=out, max_per_entity=self.max_per_entity)


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentRecord:
    """The seed's Incident: type "security", title = alert type, automated response listed."""

    id: str
    type: str
    alert_type: str
    severity: Severity
    title: str
    description: str
    source: str
    target: str
    automated_response: tuple[str, ...]
    status: str
    created_at: float

    def to_wire(self) -> dict[str, Any]:
        """camelCase fields of the ``system/{cluster}/incidents`` message (the actor adds
        ``type``, ``event`` and ``clusterId``)."""
        return {
            "incidentId": self.id,
            "incidentType": self.type,
            "alertType": self.alert_type,
            "severity": self.severity,
            "title": self.title,
            "description": self.description,
            "source": self.source,
            "target": self.target,
            "status": self.status,
            "automatedResponse": list(self.automated_response),
            "timestamp": rfc3339_from_epoch(self.created_at),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedAction:
    """One action (or undo) to carry out. ``until``/``duration_s`` are None for untimed actions;
    ``undo_action`` names the reversal (scheduled at ``until`` for timed actions)."""

    action: str
    kind: str
    target: str
    incident_id: str
    action_id: str
    params: Mapping[str, Any] = field(default_factory=dict)
    duration_s: float | None = None
    until: float | None = None
    undo_action: str | None = None
    is_undo: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """What this action holds in place: (action, target). An undo's key is its original's."""
        return (self.action, self.target)

    def undo(self) -> PlannedAction | None:
        """The reversal of this action, or None if it has none."""
        if self.undo_action is None:
            return None
        return PlannedAction(
            action=self.undo_action,
            kind=self.kind,
            target=self.target,
            incident_id=self.incident_id,
            action_id=f"{self.action_id}:undo",
            params={"undoes": self.action},
            is_undo=True,
        )

    def to_wire(self, now: float | None = None) -> dict[str, Any]:
        """The ``system/{cluster}/security/actions`` payload, built through ``EnforcementAction``
        (``until`` and ``timestamp`` are instants)."""
        return EnforcementAction(action=self.action, target=self.target, incident_id=self.incident_id,
                                 action_id=self.action_id, undo=self.is_undo, params=dict(self.params),
                                 until=self.until, timestamp=now).to_wire()


@dataclass(frozen=True, slots=True, kw_only=True)
class UndoStep:
    """Carry out ``action`` (an undo) at ``at``; ``undoes`` is the key of what it reverses."""

    at: float
    action: PlannedAction
    undoes: tuple[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class EscalationDecision:
    """Escalate the incident to ``level`` (1 = security team … higher = wider), for ``reason``."""

    incident_id: str
    level: int
    reason: str
    rule: str
    notify: tuple[str, ...]
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SkippedStep:
    action: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponsePlan:
    """What to do about one alert. ``offence`` is the alert entity's incident number within the
    lookback (1 = first). ``undo_schedule`` is sorted by time."""

    incident: IncidentRecord
    actions: tuple[PlannedAction, ...]
    undo_schedule: tuple[UndoStep, ...]
    escalation: EscalationDecision | None
    offence: int
    skipped: tuple[SkippedStep, ...] = ()

    def offenders(self) -> list[str]:
        """Entities to record in ``OffenderHistory`` for this incident: the alert's source and
        target and every action target (deduplicated, in order)."""
        ents = [self.incident.source, self.incident.target, *(a.target for a in self.actions)]
        return [e for e in dict.fromkeys(ents) if e]


def incident_id(alert: SecurityAlert) -> str:
    """Deterministic: the same alert (replayed, retried) gives the same incident."""
    return f"inc-{alert.fingerprint}"


def scaled_duration(base_s: float, prior: int, config: ResponsePolicy) -> float:
    """base * factor^prior capped at max (prior = earlier offences of the same target)."""
    rp = config.repeat
    return min(base_s * rp.factor**prior, max(rp.max_duration, base_s))


def plan_response(
    alert: SecurityAlert, history: OffenderHistory, now: float, config: ResponsePolicy
) -> ResponsePlan:
    """The seed's DetermineResponseActions as configured, with escalating durations for repeat
    offenders, the undo of every timed action, and the escalation decision."""
    inc_id = incident_id(alert)
    lookback = config.repeat.lookback
    actions: list[PlannedAction] = []
    skipped: list[SkippedStep] = []
    for i, step in enumerate(config.playbooks.get(alert.type, [])):
        target = _resolve(step, alert)
        if target is None:
            skipped.append(SkippedStep(action=step.action, reason=f"alert has no {step.target}"))
            continue
        spec = config.actions[step.action]
        duration = step.duration
        if duration is not None and step.increment:
            duration = scaled_duration(duration, history.count(target, now=now, lookback_s=lookback), config)
        actions.append(
            PlannedAction(
                action=step.action,
                kind=spec.kind,
                target=target,
                incident_id=inc_id,
                action_id=f"{inc_id}:{i}:{step.action}",
                params=dict(step.params),
                duration_s=duration,
                until=None if duration is None else now + duration,
                undo_action=spec.undo,
            )
        )
    undo = sorted(
        (
            UndoStep(at=a.until, action=u, undoes=a.key)
            for a in actions
            if a.until is not None and (u := a.undo()) is not None
        ),
        key=lambda s: s.at,
    )
    prior = max(
        (history.count(e, now=now, lookback_s=lookback) for e in {alert.source, alert.target} if e), default=0
    )
    incident = IncidentRecord(
        id=inc_id,
        type="security",
        alert_type=alert.type,
        severity=alert.severity,
        title=alert.type,
        description=alert.description,
        source=alert.source,
        target=alert.target,
        automated_response=tuple(a.action for a in actions),
        status="open",
        created_at=now,
    )
    escalation = _escalate(config.escalation, alert.type, alert.severity, prior + 1, 0, inc_id, now)
    return ResponsePlan(
        incident=incident,
        actions=tuple(actions),
        undo_schedule=tuple(undo),
        escalation=escalation,
        offence=prior + 1,
        skipped=tuple(skipped),
    )


def on_action_failed(
    plan: ResponsePlan,
    action: PlannedAction,
    error: str,
    now: float,
    config: ResponsePolicy,
    *,
    failed_count: int = 1,
) -> EscalationDecision | None:
    """An action of ``plan`` failed (``failed_count`` failures so far, this one included): a new
    escalation if the rules now reach a higher level than the plan already has, else None."""
    inc = plan.incident
    decision = _escalate(
        config.escalation, inc.alert_type, inc.severity, plan.offence, failed_count, inc.id, now
    )
    current = plan.escalation.level if plan.escalation is not None else 0
    if decision is None or decision.level <= current:
        return None
    reason = f"{decision.reason} ({action.action} on {action.target}: {error})"
    return EscalationDecision(
        incident_id=inc.id,
        level=decision.level,
        reason=reason,
        rule=decision.rule,
        notify=decision.notify,
        at=now,
    )


class UndoSchedule:
    """Pending undos, one per (action, target): a later plan for the same key replaces an
    earlier undo when it runs longer, so an early expiry never lifts a longer, newer ban."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], UndoStep] = {}

    def add(self, plan: ResponsePlan) -> None:
        for step in plan.undo_schedule:
            held = self._pending.get(step.undoes)
            if held is None or step.at >= held.at:
                self._pending[step.undoes] = step

    def due(self, now: float) -> list[UndoStep]:
        """Remove and return the undos whose time has come, earliest first."""
        ready = sorted((s for s in self._pending.values() if s.at <= now), key=lambda s: s.at)
        for s in ready:
            del self._pending[s.undoes]
        return ready

    def pending(self) -> list[UndoStep]:
        return sorted(self._pending.values(), key=lambda s: s.at)

    def __len__(self) -> int:
        return len(self._pending)


def _resolve(step: PlaybookStep, alert: SecurityAlert) -> str | None:
    ref = step.target
    value = {"source": alert.source, "target": alert.target, "user": alert.user_id, "ip": alert.ip_address}[
        ref
    ]
    return value or None


def _escalate(
    rules: list[EscalationRule],
    alert_type: str,
    severity: str,
    offence: int,
    failed: int,
    inc_id: str,
    now: float,
) -> EscalationDecision | None:
    best: EscalationRule | None = None
    for r in rules:
        if r.severity_at_least is not None and SEVERITY_RANK[severity] < SEVERITY_RANK[r.severity_at_least]:
            continue
        if r.alert_types is not None and alert_type not in r.alert_types:
            continue
        if r.repeat_at_least is not None and offence < r.repeat_at_least:
            continue
        if r.failed_actions_at_least is not None and failed < r.failed_actions_at_least:
            continue
        if best is None or r.level > best.level:
            best = r
    if best is None:
        return None
    return EscalationDecision(
        incident_id=inc_id, level=best.level, reason=best.reason, rule=best.name, notify=best.notify, at=now
    )


__all__ = ["EscalationDecision", "IncidentRecord", "OffenderHistory", "PlannedAction", "ResponsePlan", "SkippedStep", "UndoSchedule", "UndoStep", "incident_id", "on_action_failed", "plan_response", "scaled_duration"]
