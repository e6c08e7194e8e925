"""Supervisor actor: owns the other actors, persists every decision before publishing it, runs
cascades, and keeps the retained health summary.

Flow per observer tick: ``report(index, results, counters, edges)`` — breaker events go to
``system/{cluster}/circuit-breaker`` and the retained ``…/circuit-breaker/{Service}``; health
changes to ``system/{cluster}/errors``; a service going down triggers ``policies.cascade`` and the
preemptive opens it plans; alerts go to the AlertManager actor. Every message is written to the
store's outbox first and marked published once the broker acknowledged it.

The monitors' cumulative call counts and the observers' in-flight counts ride along with the
reports into :meth:`status` (operate's ``/metrics``); once a second the same metric families go to
Ray's metrics export (``adapters.ray_metrics``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from actors.clock import Clock, SystemClock
from actors.loops import run_every
from actors.monitor import STATE_NAMESPACE as MONITOR_STATE
from actors.monitor import ServiceMonitor
from actors.observer import Observer
from actors.restart import start_if_restarted
from actors.settings import OperateSettings
from adapters.mqtt import MqttBus
from adapters.outbox import UnackedOutbox
from adapters.ray_metrics import RayFamilyExporter
from adapters.store import Dependency, StoreError, open_store
from adapters.store.buffer import BufferedStore
from policies.alert_rules import FiringSet, alerts_for_breaker, alerts_for_health
from policies.cascade import DependencyGraph, load_dependency_policy, plan_cascade
from policies.metric_rules import load_metric_rules
from policies.metric_rules_eval import RulesState, evaluate_rules, restore_state
from policies.metric_series import inflight_by_service
from policies.monitoring import MonitorResult
from policies.ops_board import OpsBoard
from policies.status_view import metric_families
from protocol import topics
from protocol.security import AlertMessage
from protocol.system import BreakerState, BreakerStateChange, CascadingFailurePrevented, SystemHealth

logger = logging.getLogger("sfa_ops.supervisor")

HEALTH_MAX_SILENCE_S = 10.0
BOARD_SYNC_S = 30.0
"""How often the open incidents the status page shows are read again from the store."""
_SEVERITY_ORDER = {"healthy": 0, "unknown": 0, "degraded": 1, "down": 2}


def named(actor_class: Any, name: str, namespace: str, *, detached: bool = False) -> Any:
    """A named actor's options: the existing one if it is alive (a restarted supervisor finds its
    observers and monitors again), else a new one. ``detached``: it does not die with its creator
    (the supervisor's actors outlive a crash of the supervisor's process; its ``stop`` kills them)."""
    # SPREAD: on a multi-node cluster losing one node loses a share of the actors, not all of them.
    opts: dict[str, Any] = {"lifetime": "detached"} if detached else {}
    return actor_class.options(name=name, namespace=namespace, get_if_exists=True, scheduling_strategy="SPREAD",
                               **opts)


def child(actor_class: Any, name: str, namespace: str) -> Any:
    """An actor the supervisor owns: detached, so a kill -9 of the supervisor's process loses none
    of them (the restarted supervisor finds them by name)."""
    return named(actor_class, name, namespace, detached=True)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Supervisor:
    def __init__(self, settings: OperateSettings) -> None:
        logging.basicConfig(level=logging.INFO)
        self.settings = settings
        self.cluster = settings.cluster_id
        self.clock: Clock = SystemClock()
        self.bus = MqttBus(config=settings.mqtt_config(), client_id=f"supervisor-{self.cluster}")
        self.store = BufferedStore(inner=open_store(settings.store_url),
                                   on_unavailable=self._store_down, on_recovered=self._store_up,
                                   on_drop=self._store_drop)
        self.dependency_policy = load_dependency_policy(settings.policies_dir)
        self.graph = DependencyGraph(config=self.dependency_policy)
        self.monitors: dict[str, Any] = {}
        self.observers: list[Any] = []
        self.checkers: dict[str, Any] = {}
        self.security_actors: dict[str, Any] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.alertmanager: Any = None
        self.summaries: dict[str, dict[str, Any]] = {}
        self.infrastructure: dict[str, Any] = {}
        self.counters: dict[int, dict[str, int]] = {}
        self.breakers: dict[str, str] = {}
        self.calls: dict[str, dict[str, Any]] = {}
        self.inflight: dict[int, dict[str, int]] = {}
        self.ray_metrics = RayFamilyExporter()
        self.unpublished = UnackedOutbox(store=self.store, logger=logger)
        self.published: dict[str, int] = {}
        self._last_health: dict[str, Any] | None = None
        self._last_health_at = 0.0
        self._lock = asyncio.Lock()
        self._started = False
        self._loops: list[asyncio.Task[None]] = []
        self._pending_alerts: list[dict[str, Any]] = []
        self._firing = FiringSet()
        self.board = OpsBoard()
        self._board_synced = 0.0
        """Open incidents, active actions, recent alerts: what ``status()`` shows under ``ops``."""
        self.metric_rules = load_metric_rules(settings.policies_dir) if settings.metric_rules else None
        self._rules_state = RulesState()
        self.known_services: list[str] = []
        self.real_services: set[str] = set(settings.services)
        """Configured or announced by an instance: only these count towards the cascade guard."""
        self._trackers: dict[str, set[int]] = {}
        """Observers tracking each service (a retired service's monitor stops when none is left)."""
        self._edges: dict[tuple[str, str], int] = {}
        start_if_restarted("supervisor")

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Idempotent: open store and bus, republish what a crash left unpublished, start actors.
        The driver calls it again every few seconds, so a supervisor Ray restarted (its node was
        lost, or it crashed) starts its work again; ``started`` says whether this call did."""
        if self._started:
            return {"observers": len(self.observers), "started": False}
        self._started = True
        await self.store.open()
        await self.bus.start()
        await self.bus.wait_connected(30)
        await self._restore()
        s = self.settings
        ns = s.namespace
        try:
            from actors.alertmanager import AlertManager

            self.alertmanager = child(AlertManager, s.actor_name("alertmanager"), ns).remote(s)
            await self.alertmanager.start.remote()
        except ImportError:
            logger.warning("alert manager actor not available; alerts are published by the supervisor")
            self.alertmanager = None
        known = sorted({*s.services, *self.known_services})
        await self.monitors_for(known)
        if s.security:
            await self._start_security()
        self.observers = [
            child(Observer, s.actor_name("observer", str(i)), ns).remote(s, i)
            for i in range(max(1, s.observers))
        ]
        await asyncio.gather(*(o.start.remote(known) for o in self.observers))
        await self._start_checkers()
        self._loops.append(asyncio.create_task(
            run_every(0.25, self._health_step, name="health-summary", logger=logger), name="health-summary"))
        self._loops.append(asyncio.create_task(
            run_every(5.0, self._housekeeping, name="housekeeping", logger=logger), name="housekeeping"))
        if self.metric_rules is not None and self.metric_rules.rules:
            self._loops.append(asyncio.create_task(run_every(
                self.metric_rules.interval, self._rules_step, name="metric-rules", logger=logger), name="metric-rules"))
        self._loops.append(asyncio.create_task(
            run_every(1.0, self._export_metrics, name="ray-metrics", logger=logger), name="ray-metrics"))
        return {"observers": len(self.observers), "started": True}

    async def _restore(self) -> None:
        """After a crash: learned dependencies, services monitored before (so their breakers
        guard calls from the first tick), firing alerts (so a recovery resolves them), and
        messages decided but never published."""
        try:
            for dep in await self.store.inner.dependencies_list():
                self.graph.observe_edge(dep.caller, dep.callee, dep.last_seen, dep.count)
            self.known_services = sorted(await self.store.inner.state_list(MONITOR_STATE))
            for name in self.known_services:  # the breakers' last states, for the cascade and status
                saved = await self.store.inner.state_get(MONITOR_STATE, name)
                breaker = (saved or {}).get("breaker")
                if isinstance(breaker, dict) and isinstance(breaker.get("state"), str):
                    self.breakers[name] = breaker["state"]
            for alert in await self.store.inner.alerts_list("firing"):
                # Sent long ago as far as we know: the first housekeeping re-sends what is held.
                self._firing.hold({"labels": dict(alert.labels), "annotations": dict(alert.annotations),
                                   "startsAt": alert.starts_at, "endsAt": None}, sent_at=float("-inf"))
            if self.metric_rules is not None:  # so a breach that ends meanwhile resolves them
                self._rules_state = restore_state(self.metric_rules, [a for a, _ in self._firing.firing.values()])
            pending = await self.store.inner.outbox_pending(10_000)
            self.board.restore_incidents(await self.store.inner.incidents_open())
        except StoreError:
            logger.exception("could not restore from the store; continuing without")
            return
        for rec in pending:
            self.unpublished.add(rec.id, self.bus.publish_nowait(rec.topic, rec.payload, qos=rec.qos, retain=rec.retain))
        if pending:
            logger.info("republished %d messages a previous run had not published", len(pending))

    async def _start_security(self) -> None:
        """Incident responder first (the analyst hands it alerts), then analyst and audit writer;
        observers find the analyst and the writer by name."""
        from actors.audit_writer import AuditWriter
        from actors.incident_responder import IncidentResponder
        from actors.security_analyst import SecurityAnalyst
        from actors.security_common import SecurityOptions
        from adapters.enforcement import EnforcementConfig

        s = self.settings
        opts = SecurityOptions(enforcement=EnforcementConfig(
            redis_url=s.enforcement_redis, emqx_url=s.emqx_api, emqx_api_key=s.emqx_api_key,
            emqx_api_secret=s.emqx_api_secret))
        me = ray.get_runtime_context().current_actor
        responder = child(IncidentResponder, s.actor_name("responder"), s.namespace).remote(s, opts, supervisor=me)
        analyst = child(SecurityAnalyst, s.actor_name("analyst"), s.namespace).remote(
            s, opts, responder=responder, supervisor=me)
        audit = child(AuditWriter, s.actor_name("audit"), s.namespace).remote(s, opts, supervisor=me)
        self.security_actors = {"responder": responder, "analyst": analyst, "audit": audit}
        results = await asyncio.gather(*(a.start.remote() for a in self.security_actors.values()),
                                       return_exceptions=True)
        for name, res in zip(self.security_actors, results, strict=True):
            if isinstance(res, BaseException):
                logger.error("security actor %s did not start: %s", name, res)

    async def _start_checkers(self) -> None:
        """One InfraChecker per configured component (the broker's always runs)."""
        from actors.infra_checker import InfraChecker, components_for

        s = self.settings
        for component in components_for(s):
            self.checkers[component] = child(InfraChecker, s.actor_name("infra", component), s.namespace).remote(
                s, component)
        results = await asyncio.gather(*(c.start.remote() for c in self.checkers.values()), return_exceptions=True)
        for component, res in zip(self.checkers, results, strict=True):
            if isinstance(res, BaseException):
                logger.error("infra checker %s did not start: %s", component, res)

    async def pod_status(self, pods: dict[str, dict[str, Any]]) -> list[str]:
        """Pod status per service from the Kubernetes checker, forwarded to the services' monitors;
        returns the monitored services (whose pods the checker should look at next)."""
        self.pods.update(pods)
        for service, status in pods.items():
            handle = self.monitors.get(service)
            if handle is not None:
                handle.set_pods.remote(status)
        return sorted(self.monitors)

    async def stop(self) -> None:
        for c in self.checkers.values():
            try:
                await c.stop.remote()
            except Exception:
                logger.exception("infra checker stop failed")
        for o in self.observers:
            try:
                await o.stop.remote()
            except Exception:
                logger.exception("observer stop failed")
        for name, actor in self.security_actors.items():
            try:
                await actor.stop.remote()
            except Exception:
                logger.exception("security actor %s stop failed", name)
        for t in self._loops:
            t.cancel()
        results = await asyncio.gather(*(m.flush.remote() for m in self.monitors.values()), return_exceptions=True)
        for name, res in zip(self.monitors, results, strict=True):
            if isinstance(res, BaseException):
                logger.error("monitor %s did not save its state on stop: %s", name, res)
        await self._flush_and_mark(5.0)
        if self.alertmanager is not None:
            try:
                await self.alertmanager.stop.remote()
            except Exception:
                logger.exception("alert manager stop failed")
        await self.bus.stop()
        await self.store.close()
        self._kill_children()

    def _kill_children(self) -> None:
        """Detached actors outlive their creator: the supervisor ends them when it stops."""
        handles = [*self.checkers.values(), *self.observers, *self.security_actors.values(),
                   *self.monitors.values(), *([self.alertmanager] if self.alertmanager is not None else [])]
        for h in handles:
            try:
                ray.kill(h, no_restart=True)
            except Exception:
                logger.exception("could not end an actor at stop")

    # -- actors ---------------------------------------------------------------------------------

    async def monitors_for(self, services: list[str], index: int | None = None) -> dict[str, Any]:
        """Monitors for ``services``, started when missing; ``index``: the observer asking (None: all)."""
        s = self.settings
        for name in services:
            self._trackers.setdefault(name, set()).update(range(max(1, s.observers)) if index is None else (index,))
            if name not in self.monitors:
                self.monitors[name] = child(ServiceMonitor, s.actor_name("monitor", name), s.namespace).remote(s, name)
        return {n: self.monitors[n] for n in services}

    async def mark_real(self, services: list[str]) -> None:
        """Services an instance announced (observers tell once per service)."""
        self.real_services.update(services)

    async def retire(self, index: int, services: list[str]) -> None:
        """Observer ``index`` stopped tracking these idle traffic-only services; once every observer
        has, the monitor is stopped and its saved state deleted (nothing respawns it on restart)."""
        for name in services:
            trackers = self._trackers.get(name, set())
            trackers.discard(index)
            if trackers or name in self.real_services or name in self.settings.services:
                continue
            self._trackers.pop(name, None)
            handle = self.monitors.pop(name, None)
            self.summaries.pop(name, None)
            self.calls.pop(name, None)
            if self.breakers.pop(name, None) is not None:  # its retained state would outlive it
                self.bus.publish_nowait(topics.circuit_breaker_state(self.cluster, name), b"", qos=1, retain=True)
            if handle is not None:
                ray.kill(handle, no_restart=True)
            try:
                await self.store.state_delete(MONITOR_STATE, name)
            except StoreError:
                logger.exception("could not delete the saved state of retired service %s", name)
            logger.info("service %s retired (traffic-only, idle)", name)

    # -- reports ---------------------------------------------------------------------------------

    async def report(self, index: int, results: list[MonitorResult], counters: dict[str, int],
                     edges: dict[tuple[str, str], int], inflight: dict[str, int] | None = None) -> None:
        async with self._lock:
            now = self.clock.now()
            self.counters[index] = counters
            if inflight is not None:
                self.inflight[index] = inflight
            if edges:
                self.graph.observe_edges(edges, now)
                for e, n in edges.items():
                    self._edges[e] = self._edges.get(e, 0) + n
            for r in results:
                self.summaries[r.service] = r.summary
                if r.calls is not None:
                    self.calls[r.service] = r.calls
                for ev in r.breaker_events:
                    await self._breaker_event(ev, now)
                if r.health_message is not None:
                    if r.health_published:  # published by the observer as an event (policies.outage)
                        # kept in the outbox all the same (as published): the store holds every finding
                        await self._record_published(topics.system_errors(self.cluster), r.health_message,
                                                     kind="tier2")
                    else:
                        await self._publish(topics.system_errors(self.cluster), r.health_message, kind="tier2")
                    self._pending_alerts += alerts_for_health(r.health_message, self.cluster, now)
                    if r.health_message["type"] == "service_unavailable":
                        await self._cascade(r.service, now)
            await self._send_alerts()
            await self._flush_and_mark(1.0)

    async def _breaker_event(self, ev: dict[str, Any], now: float) -> None:
        change = BreakerStateChange.model_validate({**ev, "clusterId": self.cluster})
        service = change.service
        self.breakers[service] = change.to_state
        wire = change.to_wire()
        await self._publish(topics.circuit_breaker_events(self.cluster), wire, kind="breaker")
        state = BreakerState(cluster_id=self.cluster, service=service, state=change.to_state,
                             since=change.timestamp, reason=change.reason, retry_after=change.retry_after,
                             retry_after_seconds=change.retry_after_seconds, open_until=change.retry_after,
                             timestamp=change.timestamp)
        await self._publish(topics.circuit_breaker_state(self.cluster, service), state.to_wire(), retain=True,
                            kind="breaker")
        self._pending_alerts += alerts_for_breaker(wire, self.cluster, now)

    async def _cascade(self, service: str, now: float) -> None:
        open_now = [n for n, st in self.breakers.items() if st in ("open", "forced_open")]
        plan = plan_cascade(self.graph, service, list(self.monitors), open_now, now, self.dependency_policy,
                            cluster_id=self.cluster, real_services=self.real_services)
        for p in plan.preemptive_opens:
            handle = self.monitors.get(p.service)
            if handle is None:
                continue
            for ev in await handle.preemptive_open.remote(p.reason, now):
                await self._breaker_event(ev, now)
        if plan.message is not None:
            msg = CascadingFailurePrevented.model_validate(
                {**plan.message, "correlationId": f"cascade-{service}-{int(now * 1000)}"})
            await self._publish(topics.system_errors(self.cluster), msg.to_wire(), kind="cascade")

    async def _publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False, kind: str) -> None:
        """Outbox first, then the bus (QoS 1); marked published once the broker acknowledged it."""
        msg_id = await self.store.outbox_add(topic, payload, qos=1, retain=retain, kind=kind)
        self.unpublished.add(msg_id, self.bus.publish_nowait(topic, payload, qos=1, retain=retain))
        self.published[kind] = self.published.get(kind, 0) + 1

    async def _record_published(self, topic: str, payload: dict[str, Any], *, kind: str) -> None:
        """A finding another actor already published: into the outbox, marked published."""
        msg_id = await self.store.outbox_add(topic, payload, qos=1, kind=kind)
        await self.store.outbox_mark_published([msg_id])
        self.published[kind] = self.published.get(kind, 0) + 1

    async def _flush_and_mark(self, timeout: float) -> None:
        await self.unpublished.mark(self.bus, timeout)  # what is still in flight: at a later call

    async def _send_alerts(self) -> None:
        if not self._pending_alerts:
            return
        now = self.clock.now()
        alerts, self._pending_alerts = self._firing.filter(self._pending_alerts, now), []
        if not alerts:
            return
        self.board.alerts_sent(alerts, now)
        if self.alertmanager is not None:
            self.alertmanager.ingest.remote(alerts)
        else:
            for a in alerts:
                ends = a["endsAt"]
                msg = AlertMessage(cluster_id=self.cluster,
                                   status="resolved" if ends is not None and ends <= now else "firing",
                                   labels=a["labels"], annotations=a["annotations"], starts_at=a["startsAt"],
                                   ends_at=ends, timestamp=now)
                self.bus.publish_nowait(topics.system_alerts(self.cluster), msg.to_wire(), qos=1)

    async def _rules_step(self) -> None:
        """The metric rules on this supervisor's own series; their alerts go the usual way."""
        assert self.metric_rules is not None
        async with self._lock:
            now = self.clock.now()
            ev = evaluate_rules(self.metric_rules, metric_families(await self.status(), age_s=0.0),
                                self._rules_state, now)
            self._rules_state = ev.state
            self._pending_alerts += ev.alerts
            await self._send_alerts()

    # -- health summary ----------------------------------------------------------------------------

    def health_summary(self, now: float) -> dict[str, Any]:
        observed = {"calls": 0, "responses": 0, "timeouts": 0, "malformed": 0, "dropped": 0, "rejected": 0,
                    "unknownServices": 0, "answerFailed": 0, "capped": 0}
        for c in self.counters.values():
            for k in observed:
                observed[k] += int(c.get(k, 0))
        worst = max((_SEVERITY_ORDER.get(s.get("status", "healthy"), 0) for s in self.summaries.values()), default=0)
        status = {0: "healthy", 1: "degraded", 2: "degraded"}[worst]
        if self.summaries and all(s.get("status") == "down" for s in self.summaries.values()):
            status = "down"
        return SystemHealth.model_validate(
            {"clusterId": self.cluster, "status": status, "timestamp": now,
             "services": dict(sorted(self.summaries.items())), "infrastructure": dict(self.infrastructure),
             "observed": observed}).to_wire()

    async def _health_step(self) -> None:
        now = self.clock.now()
        summary = self.health_summary(now)
        comparable = {k: v for k, v in summary.items() if k != "timestamp"}
        if comparable != self._last_health or now - self._last_health_at >= HEALTH_MAX_SILENCE_S:
            self._last_health = comparable
            self._last_health_at = now
            # Retained state, republished often: not kept in the outbox (it is recomputed anyway).
            self.bus.publish_nowait(topics.system_health(self.cluster), summary, qos=1, retain=True)

    async def _housekeeping(self) -> None:
        # A restarted observer starts itself; should that call be lost, this one (idempotent, one
        # per observer every 5 s) starts it. Not awaited: a restarting observer must not hold this up.
        for o in self.observers:
            o.start.remote(None)
        if self.security_actors and self.clock.now() >= self._board_synced + BOARD_SYNC_S:
            self._board_synced, changes = self.clock.now(), self.board.incident_changes
            try:  # incidents resolved outside operate (drivers.incidents resolve) leave the board
                self.board.restore_incidents(await self.store.inner.incidents_open(), changes=changes)
            except StoreError:
                logger.warning("could not read the open incidents; the status page keeps the last ones")
        if self.alertmanager is not None:
            # A restarted alert manager idles until called: this call resumes its delivery loop.
            try:
                await self.alertmanager.ensure_started.remote()
                # Conditions still held are re-sent, or the alert manager's resolve timeout ends them.
                held = self._firing.due(self.clock.now())
                if held:
                    await self.alertmanager.ingest.remote(held)
            except Exception:
                logger.exception("alert manager unavailable")
        if self._edges:
            edges, self._edges = self._edges, {}
            now = time.time()
            await self.store.dependencies_upsert(
                [Dependency(caller=a, callee=b, count=n, last_seen=now) for (a, b), n in edges.items()])
        async with self._lock:
            await self._flush_and_mark(1.0)

    async def infrastructure_report(self, component: str, health: dict[str, Any],
                                    message: dict[str, Any] | None = None,
                                    alert: dict[str, Any] | None = None) -> None:
        """From an infrastructure checker: ``health`` for the summary's ``infrastructure`` section;
        ``message`` (infrastructure_error / infrastructure_recovered) to publish on the errors topic
        (a critical error also on the emergency topic); ``alert`` for the alert manager."""
        async with self._lock:
            self.infrastructure[component] = health
            if message is not None:
                await self._publish(topics.system_errors(self.cluster), message, kind="tier3")
                if message.get("type") == "infrastructure_error" and message.get("severity") in (
                        "critical", "emergency"):
                    await self._publish(topics.system_emergency(self.cluster), message, kind="tier3")
            if alert is not None:
                self._pending_alerts.append(alert)
                await self._send_alerts()
            await self._flush_and_mark(1.0)

    async def alert(self, alerts: list[dict[str, Any]]) -> None:
        """Alerts from other actors (security analyst, checkers) routed through the alert manager."""
        async with self._lock:
            self._pending_alerts += alerts
            await self._send_alerts()

    async def publish(self, topic: str, payload: dict[str, Any], retain: bool = False, kind: str = "finding") -> None:
        """Persist-then-publish for other actors (incidents, enforcement actions)."""
        async with self._lock:
            await self._publish(topic, payload, retain=retain, kind=kind)
            self.board.published(kind, payload)
            await self._flush_and_mark(1.0)

    async def status(self) -> dict[str, Any]:
        now = self.clock.now()
        return {"health": self.health_summary(now), "breakers": dict(self.breakers), "published": dict(self.published),
                "store": self.store.stats().__dict__ if hasattr(self.store.stats(), "__dict__") else {},
                "monitors": sorted(self.monitors), "bus": self.bus.stats(), "ops": self.board.summary(now),
                "metricRules": self._rules_state.summary() if self.metric_rules is not None else None,
                "calls": dict(self.calls), "inflight": inflight_by_service(self.inflight.values(), self.monitors)}

    async def _export_metrics(self) -> None:
        """The families of ``/metrics`` onto Ray's metrics export (gauges set, counters increased)."""
        self.ray_metrics.export(metric_families(await self.status(), age_s=0.0))

    # -- store hooks --------------------------------------------------------------------------------

    def _store_down(self, exc: Exception) -> None:
        logger.error("store unavailable: %s; buffering writes", exc)
        self._pending_alerts.append({"labels": {"alertname": "StoreUnavailable", "severity": "critical",
                                                "component": "store", "cluster": self.cluster},
                                     "annotations": {"summary": f"sfa-ops store unavailable: {exc}"},
                                     "startsAt": time.time(), "endsAt": None})

    def _store_up(self, outage_s: float, flushed: int) -> None:
        logger.info("store back after %.1fs; %d buffered writes flushed", outage_s, flushed)
        self._pending_alerts.append({"labels": {"alertname": "StoreUnavailable", "severity": "critical",
                                                "component": "store", "cluster": self.cluster},
                                     "annotations": {"summary": "store recovered"},
                                     "startsAt": time.time(), "endsAt": time.time()})

    def _store_drop(self, kind: str, n: int) -> None:
        logger.error("store buffer full: dropped %d %s writes", n, kind)
