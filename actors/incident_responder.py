"""IncidentResponder actor (seed: IncidentResponseAutomation): a security alert in, an incident
and its enforcement out.

For each alert (``handle(alert_wire)``): ``policies.response.plan_response`` decides; this shell
writes the incident and every action to the store *before* carrying them out (so a crash
mid-way is restored, not lost), applies enforced actions to Redis/EMQX (``adapters.enforcement``),
publishes each action on ``system/{cluster}/security/actions`` and the current set, retained, on
``system/{cluster}/security/actions/active``, records each success and failure in the incident's
log (seed: LogAction/LogActionFailure), escalates per policy, and publishes incident changes on
``system/{cluster}/incidents`` (critical and emergency ones also on ``…/emergency``).

Undo: every timed action has ``undo_at`` in the store. An in-memory schedule runs due undos every
``undo_poll_s``; the store is polled every ``store_poll_s`` for undos requested by hand
(``python -m drivers.incidents lift ID`` sets ``undo_at = now``). An undo whose (action, target) is
still held by another, longer action (a repeat offender's newer ban) leaves the backends alone.

Restart: Ray re-runs the constructor, which schedules ``start()``; it restores offender history,
active actions (re-applied to Redis/EMQX: idempotent) and pending undos from the store, runs undos
whose time passed while it was down, and republishes the retained set.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import ray

from actors.clock import Clock, SystemClock
from actors.loops import run_every
from actors.security_common import (
    Outlet,
    SecurityOptions,
    active_actions_topic,
    alert_from_wire,
    plain_alert,
    schedule_self_start,
)
from actors.settings import OperateSettings
from adapters.enforcement import ENFORCED, Enforcement
from adapters.mqtt import MqttBus
from adapters.store import ActionRecord, IncidentRecord, StoreError, open_store
from adapters.store.buffer import BufferedStore
from policies.response import (
    EscalationDecision,
    OffenderHistory,
    PlannedAction,
    ResponsePolicy,
    incident_id,
    load_response_policy,
    on_action_failed,
    plan_response,
)
from policies.security_events import SEVERITY_RANK, rfc3339
from protocol import topics

logger = logging.getLogger("sfa_ops.responder")

OFFENDERS = "security_offenders"
_FAR = 10 * 365 * 86400.0
_SEEN_CAP = 10_000
_LOG_CAP = 200  # entries kept in an incident's log
_LEVEL_SEVERITY = {1: "error", 2: "critical"}


class Responder:
    """The actor's body (also usable in-process); ``IncidentResponder`` is the Ray actor."""

    def __init__(self, settings: OperateSettings, options: SecurityOptions | None = None, *,
                 supervisor: Any = None, clock: Clock | None = None) -> None:
        logging.basicConfig(level=logging.INFO)
        self.settings = settings
        self.options = options or SecurityOptions()
        self.cluster = settings.cluster_id
        self.clock: Clock = clock or SystemClock()
        self.supervisor = supervisor
        self.store = BufferedStore(inner=open_store(settings.store_url), max_queued=self.options.store_max_queued)
        self.bus: MqttBus | None = None
        if supervisor is None:
            self.bus = MqttBus(config=settings.mqtt_config(),
                               client_id=f"responder-{self.cluster}")
        self.outlet = Outlet(cluster=self.cluster, store=self.store, bus=self.bus, supervisor=supervisor)
        self.enforcement = Enforcement(self.options.enforcement)
        self.policy: ResponsePolicy = load_response_policy(settings.policies_dir)
        self.history = OffenderHistory()
        self.active: dict[str, ActionRecord] = {}
        self.undo_at: dict[str, float] = {}
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.counts = dict.fromkeys(("alerts", "incidents", "duplicates", "malformed", "actions", "failures",
                                     "undos", "escalations", "restored"), 0)
        self._lock = asyncio.Lock()
        self._started: asyncio.Future[None] | None = None
        self._loops: list[asyncio.Task[None]] = []
        if self.options.self_start:
            schedule_self_start()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Idempotent: open store and bus, restore from the store, start the undo loops."""
        await self._ensure_started()
        return await self.status()

    async def _ensure_started(self) -> None:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                await self._start()
                self._started.set_result(None)
            except BaseException as exc:
                self._started.set_exception(exc)
                raise
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        await self.store.open()
        if self.bus is not None:
            await self.bus.start()
            await self.bus.wait_connected(30)
        await self._restore()
        self._loops = [
            asyncio.create_task(run_every(self.options.undo_poll_s, self._undo_step, name="undo", logger=logger)),
            asyncio.create_task(run_every(self.options.store_poll_s, self._store_poll, name="undo-store",
                                          logger=logger)),
        ]

    async def stop(self) -> None:
        for t in self._loops:
            t.cancel()
        await self.outlet.flush(2.0)
        await self.enforcement.close()
        if self.bus is not None:
            await self.bus.stop()
        await self.store.close()

    async def _restore(self) -> None:
        now = self.clock.now()
        try:
            docs = await self.store.inner.state_list(OFFENDERS)
            active = await self.store.inner.actions_active(now)
            pending = await self.store.inner.actions_pending_undo(now + _FAR)
        except StoreError:
            logger.exception("could not restore from the store; starting empty")
            return
        self.history = OffenderHistory(incidents={
            e: tuple(float(t) for t in d.get("incidents", [])) for e, d in docs.items()
        }).pruned(now - self.policy.repeat.lookback)
        for rec in [*active, *pending]:
            if rec.undone_at is not None:
                continue
            self.active[rec.id] = rec
            if rec.undo_at is not None:
                self.undo_at[rec.id] = rec.undo_at
        for rec in active:  # Redis may have lost them (and EMQX its bans): re-apply, idempotent
            if rec.action in ENFORCED:
                await self.enforcement.apply(_wire(rec), until=rec.until, now=now)
        self.counts["restored"] = len(self.active)
        logger.info("restored %d active actions (%d undos pending), %d offenders",
                    len(self.active), len(self.undo_at), len(self.history.incidents))
        await self._undo_step()  # undos whose time passed while we were down
        await self._publish_active(now)
        await self.outlet.flush()

    # -- alerts → incidents ---------------------------------------------------------------------

    async def handle(self, alert_wire: dict[str, Any]) -> dict[str, Any] | None:
        """One SecurityAlert wire dict → incident, actions, undo schedule, escalation. Returns a
        summary (``incidentId``, ``actions``, ``escalation``), or None for a duplicate/malformed."""
        await self._ensure_started()
        self.counts["alerts"] += 1
        try:
            alert = alert_from_wire(alert_wire)
        except (KeyError, TypeError, ValueError) as exc:
            self.counts["malformed"] += 1
            logger.warning("malformed security alert dropped: %s", exc)
            return None
        inc_id = incident_id(alert)
        async with self._lock:
            if inc_id in self.seen or await _stored(self.store, inc_id):
                self.counts["duplicates"] += 1
                return None
            self.seen[inc_id] = None
            while len(self.seen) > _SEEN_CAP:
                self.seen.popitem(last=False)
            now = self.clock.now()
            plan = plan_response(alert, self.history, now, self.policy)
            self.history = self.history.recorded(plan.offenders(), now)
            for entity in plan.offenders():
                await self.store.state_put(OFFENDERS, entity, {"incidents": list(self.history.incidents[entity])})
            inc = plan.incident
            data: dict[str, Any] = {"alertType": inc.alert_type, "target": inc.target, "offence": plan.offence,
                                    "automatedResponse": list(inc.automated_response), "alert": alert_wire,
                                    "skipped": [{"action": s.action, "reason": s.reason} for s in plan.skipped],
                                    "log": []}
            record = IncidentRecord(id=inc.id, type=inc.type, severity=inc.severity, title=inc.title,
                                    description=inc.description, source=inc.source, status="open",
                                    automated_response=bool(plan.actions), created_at=now, data=data)
            await self.store.incident_upsert(record)  # before its actions: they reference it
            escalation, failed, enforced = plan.escalation, 0, 0
            for action in plan.actions:
                error = await self._carry_out(action, alert.description, now, data["log"])
                enforced += action.action in ENFORCED and error is None
                if error is not None:
                    failed += 1
                    later = on_action_failed(plan, action, error, now, self.policy, failed_count=failed)
                    if later is not None and (escalation is None or later.level > escalation.level):
                        escalation = later
            status = "escalated" if escalation is not None else "contained" if enforced else "open"
            if escalation is not None:
                data["escalation"] = _escalation_wire(escalation)
            record = replace(record, status=status, data=data)
            await self.store.incident_upsert(record)
            self.counts["incidents"] += 1
            await self._publish_incident(record, "created", now)
            if escalation is not None:
                self.counts["escalations"] += 1
                await self._publish_incident(record, "escalated", now)
                await self.outlet.alert([plain_alert(
                    "SecurityIncidentEscalated", _LEVEL_SEVERITY.get(escalation.level, "emergency"), self.cluster,
                    now, f"{inc.title} ({inc.target}) escalated to level {escalation.level}: {escalation.reason}",
                    {"incident": inc.id, "level": str(escalation.level), "notify": ",".join(escalation.notify)})])
            await self._publish_active(now)
            await self.outlet.flush()
        return {"incidentId": inc.id, "status": status, "offence": plan.offence,
                "actions": [a.to_wire() for a in plan.actions],
                "escalation": _escalation_wire(escalation) if escalation else None}

    async def _carry_out(self, action: PlannedAction, reason: str, now: float, log: list[dict[str, Any]]) -> str | None:
        """Persist, enforce, publish one action; the error text if a backend failed."""
        one_shot = action.undo_action is None and action.action not in ENFORCED
        rec = ActionRecord(id=action.action_id, incident_id=action.incident_id, action=action.action,
                           target=action.target, params=dict(action.params), created_at=now, until=action.until,
                           status="done" if one_shot else "applied",
                           undo_at=action.until if action.undo_action is not None else None)
        await self.store.action_upsert(rec)
        wire = {**action.to_wire(), "timestamp": rfc3339(now)}
        failures = await self.enforcement.apply(wire, until=action.until, now=now, reason=reason)
        error = "; ".join(f"{f.backend}: {f.error}" for f in failures) or None
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
        _log(log, {"ts": now, "action": action.action, "target": action.target, "actionId": action.action_id,
                   "result": "failed" if error else "applied", "error": error, "until": action.until})
        return error

    # -- undo -----------------------------------------------------------------------------------

    async def _undo_step(self) -> None:
        now = self.clock.now()
        due = sorted((at, aid) for aid, at in self.undo_at.items() if at <= now)
        if not due:
            return
        async with self._lock:
            for _, aid in due:
                rec = self.active.get(aid)
                self.undo_at.pop(aid, None)
                if rec is not None:
                    await self._undo(rec, now, "expired" if rec.until is not None and rec.until <= now else "lifted")
            await self._publish_active(now)
            await self.outlet.flush()

    async def _store_poll(self) -> None:
        """Pick up undos requested through the store (an operator's ``lift``)."""
        now = self.clock.now()
        try:
            recs = await self.store.inner.actions_pending_undo(now)
        except StoreError:
            return
        for rec in recs:
            if rec.undone_at is None:
                self.active[rec.id] = rec
                self.undo_at[rec.id] = rec.undo_at if rec.undo_at is not None else now
        await self._undo_step()

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
        wire = {"action": undo_name, "target": rec.target, "incidentId": rec.incident_id,
                "actionId": f"{rec.id}:undo", "undo": True, "params": params, "timestamp": rfc3339(now)}
        await self.outlet.publish(topics.security_actions(self.cluster), wire, kind="security_action")
        if rec.incident_id is not None:
            await self._log_on_incident(rec.incident_id, {"ts": now, "action": undo_name, "target": rec.target,
                                                          "actionId": wire["actionId"], "result": "failed" if error
                                                          else "applied", "error": error, "reason": why})

    async def _log_on_incident(self, inc_id: str, entry: dict[str, Any]) -> None:
        try:
            inc = await self.store.inner.incident_get(inc_id)
        except StoreError:
            return  # the action record holds the truth; the log line is a convenience
        if inc is not None:
            data = dict(inc.data)
            log = list(data.get("log", []))
            _log(log, entry)
            data["log"] = log
            await self.store.incident_upsert(replace(inc, data=data))

    # -- operators --------------------------------------------------------------------------------

    async def lift(self, action_id: str) -> bool:
        """Undo one active action now (same effect as ``drivers.incidents lift``)."""
        await self._ensure_started()
        async with self._lock:
            rec = self.active.get(action_id)
            if rec is None:
                return False
            self.undo_at.pop(action_id, None)
            now = self.clock.now()
            await self._undo(rec, now, "lifted")
            await self._publish_active(now)
            await self.outlet.flush()
        return True

    async def resolve(self, incident_id: str, note: str = "") -> bool:
        """Mark an incident resolved and publish it (its actions keep their own schedule)."""
        await self._ensure_started()
        inc = await self.store.inner.incident_get(incident_id)
        if inc is None:
            return False
        now = self.clock.now()
        data = dict(inc.data)
        log = list(data.get("log", []))
        _log(log, {"ts": now, "action": "resolve", "result": "applied", "note": note})
        data["log"] = log
        inc = replace(inc, status="resolved", data=data)
        await self.store.incident_upsert(inc)
        await self._publish_incident(inc, "resolved", now)
        await self.outlet.flush()
        return True

    # -- publishing -------------------------------------------------------------------------------

    async def _publish_incident(self, inc: IncidentRecord, event: str, now: float) -> None:
        msg = incident_message(inc, event, self.cluster, now)
        await self.outlet.publish(topics.system_incidents(self.cluster), msg, kind="incident")
        if SEVERITY_RANK.get(inc.severity, 0) >= SEVERITY_RANK["critical"] and event in ("created", "escalated"):
            await self.outlet.publish(topics.system_emergency(self.cluster), msg, kind="incident")

    def active_wire(self, now: float) -> list[dict[str, Any]]:
        return [_wire(r) for r in sorted(self.active.values(), key=lambda r: (r.created_at, r.id))
                if r.until is None or r.until > now]

    async def _publish_active(self, now: float) -> None:
        doc = {"type": "active_actions", "actions": self.active_wire(now), "timestamp": rfc3339(now)}
        await self.outlet.publish(active_actions_topic(self.cluster), doc, retain=True, kind="security_active")

    async def status(self) -> dict[str, Any]:
        now = self.clock.now()
        return {"pid": os.getpid(), "counts": dict(self.counts), "active": self.active_wire(now),
                "pendingUndos": {k: v for k, v in sorted(self.undo_at.items(), key=lambda kv: kv[1])},
                "offenders": len(self.history.incidents), "store": self.store.stats().__dict__
                if hasattr(self.store.stats(), "__dict__") else {}}


def incident_message(inc: IncidentRecord, event: str, cluster: str, now: float) -> dict[str, Any]:
    """The ``system/{cluster}/incidents`` payload (protocol ``IncidentMessage``)."""
    severity = inc.severity if inc.severity in SEVERITY_RANK else "warning"
    status = inc.status if inc.status in ("open", "investigating", "contained", "escalated", "resolved") else "open"
    return {"type": "incident", "event": event, "clusterId": cluster, "incidentId": inc.id,
            "incidentType": inc.type, "alertType": inc.data.get("alertType"), "severity": severity,
            "title": inc.title, "description": inc.description, "source": inc.source,
            "target": inc.data.get("target", ""), "status": status,
            "automatedResponse": list(inc.data.get("automatedResponse", [])),
            "escalation": inc.data.get("escalation"), "timestamp": rfc3339(now)}


def _wire(rec: ActionRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"action": rec.action, "target": rec.target, "incidentId": rec.incident_id,
                           "actionId": rec.id, "undo": False, "params": dict(rec.params)}
    if rec.until is not None:
        out["until"] = rfc3339(rec.until)
    return out


def _escalation_wire(e: EscalationDecision) -> dict[str, Any]:
    return {"level": e.level, "reason": e.reason, "rule": e.rule, "notify": list(e.notify), "at": rfc3339(e.at)}


def _log(log: list[dict[str, Any]], entry: dict[str, Any]) -> None:
    log.append({k: v for k, v in entry.items() if v is not None and not (isinstance(v, float) and math.isinf(v))})
    del log[:-_LOG_CAP]


async def _stored(store: BufferedStore, inc_id: str) -> bool:
    """True when the incident is already in the store (an alert replayed after a restart)."""
    try:
        return await store.inner.incident_get(inc_id) is not None
    except StoreError:
        return False


IncidentResponder: Any = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(Responder)
