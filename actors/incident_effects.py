"""The effects the IncidentResponder carries out, each persisted before it happens: an action
carried out (store, Redis/EMQX, ``system/{cluster}/security/actions``; a notification sent, an
evidence record preserved: ``policies.response_effects``, ``policies.evidence``), held (refused, or
waiting for approval), undone, or settled by an operator; an incident resolved; a line in an incident's log; incident
and active-set messages. ``IncidentEffects`` is the base of ``actors.incident_responder.Responder``,
which owns the state these methods use; no decision is taken here (``policies.response*``)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from actors.clock import Clock
from actors.incident_records import action_wire, append_log, incident_message
from actors.security_common import Outlet, SecurityOptions, active_actions_topic
from adapters.enforcement import ENFORCED, Enforcement
from adapters.store import ActionRecord, IncidentRecord, StoreError
from adapters.store.buffer import BufferedStore
from policies.evidence import EVIDENCE, EvidenceLimits, concerns, evidence_record
from policies.response import PlannedAction, ResponsePolicy
from policies.response_effects import security_team_alert, user_notice
from policies.response_guard import APPROVALS, ApprovalStep, GatedAction, ProtectedTargets, approval_request
from policies.security_events import SEVERITY_RANK, SecurityAlert
from protocol import topics
from protocol.security import ActiveActions, EnforcementAction

logger = logging.getLogger("sfa_ops.responder")
_NOTIFIERS = ("notify_security_team", "notify_user")


class IncidentEffects:
    """Effects of the responder (module docstring); the attributes are set by ``Responder``."""

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

    async def _fold(self, alert: SecurityAlert, now: float) -> dict[str, Any]:
        """A source over its incident limit: the alert goes into its latest incident's log."""
        self.counts["folded"] += 1
        last = self.last_incident.get(alert.source)
        if last is not None:
            await self._update_incident(last, [{"ts": now, "action": "folded", "result": "folded",
                                                "alertType": alert.type, "severity": alert.severity,
                                                "target": alert.target, "description": alert.description[:200]}],
                                        folded=True)
        else:
            logger.warning("%s from %s over the per-source limit; no incident to fold it into", alert.type,
                           alert.source[:80])
        return {"incidentId": last, "status": "folded", "offence": None, "actions": [], "escalation": None}

    async def _hold(self, g: GatedAction, now: float, log: list[dict[str, Any]]) -> None:
        """Record an action that is refused or waits for approval (and store the request)."""
        a = g.action
        waiting = g.verdict == "approval"
        rec = ActionRecord(id=a.action_id, incident_id=a.incident_id, action=a.action, target=a.target,
                           params=dict(a.params), created_at=now, status="pending_approval" if waiting else "refused",
                           error=None if waiting else g.reason)
        await self.store.action_upsert(rec)
        if waiting:
            await self.store.state_put(APPROVALS, a.action_id, approval_request(a, now, g.reason))
            self.pending_approvals.add(a.action_id)
            self.counts["awaiting_approval"] += 1
            logger.warning("%s on %s waits for approval (%s): python -m drivers.incidents approve %s",
                           a.action, a.target[:80], g.reason, a.action_id)
        else:
            self.counts["refused"] += 1
            logger.warning("refused %s on %s: %s", a.action, a.target[:80], g.reason)
        append_log(log, {"ts": now, "action": a.action, "target": a.target, "actionId": a.action_id,
                         "result": "awaiting_approval" if waiting else "refused", "reason": g.reason})

    async def _carry_out(self, action: PlannedAction, reason: str, now: float, log: list[dict[str, Any]],
                         alert: SecurityAlert | None = None) -> str | None:
        """Persist, enforce (or notify), publish one action; the error text if a backend failed.
        The notifications need the ``alert`` that raised the incident."""
        one_shot = action.undo_action is None and action.action not in ENFORCED
        rec = ActionRecord(id=action.action_id, incident_id=action.incident_id, action=action.action,
                           target=action.target, params=dict(action.params), created_at=now, until=action.until,
                           status="done" if one_shot else "applied",
                           undo_at=action.until if action.undo_action is not None else None)
        await self.store.action_upsert(rec)
        wire = action.to_wire(now)
        failures = await self.enforcement.apply(wire, until=action.until, now=now, reason=reason)
        error = "; ".join(f"{f.backend}: {f.error}" for f in failures) or None
        if error is None and action.action in _NOTIFIERS:
            error = await self._notify(action, alert, now)
        if error is None and action.action == "preserve_evidence":
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
        if not one_shot:
            self.active[rec.id] = rec
            if rec.undo_at is not None:
                self.undo_at[rec.id] = rec.undo_at
        self.counts["actions"] += 1
        await self.outlet.publish(topics.security_actions(self.cluster), wire, kind="security_action")
        append_log(log, {"ts": now, "action": action.action, "target": action.target,
                         "actionId": action.action_id, "result": "failed" if error else "applied", "error": error,
                         "until": action.until})
        return error

    async def _notify(self, action: PlannedAction, alert: SecurityAlert | None, now: float) -> str | None:
        """Send what a notification action produces (``policies.response_effects``); the error
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
        a = step.action
        if step.decision == "malformed" or a is None or step.incident_id is None:
            logger.warning("dropped a malformed approval request %s", step.action_id[:80])
            return
        log: list[dict[str, Any]] = []
        if step.decision == "approved" and not self.protected.protects(a.target):
            self.counts["approved"] += 1
            error = await self._carry_out(a, f"approved by {step.by}", now, log)
            log[-1].update({"approvedBy": step.by, **({"note": step.note} if step.note else {})})
            applied = a.action if error is None else None
        else:
            decision = "refused" if step.decision == "approved" else step.decision
            self.counts["approvals_expired" if decision == "expired" else "rejected" if decision == "rejected"
                        else "refused"] += 1
            await self.store.action_upsert(ActionRecord(
                id=a.action_id, incident_id=a.incident_id, action=a.action, target=a.target, params=dict(a.params),
                created_at=now, status=decision, error="protected target" if decision == "refused" else None))
            append_log(log, {"ts": now, "action": a.action, "target": a.target, "actionId": a.action_id,
                             "result": decision, "by": step.by or None, "note": step.note or None})
            applied = None
        inc = await self._update_incident(step.incident_id, log, settled=a.action_id, applied=applied)
        if inc is not None:
            await self._publish_incident(inc, "updated", now)

    async def _undo(self, rec: ActionRecord, now: float, why: str) -> None:
        self.active.pop(rec.id, None)
        spec = self.policy.actions.get(rec.action)
        undo_name = spec.undo if spec is not None and spec.undo else f"undo_{rec.action}"
        holder = next((o for o in self.active.values() if o.action == rec.action and o.target == rec.target
                       and (o.until is None or o.until > now)), None)
        params: dict[str, Any] = {"undoes": rec.action, "reason": why}
        error = None
        if holder is not None:
            params["heldBy"] = holder.id  # a newer, longer action still holds this target
        else:
            failures = await self.enforcement.undo(rec.action, rec.target)
            error = "; ".join(f"{f.backend}: {f.error}" for f in failures) or None
        await self.store.action_upsert(replace(rec, status="undone", undone_at=now, undo_at=rec.undo_at or now,
                                               error=error or rec.error))
        self.counts["undos"] += 1
        wire = EnforcementAction(action=undo_name, target=rec.target, incident_id=rec.incident_id,
                                 action_id=f"{rec.id}:undo", undo=True, params=params, timestamp=now).to_wire()
        await self.outlet.publish(topics.security_actions(self.cluster), wire, kind="security_action")
        if rec.incident_id is not None:
            await self._update_incident(rec.incident_id, [{
                "ts": now, "action": undo_name, "target": rec.target, "actionId": wire["actionId"],
                "result": "failed" if error else "applied", "error": error, "reason": why}])

    async def _update_incident(self, inc_id: str, entries: list[dict[str, Any]], *, folded: bool = False,
                               settled: str | None = None, applied: str | None = None) -> IncidentRecord | None:
        """Add log entries to an incident; ``folded`` counts a folded alert, ``settled`` takes an
        action id off its awaiting list, ``applied`` (the name of an action carried out after
        approval) joins its automated response, and an enforced one contains an open incident."""
        try:
            inc = await self.store.inner.incident_get(inc_id)
        except StoreError:
            return None  # the action record holds the truth; the log line is a convenience
        if inc is None:
            return None
        data = dict(inc.data)
        log = list(data.get("log", []))
        for entry in entries:
            append_log(log, entry)
        data["log"] = log
        if folded:
            data["folded"] = int(data.get("folded", 0)) + 1
        if settled is not None:
            data["awaitingApproval"] = [x for x in data.get("awaitingApproval", []) if x != settled]
        if applied is not None:
            data["automatedResponse"] = [*data.get("automatedResponse", []), applied]
        status = "contained" if applied in ENFORCED and inc.status == "open" else inc.status
        inc = replace(inc, data=data, status=status)
        await self.store.incident_upsert(inc)
        return inc

    async def _resolve(self, inc: IncidentRecord, now: float, resolution: str, entry: dict[str, Any]) -> None:
        """Mark resolved (by an ``operator``, or ``expired``), log ``entry``, publish ``resolved``."""
        data = dict(inc.data)
        log = list(data.get("log", []))
        append_log(log, {"ts": now, "action": "resolve", **entry})
        data["log"] = log
        inc = replace(inc, status="resolved", data=data)
        await self.store.incident_upsert(inc)
        await self._publish_incident(inc, "resolved", now, resolution)

    async def _publish_incident(self, inc: IncidentRecord, event: str, now: float,
                                resolution: str | None = None) -> None:
        msg = incident_message(inc, event, self.cluster, now, resolution)
        await self.outlet.publish(topics.system_incidents(self.cluster), msg, kind="incident")
        if SEVERITY_RANK.get(inc.severity, 0) >= SEVERITY_RANK["critical"] and event in ("created", "escalated"):
            await self.outlet.publish(topics.system_emergency(self.cluster), msg, kind="incident")

    def active_wire(self, now: float) -> list[dict[str, Any]]:
        return [action_wire(r) for r in sorted(self.active.values(), key=lambda r: (r.created_at, r.id))
                if r.until is None or r.until > now]

    async def _publish_active(self, now: float) -> None:
        doc = ActiveActions.model_validate({"actions": self.active_wire(now), "timestamp": now}).to_wire()
        self.active_published_at = now
        await self.outlet.publish(active_actions_topic(self.cluster), doc, retain=True, kind="security_active")
