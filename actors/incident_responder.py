"""IncidentResponder actor (seed: IncidentResponseAutomation): a security alert in, an incident
and its enforcement out.

For each alert (``handle(alert_wire)``): ``policies.response.incident`` decides (``admit``, then
``conclude`` once the actions were carried out) and returns effects as values
(``policies.response.effects``: ``Remember``, ``Persist``, ``Hold``, ``Enforce``, ``Publish``,
``Escalate``, ``Notify``, ``Fold``); this shell carries them out in order
(``actors.incident_effects``): it writes the incident and every action to the store *before*
carrying them out (so a crash mid-way is restored, not lost), applies enforced actions to Redis/EMQX (``adapters.enforcement.actions``),
publishes each action on ``system/{cluster}/security/actions`` and the current set, retained, on
``system/{cluster}/security/actions/active``, records each success and failure in the incident's
log (seed: LogAction/LogActionFailure), escalates per policy, and publishes incident changes on
``system/{cluster}/incidents`` (critical and emergency ones also on ``…/emergency``).

Undo: every timed action has ``undo_at`` in the store. An in-memory schedule runs due undos every
``undo_poll_s``; the store is polled every ``store_poll_s`` for undos requested by hand
(``python -m drivers.incidents lift ID`` sets ``undo_at = now``). An undo whose (action, target) is
still held by another, longer action (a repeat offender's newer ban) leaves the backends alone.

Guards (``policies.response.guard``): an enforcement action on a protected target (loopback,
sfa-ops' own hosts, ``security.yaml`` ``protected:``) is refused and recorded; one without expiry
(or resting on a single forgeable event) is stored as an approval request and carried out only
once an operator approves it (``drivers.incidents approve ID``; polled every ``store_poll_s``;
undecided requests lapse). A source with more incidents than ``per_source`` allows has further
alerts folded into its latest incident (counted, logged, no new actions).

Housekeeping (every ``housekeeping_s``): an open incident with no new event for the response
policy's ``incident_ttl`` is resolved as ``expired`` (``policies.response.incident_expiry``), and the
retained active set is republished when ``active_refresh_s`` passed since the last one (SDKs with a
trust refuse a set older than their maximum age).

The body, :class:`ResponderBody` (an ``actors.chassis.Chassis``; clock, store and bus injected),
runs in-process in tests; ``IncidentResponder`` is the thin Ray actor around it.

Restart: Ray re-runs the constructor, which queues ``ensure_started()``
(``Chassis.start_when_restarted``); it restores offender history, active actions (re-applied to
Redis/EMQX: idempotent) and pending undos from the store, runs undos whose time passed while it
was down, and republishes the retained set.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from typing import Any

import ray

from actors.chassis import Chassis
from actors.clock import Clock, SystemClock
from actors.incident_effects import OFFENDERS, IncidentEffects, stored_incident
from actors.incident_records import action_wire as _wire
from actors.incident_records import stored
from actors.loops import run_every
from actors.security_common import Outlet, SecurityOptions, alert_from_wire
from actors.settings import OperateSettings
from adapters.enforcement.actions import ENFORCED, Enforcement, own_addresses
from adapters.mqtt.bus import MqttBus
from adapters.store import ActionRecord, Store, StoreError, open_store
from adapters.store.buffer import BufferedStore
from policies.response.config import ResponsePolicy, load_response_policy
from policies.response.effects import Enforce, Fold, Persist
from policies.response.guard import APPROVALS, ProtectedTargets, approval_steps
from policies.response.incident import (
    Carried,
    active_refresh_due,
    admit,
    conclude,
    due_undos,
    fold_summary,
    restored_history,
    summary,
    undo_reason,
)
from policies.response.incident_expiry import incident_expired, last_event_at
from policies.response.plan import OffenderHistory, incident_id
from policies.security.detection_rules import load_security_policy

logger = logging.getLogger("sfa_ops.responder")

_FAR = 10 * 365 * 86400.0
_SEEN_CAP = 10_000
_COUNTS = ("alerts", "incidents", "duplicates", "malformed", "actions", "failures", "undos", "escalations",
           "restored", "refused", "awaiting_approval", "approved", "rejected", "approvals_expired", "folded",
           "notifications", "evidence", "expired")


class ResponderBody(IncidentEffects, Chassis):
    """The responder's body (module docstring); ``IncidentResponder`` is the Ray actor around it."""

    what = "incident responder"

    def __init__(self, settings: OperateSettings, options: SecurityOptions | None = None, *,
                 supervisor: Any = None, clock: Clock | None = None, store: Store | None = None,
                 bus: MqttBus | None = None) -> None:
        logging.basicConfig(level=logging.INFO)
        self.settings = settings
        self.options = options or SecurityOptions()
        self.cluster = settings.cluster_id
        self.clock: Clock = clock or SystemClock()
        self.supervisor = supervisor
        self.store = BufferedStore(inner=store or open_store(settings.store_url),
                                   max_queued=self.options.store_max_queued)
        self.bus: MqttBus | None = bus
        if bus is None and supervisor is None:
            self.bus = MqttBus(config=settings.mqtt_config(), client_id=f"responder-{self.cluster}")
        self.outlet = Outlet(cluster=self.cluster, store=self.store, bus=self.bus, supervisor=supervisor)
        self.enforcement = Enforcement(self.options.enforcement)
        self.policy: ResponsePolicy = load_response_policy(settings.policies_dir)
        self.security_policy = load_security_policy(settings.policies_dir)
        self.protected = ProtectedTargets.from_policy(self.security_policy.protected)
        self.alert_resolve_after = self.security_policy.alert_resolve_after
        self.history = OffenderHistory()
        self.last_incident: OrderedDict[str, str] = OrderedDict()  # source -> its latest incident
        self.pending_approvals: set[str] = set()
        self.active: dict[str, ActionRecord] = {}
        self.active_published_at = float("-inf")
        self.undo_at: dict[str, float] = {}
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.counts = dict.fromkeys(_COUNTS, 0)
        self._lock = asyncio.Lock()
        self._loops: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Idempotent: open store and bus, restore from the store, start the undo loops."""
        await self.ensure_started()
        return await self.status()

    async def _start(self) -> None:
        if self.security_policy.protected.own_hosts:
            hosts = await own_addresses([self.settings.mqtt_config().host])
            self.protected = ProtectedTargets.from_policy(self.security_policy.protected, sorted(hosts))
        await self.store.open()
        if self.bus is not None:
            await self.bus.start()
            await self.bus.wait_connected(30)
        await self._restore()
        o = self.options
        self._loops = [asyncio.create_task(run_every(every, step, name=name, logger=logger), name=name)
                       for every, step, name in ((o.undo_poll_s, self._undo_step, "undo"),
                                                 (o.store_poll_s, self._store_poll, "undo-store"),
                                                 (o.housekeeping_s, self._housekeeping, "housekeeping"))]

    async def stop(self) -> None:
        for t in [*self._loops, *self._background]:
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
        self.history, last = restored_history(docs, now, self.policy)
        self.last_incident = OrderedDict(last)
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
        await self._approval_step()  # decisions taken while we were down
        await self._publish_active(now)
        await self.outlet.flush()

    # -- alerts → incidents ---------------------------------------------------------------------

    async def handle(self, alert_wire: dict[str, Any]) -> dict[str, Any] | None:
        """One SecurityAlert wire dict → incident, actions, undo schedule, escalation. Returns a
        summary (``incidentId``, ``actions``, ``escalation``), or None for a duplicate/malformed."""
        await self.ensure_started()
        self.counts["alerts"] += 1
        try:
            alert = alert_from_wire(alert_wire)
        except (KeyError, TypeError, ValueError) as exc:
            self.counts["malformed"] += 1
            logger.warning("malformed security alert dropped: %s", exc)
            return None
        inc_id = incident_id(alert)
        async with self._lock:
            if inc_id in self.seen or await stored(self.store, inc_id):
                self.counts["duplicates"] += 1
                return None
            self.seen[inc_id] = None
            while len(self.seen) > _SEEN_CAP:
                self.seen.popitem(last=False)
            now = self.clock.now()
            decision = admit(alert, alert_wire, history=self.history, last_incident=self.last_incident, now=now,
                             policy=self.policy, protected=self.protected, pending=len(self.pending_approvals))
            if isinstance(decision, Fold):
                await self._fold(decision)
                return fold_summary(decision)
            self.history = decision.history
            carried: list[Carried] = []
            for effect in decision.effects:
                error = await self._effect(effect, now, alert=alert)
                if isinstance(effect, Enforce):
                    carried.append(Carried(action=effect.action, error=error))
            outcome = conclude(decision, carried, now=now, policy=self.policy, cluster=self.cluster,
                               enforced=ENFORCED)
            record = None
            for after in outcome.effects:
                if isinstance(after, Persist):
                    record = stored_incident(after)
                await self._effect(after, now, alert=alert, incident=record)
            self.counts["incidents"] += 1
            await self._publish_active(now)
            await self.outlet.flush()
        return summary(decision, outcome)

    # -- undo -----------------------------------------------------------------------------------

    async def _undo_step(self) -> None:
        now = self.clock.now()
        due = due_undos(self.undo_at, now)
        if not due:
            return
        async with self._lock:
            for aid in due:
                rec = self.active.get(aid)
                self.undo_at.pop(aid, None)
                if rec is not None:
                    await self._undo(rec, now, undo_reason(rec.until, now))
            await self._publish_active(now)
            await self.outlet.flush()

    async def _store_poll(self) -> None:
        """Pick up what operators asked through the store: undos (``lift``), approvals."""
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
        await self._approval_step()

    async def _approval_step(self) -> None:
        """Close approval requests an operator decided (or that lapsed)."""
        try:
            docs = await self.store.inner.state_list(APPROVALS)
        except StoreError:
            return
        now = self.clock.now()
        self.pending_approvals = set(docs)
        steps = approval_steps(docs, now, self.policy)
        if not steps:
            return
        async with self._lock:
            for step in steps:
                await self._close_approval(step, now)
            await self._publish_active(now)
            await self.outlet.flush()

    # -- operators --------------------------------------------------------------------------------

    async def lift(self, action_id: str) -> bool:
        """Undo one active action now (same effect as ``drivers.incidents lift``)."""
        await self.ensure_started()
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
        await self.ensure_started()
        inc = await self.store.inner.incident_get(incident_id)
        if inc is None:
            return False
        await self._resolve(inc, self.clock.now(), "operator", {"result": "applied", "note": note})
        await self.outlet.flush()
        return True

    async def _housekeeping(self) -> None:
        await self._expire_incidents()
        now = self.clock.now()
        if active_refresh_due(self.active_published_at, now, self.options.active_refresh_s):
            async with self._lock:
                await self._publish_active(now)
                await self.outlet.flush()

    async def _expire_incidents(self) -> None:
        """Resolve, as ``expired``, open incidents idle for the policy's ``incident_ttl``."""
        ttl = self.policy.incident_ttl
        try:
            candidates = await self.store.inner.incidents_open()
        except StoreError:
            return
        now = self.clock.now()
        due = [i.id for i in candidates
               if incident_expired(status=i.status, created_at=i.created_at, data=i.data, now=now, ttl=ttl)]
        if not due:
            return
        expired = 0
        async with self._lock:
            for inc_id in due:
                try:  # read again under the lock: an alert may have been folded into it meanwhile
                    inc = await self.store.inner.incident_get(inc_id)
                except StoreError:
                    return
                now = self.clock.now()
                if inc is None or not incident_expired(status=inc.status, created_at=inc.created_at, data=inc.data,
                                                       now=now, ttl=ttl):
                    continue
                await self._resolve(inc, now, "expired", {"result": "expired", "idleSeconds": round(
                    now - last_event_at(inc.created_at, inc.data), 3)})
                expired += 1
            await self.outlet.flush()
        self.counts["expired"] += expired
        logger.info("%d idle incident(s) resolved as expired", expired)

    async def status(self) -> dict[str, Any]:
        now = self.clock.now()
        return {"pid": os.getpid(), "counts": dict(self.counts), "active": self.active_wire(now),
                "pendingUndos": dict(sorted(self.undo_at.items(), key=lambda kv: kv[1])),
                "pendingApprovals": sorted(self.pending_approvals),
                "offenders": len(self.history.incidents), "store": self.store.stats().__dict__
                if hasattr(self.store.stats(), "__dict__") else {}}


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class IncidentResponder:
    """The Ray actor around :class:`ResponderBody` (same arguments). Ray restarts it by running this
    constructor again, which starts the body at once (restore, undos due, the retained set)."""

    def __init__(self, settings: OperateSettings, options: SecurityOptions | None = None, *,
                 supervisor: Any = None) -> None:
        self.body = ResponderBody(settings, options, supervisor=supervisor)
        self.body.start_when_restarted()

    async def ensure_started(self) -> None:
        await self.body.ensure_started()

    async def start(self) -> dict[str, Any]:
        return await self.body.start()

    async def stop(self) -> None:
        await self.body.stop()

    async def handle(self, alert_wire: dict[str, Any]) -> dict[str, Any] | None:
        return await self.body.handle(alert_wire)

    async def lift(self, action_id: str) -> bool:
        return await self.body.lift(action_id)

    async def resolve(self, incident_id: str, note: str = "") -> bool:
        return await self.body.resolve(incident_id, note)

    async def status(self) -> dict[str, Any]:
        return await self.body.status()
