"""The effects the IncidentResponder carries out (``policies.response.effects``), each persisted
before it happens: an offender remembered, an incident persisted, published or escalated; an action
carried out (store, Redis/EMQX, ``system/{cluster}/security/actions``; a notification sent, an
evidence record preserved: ``policies.response.effects``, ``policies.response.evidence``), held (refused, or
waiting for approval), undone, or settled by an operator; a line in an incident's log; the retained
active set. ``IncidentEffects`` is the base of ``actors.incident_responder.ResponderBody``, which owns
the state these methods use; no decision is taken here (``policies.response*``)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from actors.clock import Clock
from actors.incident_records import action_wire, incident_message
from actors.security_common import Outlet, SecurityOptions, active_actions_topic, plain_alert
from adapters.enforcement.actions import ENFORCED, Enforcement
from adapters.store import ActionRecord, IncidentRecord, StoreError
from adapters.store.buffer import BufferedStore
from policies.response.config import ResponsePolicy
from policies.response.effects import (
    Effect,
    Enforce,
    Escalate,
    Fold,
    Hold,
    Notify,
    Persist,
    Publish,
    Remember,
    security_team_alert,
    user_notice,
)
from policies.response.evidence import EVIDENCE, EvidenceLimits, concerns, evidence_record
from policies.response.guard import APPROVALS, ApprovalStep, ProtectedTargets, approval_request
from policies.response.incident import (
    APPROVAL_COUNTS,
    action_entry,
    approval_outcome,
    disposition,
    incident_topics,
    plan_undo,
    resolved_incident,
    updated_incident,
)
from policies.response.plan import PlannedAction
from policies.security.events import SecurityAlert
from protocol import topics
from protocol.security import ActiveActions, EnforcementAction

logger = logging.getLogger("sfa_ops.responder")
OFFENDERS = "security_offenders"
_SEEN_CAP = 10_000


class IncidentEffects:
    """Effects of the responder (module docstring); the attributes are set by ``ResponderBody``."""

    cluster: str
    store: BufferedStore
    outlet: Outlet
    enforcement: Enforcement
    policy: ResponsePolicy
    protected: ProtectedTargets
    active: dict[str, ActionRecord]
    undo_at: dict[str, float]
    last_incident: OrderedDict[str, str]
    pending_approvals: set[str]
    counts: dict[str, int]
    alert_resolve_after: float | None
    active_published_at: float
    options: SecurityOptions
    clock: Clock
    _lock: asyncio.Lock
    _background: set[asyncio.Task[None]]

    async def _effect(self, effect: Effect, now: float, *, alert: SecurityAlert | None = None,
                      incident: IncidentRecord | None = None) -> str | None:
        """Carry out one effect; an ``Enforce`` answers its error text (None: applied). ``alert``:
        the one that raised the incident (notifications need it); ``incident``: the stored
        incident a ``Publish`` or ``Escalate`` is about."""
        match effect:
            case Remember(entity=entity, incidents=incidents, last_incident=inc_id):
                self.last_incident.pop(entity, None)
                self.last_incident[entity] = inc_id
                while len(self.last_incident) > _SEEN_CAP:
                    self.last_incident.popitem(last=False)
                await self.store.state_put(OFFENDERS, entity, {"incidents": list(incidents), "lastIncident": inc_id})
            case Persist():
                await self.store.incident_upsert(stored_incident(effect))
            case Hold():
                await self._hold(effect, now)
            case Enforce(action=action, reason=reason):
                return await self._carry_out(action, reason, now, alert)
            case Escalate(publish=publish, alert=notify):
                self.counts["escalations"] += 1
                await self._effect(publish, now, incident=incident)
                await self._effect(notify, now)
            case Publish():
                if incident is None:
                    raise ValueError("publishing an incident needs the incident")
                await self._publish(incident, effect, now)
            case Notify(name=name, severity=severity, summary=text, labels=labels):
                await self.outlet.alert([plain_alert(name, severity, self.cluster, now, text, labels,
                                                     resolve_after=self.alert_resolve_after)])
        return None

    async def _fold(self, fold: Fold) -> None:
        """A source over its incident limit: the alert goes into its latest incident's log."""
        self.counts["folded"] += 1
        if fold.incident_id is not None:
            await self._update_incident(fold.incident_id, [fold.entry], folded=True)
        else:
            logger.warning("%s over the per-source limit; no incident to fold it into", fold.entry.get("alertType"))

    async def _hold(self, hold: Hold, now: float) -> None:
        """Record an action that is refused or waits for approval (and store the request)."""
        a = hold.action
        rec = ActionRecord(id=a.action_id, incident_id=a.incident_id, action=a.action, target=a.target,
                           params=dict(a.params), created_at=now,
                           status="pending_approval" if hold.waiting else "refused",
                           error=None if hold.waiting else hold.reason)
        await self.store.action_upsert(rec)
        if hold.waiting:
            await self.store.state_put(APPROVALS, a.action_id, approval_request(a, now, hold.reason))
            self.pending_approvals.add(a.action_id)
            self.counts["awaiting_approval"] += 1
            logger.warning("%s on %s waits for approval (%s): python -m drivers.incidents approve %s",
                           a.action, a.target[:80], hold.reason, a.action_id)
        else:
            self.counts["refused"] += 1
            logger.warning("refused %s on %s: %s", a.action, a.target[:80], hold.reason)

    async def _carry_out(self, action: PlannedAction, reason: str, now: float,
                         alert: SecurityAlert | None = None) -> str | None:
        """Persist, enforce (or notify), publish one action; the error text if a backend failed.
        The notifications need the ``alert`` that raised the incident."""
        how = disposition(action, ENFORCED)
        rec = ActionRecord(id=action.action_id, incident_id=action.incident_id, action=action.action,
                           target=action.target, params=dict(action.params), created_at=now, until=action.until,
                           status=how.status, undo_at=how.undo_at)
        await self.store.action_upsert(rec)
        wire = action.to_wire(now)
        failures = await self.enforcement.apply(wire, until=action.until, now=now, reason=reason)
        error = "; ".join(f"{f.backend}: {f.error}" for f in failures) or None
        if error is None and how.follow_up in ("notify_security_team", "notify_user"):
            error = await self._notify(action, alert, now)
        if error is None and how.follow_up == "preserve_evidence":
            if alert is None:
                error = "no alert to preserve evidence for"
            else:
                task = asyncio.create_task(self._preserve(action, alert, now), name=f"evidence {action.action_id}")
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        if error is not None:
            rec = replace(rec, error=error)
            await self.store.action_upsert(rec)
            self.counts["failures"] += 1
            logger.warning("action %s on %s failed: %s", action.action, action.target, error)
        if not how.one_shot:
            self.active[rec.id] = rec
            if rec.undo_at is not None:
                self.undo_at[rec.id] = rec.undo_at
        self.counts["actions"] += 1
        await self.outlet.publish(topics.security_actions(self.cluster), wire, kind="security_action")
        return error

    async def _notify(self, action: PlannedAction, alert: SecurityAlert | None, now: float) -> str | None:
        """Send what a notification action produces (``policies.response.effects``); the error
        text if it could not be sent."""
        if alert is None:
            return "no alert to notify about"
        try:
            if action.action == "notify_security_team":
                await self.outlet.alert([security_team_alert(action, alert, self.cluster, now,
                                                             resolve_after=self.alert_resolve_after)])
            else:
                notice = user_notice(action, alert, self.cluster, now)
                await self.outlet.publish(topics.security_notices(self.cluster), notice.to_wire(),
                                          kind="security_notice")
        except Exception as exc:  # a failed delivery is recorded on the incident, not raised
            logger.exception("%s on %s could not be sent", action.action, action.target[:80])
            return f"{action.action}: {type(exc).__name__}: {str(exc)[:200]}"
        self.counts["notifications"] += 1
        return None

    async def _preserve(self, action: PlannedAction, alert: SecurityAlert, now: float) -> None:
        """Copy the target's audit rows and the alert into a sealed evidence record in the store,
        then log it on the incident. Runs in the background, ``evidence_delay_s`` after the
        incident, so the audit writer's batch holding the triggering events is stored too."""
        limits = EvidenceLimits()
        await asyncio.sleep(self.options.evidence_delay_s)
        since = now - limits.lookback_s
        entry: dict[str, Any] = {"ts": self.clock.now(), "action": action.action, "target": action.target,
                                 "actionId": action.action_id}
        try:
            rows = [{"id": r.id, "chain": r.chain, "ts": r.ts, "kind": r.kind, "hash": r.hash, "payload": r.payload}
                    async for r in self.store.inner.audit_iter(since=since) if concerns(r.payload, action.target)]
            record = evidence_record(evidence_id=action.action_id, incident_id=action.incident_id,
                                     target=action.target, alert=alert.to_wire(), rows=rows, since=since,
                                     now=entry["ts"], limits=limits)
            await self.store.inner.state_put(EVIDENCE, action.action_id, record)
        except StoreError as exc:
            self.counts["failures"] += 1
            logger.warning("evidence for %s not preserved: %s", action.target[:80], exc)
            entry.update(result="failed", error=f"store: {str(exc)[:200]}")
        else:
            self.counts["evidence"] += 1
            entry.update(result="preserved", evidenceId=action.action_id, sha256=record["sha256"],
                         auditRows=len(record["auditRows"]), omittedRows=record["omittedRows"])
        async with self._lock:
            await self._update_incident(action.incident_id, [entry])

    async def _close_approval(self, step: ApprovalStep, now: float) -> None:
        """Take the request off the store first (straight, not buffered): only the one who removed
        it acts on it, so an approval is carried out at most once."""
        try:
            if not await self.store.inner.state_delete(APPROVALS, step.action_id):
                return
        except StoreError:
            return  # still stored: the next poll tries again
        self.pending_approvals.discard(step.action_id)
        outcome, a = approval_outcome(step, self.protected), step.action
        if outcome == "malformed" or a is None or step.incident_id is None:
            logger.warning("dropped a malformed approval request %s", step.action_id[:80])
            return
        self.counts[APPROVAL_COUNTS[outcome]] += 1
        if outcome == "carry_out":
            error = await self._carry_out(a, f"approved by {step.by}", now)
            entry = {**action_entry(a, now, error), "approvedBy": step.by, "note": step.note or None}
            applied = a.action if error is None else None
        else:
            await self.store.action_upsert(ActionRecord(
                id=a.action_id, incident_id=a.incident_id, action=a.action, target=a.target, params=dict(a.params),
                created_at=now, status=outcome, error="protected target" if outcome == "refused" else None))
            entry = {"ts": now, "action": a.action, "target": a.target, "actionId": a.action_id, "result": outcome,
                     "by": step.by or None, "note": step.note or None}
            applied = None
        inc = await self._update_incident(step.incident_id, [entry], settled=a.action_id, applied=applied)
        if inc is not None:
            await self._publish(inc, Publish(event="updated", topics=incident_topics(self.cluster, inc.severity,
                                                                                     "updated")), now)

    async def _undo(self, rec: ActionRecord, now: float, why: str) -> None:
        self.active.pop(rec.id, None)
        plan = plan_undo(rec, self.active.values(), now, self.policy, why)
        error = None
        if plan.held_by is None:  # else a newer, longer action still holds this target
            failures = await self.enforcement.undo(rec.action, rec.target)
            error = "; ".join(f"{f.backend}: {f.error}" for f in failures) or None
        await self.store.action_upsert(replace(rec, status="undone", undone_at=now, undo_at=rec.undo_at or now,
                                               error=error or rec.error))
        self.counts["undos"] += 1
        wire = EnforcementAction(action=plan.name, target=rec.target, incident_id=rec.incident_id,
                                 action_id=f"{rec.id}:undo", undo=True, params=dict(plan.params),
                                 timestamp=now).to_wire()
        await self.outlet.publish(topics.security_actions(self.cluster), wire, kind="security_action")
        if rec.incident_id is not None:
            await self._update_incident(rec.incident_id, [{
                "ts": now, "action": plan.name, "target": rec.target, "actionId": wire["actionId"],
                "result": "failed" if error else "applied", "error": error, "reason": why}])

    async def _update_incident(self, inc_id: str, entries: list[Mapping[str, Any]], *, folded: bool = False,
                               settled: str | None = None, applied: str | None = None) -> IncidentRecord | None:
        """Log ``entries`` on a stored incident (``policies.response.incident.updated_incident``)."""
        try:
            inc = await self.store.inner.incident_get(inc_id)
        except StoreError:
            return None  # the action record holds the truth; the log line is a convenience
        if inc is None:
            return None
        status, data = updated_incident(inc.status, inc.data, entries, enforced=ENFORCED, folded=folded,
                                        settled=settled, applied=applied)
        inc = replace(inc, data=data, status=status)
        await self.store.incident_upsert(inc)
        return inc

    async def _resolve(self, inc: IncidentRecord, now: float, resolution: str, entry: dict[str, Any]) -> None:
        """Mark resolved (by an ``operator``, or ``expired``), log ``entry``, publish ``resolved``."""
        inc = replace(inc, status="resolved", data=resolved_incident(inc.data, now, entry))
        await self.store.incident_upsert(inc)
        await self._publish(inc, Publish(event="resolved", topics=incident_topics(self.cluster, inc.severity,
                                                                                  "resolved"),
                                         resolution=resolution), now)

    async def _publish(self, inc: IncidentRecord, p: Publish, now: float) -> None:
        msg = incident_message(inc, p.event, self.cluster, now, p.resolution)
        for topic in p.topics:
            await self.outlet.publish(topic, msg, kind="incident")

    def active_wire(self, now: float) -> list[dict[str, Any]]:
        return [action_wire(r) for r in sorted(self.active.values(), key=lambda r: (r.created_at, r.id))
                if r.until is None or r.until > now]

    async def _publish_active(self, now: float) -> None:
        doc = ActiveActions.model_validate({"actions": self.active_wire(now), "timestamp": now}).to_wire()
        self.active_published_at = now
        await self.outlet.publish(active_actions_topic(self.cluster), doc, retain=True, kind="security_active")


def stored_incident(p: Persist) -> IncidentRecord:
    """The store record a ``Persist`` writes."""
    inc = p.incident
    return IncidentRecord(id=inc.id, type=inc.type, severity=inc.severity, title=inc.title,
                          description=inc.description, source=inc.source, status=p.status,
                          automated_response=p.automated_response, created_at=inc.created_at, data=dict(p.data))
