"""SecurityAnalyst actor (seed: SecurityMonitor): the detection rules of ``policies.security.analyzer``
run over the platform's security traffic.

Inputs:

- ``security/auth/+`` (login attempts), ``security/authz/+`` (authorization decisions),
  ``service/+/security`` (what services report; ``eventType: role_change`` with
  ``details.oldRoles/newRoles`` (lists of at most 256 role names) and ``changedBy`` (a string)
  feeds the privilege-escalation rule (other shapes are malformed), any other event
  becomes a ``ServiceSecurityEvent`` alert, its severity capped at ``security.yaml``
  ``service_report_max_severity`` unless ``trusted_reporters`` lets the service report more),
  ``audit/+/data-access`` (records touched) — each parsed once, event-driven. Windows are
  measured on the analyst's clock at arrival (a publisher's skewed clock cannot stretch or shrink
  them). Malformed events are counted and dropped: every message counts once, as an analyzer
  event, a service report (``service_events``) or ``malformed``. Alerts waiting for the next flush
  are capped (``MAX_PENDING_ALERTS`` each for detections and service reports; the rest counted as
  ``alerts_dropped``), as are the services kept per user between pattern runs.
- Login attempts also feed the unusual-login-pattern rule (``policies.security.login_patterns``): each
  user's networks, devices (``userAgent``) and hours learned from their successful logins, kept in
  memory only (like every other rule's state: a restarted analyst learns them again).
- ``activity(batch, now)`` from the observers each tick: calls per user per service. Deltas are
  summed and the periodic pattern rules run every ``pattern_interval_s`` (seed: 5 minutes).
- ``system/{cluster}/security/actions/active`` (the responder's retained ``ActiveActions``):
  targets of active ``increase_monitoring`` actions get lowered thresholds until the action
  expires or is lifted (``policies.response.monitoring_watch``).
- Baselines: ``baseline_latest("user_activity")`` every ``baseline_refresh_s``, shaped
  ``{"users": {"<userId>": {"requestsPerHour": 12.0, "services": ["Orders"], "recordsPerDay": 300}}}``
  (``policies.security.analyzer.UserBaseline``); a user without one gets ``security.yaml``'s default.

Outputs, batched every ``alert_flush_s``: each SecurityAlert goes to the Supervisor as an alert
dict (labels ``alertname`` = CamelCase type, ``severity``, ``component: security``, ``type``,
``source``, ``target``, ``user``/``ip``; routed by the AlertManager) and, as its wire dict, to
``IncidentResponder.handle``. Every alert ends ``alert_resolve_after`` after it starts (nothing
else would resolve it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import ray
from pydantic import ValidationError

from actors.chassis import Chassis
from actors.clock import Clock, SystemClock
from actors.loops import run_every
from actors.security_common import (
    Outlet,
    SecurityOptions,
    active_actions_topic,
    plain_alert,
    security_alert_dict,
)
from actors.settings import OperateSettings
from adapters.mqtt.bus import Message, MqttBus
from adapters.store import Store, StoreError, open_store
from adapters.store.buffer import BufferedStore
from policies.analysis.baselines import user_baselines
from policies.response.monitoring_watch import watches
from policies.security.analyzer import (
    AuthzEvent,
    DataAccessEvent,
    RoleChangeEvent,
    SecurityAlert,
    SecurityAnalyzer,
    UserActivity,
    UserBaseline,
    load_security_policy,
)
from policies.security.detection_rules import report_severity
from policies.security.intake import ID_MAX, parse_auth, parse_roles
from protocol import parse_model, topics
from protocol import security as wire

logger = logging.getLogger("sfa_ops.security_analyst")

BASELINE_KIND = "user_activity"
_MAX_ACTIVITY_USERS = 100_000
MAX_ACTIVITY_SERVICES = 256
"""Distinct services kept per user per pattern interval (more are counted as activity_overflow)."""
MAX_PENDING_ALERTS = 10_000
"""Alerts of each kind waiting for the next flush; beyond that they are counted (alerts_dropped)."""


def parse_user_baselines(data: Mapping[str, Any]) -> dict[str, UserBaseline]:
    """The ``user_activity`` baseline document → baselines by user (bad entries skipped).

    Documents written by ``drivers.baselines`` (``schema`` 1) are read by its own reader, which
    takes ``typicalServices`` (services used on at least two days) as the usual set."""
    if data.get("schema") is not None:
        try:
            return user_baselines(data)
        except (KeyError, TypeError, ValueError):
            logger.exception("unreadable user_activity baseline; using configured defaults")
            return {}
    out: dict[str, UserBaseline] = {}
    users = data.get("users")
    if not isinstance(users, Mapping):
        return out
    for uid, b in users.items():
        if not isinstance(b, Mapping):
            continue
        try:
            out[str(uid)] = UserBaseline(requests_per_hour=float(b.get("requestsPerHour", 0.0)),
                                         services=frozenset(str(s) for s in b.get("services", ())),
                                         records_per_day=float(b.get("recordsPerDay", 0.0)))
        except (TypeError, ValueError):
            continue
    return out


class AnalystBody(Chassis):
    """The actor's body (also usable in-process, e.g. by the benchmark); ``SecurityAnalyst`` is
    the Ray actor. ``store`` (wrapped in a ``BufferedStore``) and ``bus`` default to the real ones."""

    what = "security analyst"

    def __init__(self, settings: OperateSettings, options: SecurityOptions | None = None, *,
                 responder: Any = None, supervisor: Any = None, clock: Clock | None = None,
                 store: Store | None = None, bus: MqttBus | None = None) -> None:
        logging.basicConfig(level=logging.INFO)
        self.settings = settings
        self.options = options or SecurityOptions()
        self.cluster = settings.cluster_id
        self.clock: Clock = clock or SystemClock()
        self.responder = responder
        self.analyzer = SecurityAnalyzer(config=load_security_policy(settings.policies_dir))
        self.store = BufferedStore(inner=store or open_store(settings.store_url),
                                   max_queued=self.options.store_max_queued)
        self.bus = bus or MqttBus(config=settings.mqtt_config(), client_id=f"analyst-{self.cluster}",
                                  incoming_queue_size=self.options.incoming_queue_size)
        self.outlet = Outlet(cluster=self.cluster, store=self.store, bus=self.bus, supervisor=supervisor)
        self.counts = dict.fromkeys(("malformed", "service_events", "severity_capped", "alerts",
                                     "alerts_dropped", "activity_batches"), 0)
        self.malformed_by_topic: dict[str, int] = {}
        self._pending_alerts: list[SecurityAlert] = []
        self._other_alerts: list[dict[str, Any]] = []
        self._activity: dict[str, dict[str, int]] = {}
        self._activity_since = self.clock.now()
        self._loops: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Idempotent: open the store, load baselines, subscribe, start the loops."""
        await self.ensure_started()
        return await self.stats()

    async def _start(self) -> None:
        await self.store.open()
        await self.refresh_baselines()
        q = self.options.subscribe_qos
        await self.bus.subscribe(topics.AUTH_FILTER, self._on_auth, qos=q)
        await self.bus.subscribe(topics.AUTHZ_FILTER, self._on_authz, qos=q)
        await self.bus.subscribe(topics.SERVICE_SECURITY_FILTER, self._on_service_security, qos=q)
        await self.bus.subscribe(topics.DATA_ACCESS_FILTER, self._on_data_access, qos=q)
        await self.bus.subscribe(active_actions_topic(self.cluster), self._on_active_actions, qos=q)
        await self.bus.start()
        await self.bus.wait_connected(30)
        o = self.options
        self._loops = [
            asyncio.create_task(run_every(o.alert_flush_s, self._flush_alerts, name="alerts", logger=logger)),
            asyncio.create_task(run_every(o.pattern_interval_s, self._patterns, name="patterns", logger=logger)),
            asyncio.create_task(run_every(o.baseline_refresh_s, self.refresh_baselines, name="baselines",
                                          logger=logger)),
        ]

    async def stop(self) -> None:
        for t in self._loops:
            t.cancel()
        await self._flush_alerts()
        await self.outlet.flush(2.0)
        await self.bus.stop()
        await self.store.close()

    async def refresh_baselines(self) -> None:
        try:
            rec = await self.store.baseline_latest(BASELINE_KIND)
        except StoreError as exc:
            logger.warning("baselines not refreshed (store): %s", exc)
            return
        if rec is not None:
            self.analyzer.set_baselines(parse_user_baselines(rec.data))

    # -- event handlers (run inline in the bus dispatcher; O(1) each) ---------------------------

    def _malformed(self, kind: str) -> None:
        self.counts["malformed"] += 1
        self.malformed_by_topic[kind] = self.malformed_by_topic.get(kind, 0) + 1

    def _queue(self, alerts: list[SecurityAlert]) -> None:
        room = MAX_PENDING_ALERTS - len(self._pending_alerts)
        if len(alerts) > room:
            self.counts["alerts_dropped"] += len(alerts) - max(room, 0)
            alerts = alerts[:max(room, 0)]
        self._pending_alerts += alerts

    def _on_auth(self, msg: Message) -> None:
        ev = parse_auth(msg.payload)
        if ev is None:
            self._malformed("auth")
            return
        alerts = self.analyzer.on_auth(ev, self.clock.now())
        if alerts:
            self._queue(alerts)

    def _on_authz(self, msg: Message) -> None:
        try:
            m = parse_model(wire.AuthzEvent, msg.payload)
        except (ValidationError, ValueError):
            self._malformed("authz")
            return
        ev = AuthzEvent(user_id=m.user_id, service=m.service, method=m.method, allowed=m.allowed,
                        timestamp=m.timestamp.timestamp(), roles=frozenset(m.roles), ip_address=m.ip_address)
        self._queue(self.analyzer.on_authz(ev, self.clock.now()))

    def _on_data_access(self, msg: Message) -> None:
        parsed = topics.parse(msg.topic)
        try:
            m = parse_model(wire.DataAccessEvent, msg.payload)
        except (ValidationError, ValueError):
            self._malformed("data_access")
            return
        if parsed is None:
            self._malformed("data_access")
            return
        ev = DataAccessEvent(user_id=m.user_id, service=parsed["service"], collection=m.collection,
                             operation=m.operation, record_count=m.records, timestamp=m.timestamp.timestamp())
        self._queue(self.analyzer.on_data_access(ev, self.clock.now()))

    def _on_service_security(self, msg: Message) -> None:
        parsed = topics.parse(msg.topic)
        try:
            m = parse_model(wire.ServiceSecurityEvent, msg.payload)
        except (ValidationError, ValueError):
            self._malformed("service_security")
            return
        if parsed is None:
            self._malformed("service_security")
            return
        now = self.clock.now()
        service = parsed["service"]
        if m.event_type == "role_change" and m.user_id is not None:
            d = m.details
            old, new, by = parse_roles(d.get("oldRoles")), parse_roles(d.get("newRoles")), d.get("changedBy")
            if old is None or new is None or not (by is None or (type(by) is str and len(by) <= ID_MAX)):
                self._malformed("service_security")
                return
            self.counts["service_events"] += 1
            ev = RoleChangeEvent(user_id=m.user_id, old_roles=old, new_roles=new, timestamp=now,
                                 changed_by=by or None)
            self._queue(self.analyzer.on_role_change(ev, now))
            return
        self.counts["service_events"] += 1
        if len(self._other_alerts) >= MAX_PENDING_ALERTS:
            self.counts["alerts_dropped"] += 1
            return
        labels = {"service": service, "type": m.event_type[:64]}
        if m.user_id:
            labels["user"] = m.user_id
        if m.ip_address:
            labels["ip"] = m.ip_address
        config = self.analyzer.config
        severity = report_severity(config, service, m.severity)
        if severity != m.severity:
            self.counts["severity_capped"] += 1
            labels["reportedSeverity"] = m.severity
        self._other_alerts.append(plain_alert("ServiceSecurityEvent", severity, self.cluster, now,
                                              (m.description or m.event_type)[:500], labels,
                                              resolve_after=config.alert_resolve_after))

    def _on_active_actions(self, msg: Message) -> None:
        """The responder's active set: who is under heightened monitoring, and until when."""
        try:
            m = parse_model(wire.ActiveActions, msg.payload)
        except (ValidationError, ValueError):
            self._malformed("active_actions")
            return
        self.analyzer.set_watched(watches(m.actions, self.clock.now()))

    async def watching(self, entity: str) -> dict[str, Any] | None:
        """Whether ``entity`` (an IP or user id) is under heightened monitoring now (operators, tests)."""
        w = self.analyzer.watched(entity, self.clock.now())
        return None if w is None else {"factor": w.factor, "until": w.until}

    # -- per-tick activity and periodic patterns ---------------------------------------------------

    async def activity(self, batch: dict[str, dict[str, int]], now: float | None = None) -> None:
        """Per-user calls per service since the observer's last tick (deltas; summed until the
        next pattern run). Bounded: users beyond the cap in one interval are counted, not kept."""
        self.counts["activity_batches"] += 1
        acc = self._activity
        for user, calls in batch.items():
            if not isinstance(user, str) or not user or len(user) > ID_MAX or not isinstance(calls, Mapping):
                continue
            per = acc.get(user)
            if per is None:
                if len(acc) >= _MAX_ACTIVITY_USERS:
                    self._malformed("activity_overflow")
                    continue
                per = acc[user] = {}
            for service, n in calls.items():
                if type(n) is not int or n <= 0 or not isinstance(service, str):
                    continue
                if service not in per and len(per) >= MAX_ACTIVITY_SERVICES:
                    self._malformed("activity_overflow")
                    continue
                per[service] = per.get(service, 0) + n

    async def _patterns(self) -> None:
        now = self.clock.now()
        batch, self._activity = self._activity, {}
        window, self._activity_since = now - self._activity_since, now
        if batch:
            acts = [UserActivity(user_id=u, calls=c, window_s=window) for u, c in batch.items()]
            self._queue(self.analyzer.on_activity(acts, None, now))

    async def run_patterns(self) -> None:
        """Run the pattern rules now (operators, tests) instead of waiting for the interval."""
        await self._patterns()
        await self._flush_alerts()

    # -- output ------------------------------------------------------------------------------------

    async def _flush_alerts(self) -> None:
        alerts, self._pending_alerts = self._pending_alerts, []
        other, self._other_alerts = self._other_alerts, []
        if not alerts and not other:
            return
        now = self.clock.now()
        wires = [a.to_wire() for a in alerts]
        self.counts["alerts"] += len(wires)
        after = self.analyzer.config.alert_resolve_after
        await self.outlet.alert([security_alert_dict(w, self.cluster, now, resolve_after=after) for w in wires]
                                + other)
        if self.responder is not None:
            for w in wires:
                self.responder.handle.remote(w)

    async def stats(self) -> dict[str, Any]:
        """Analyzer counters (events, alerts, suppressed, allowlisted, evictions) and ours."""
        return {"analyzer": self.analyzer.stats().as_dict(), "counts": dict(self.counts),
                "malformed": dict(self.malformed_by_topic), "bus": self.bus.stats()}


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class SecurityAnalyst:
    """The Ray actor: an :class:`AnalystBody`, whole again after Ray restarted it."""

    def __init__(self, settings: OperateSettings, options: SecurityOptions | None = None, *,
                 responder: Any = None, supervisor: Any = None) -> None:
        self.body = AnalystBody(settings, options, responder=responder, supervisor=supervisor)
        self.body.start_when_restarted()

    async def ensure_started(self) -> None:
        await self.body.ensure_started()

    async def start(self) -> dict[str, Any]:
        return await self.body.start()

    async def stop(self) -> None:
        await self.body.stop()

    async def refresh_baselines(self) -> None:
        await self.body.refresh_baselines()

    async def watching(self, entity: str) -> dict[str, Any] | None:
        return await self.body.watching(entity)

    async def activity(self, batch: dict[str, dict[str, int]], now: float | None = None) -> None:
        await self.body.activity(batch, now)

    async def run_patterns(self) -> None:
        await self.body.run_patterns()

    async def stats(self) -> dict[str, Any]:
        return await self.body.stats()
