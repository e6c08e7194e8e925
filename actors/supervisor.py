"""Supervisor actor: owns the other actors, persists every decision before publishing it, runs
cascades, and keeps the retained health summary.

The decisions are ``policies.supervision.core``'s (see there what each observer tick leads to): this
module gathers their inputs (observer ticks, infrastructure reports, the store's state after a
restart, the injected clock) and carries out the effects that come back. Every message is written
to the store's outbox first and marked published once the broker acknowledged it (``adapters.mqtt.outbox``).

The monitors' cumulative call counts and the observers' in-flight counts ride along with the
reports into :meth:`SupervisorBody.status` (operate's ``/metrics``); once a second the same metric
families go to Ray's metrics export (``adapters.runtime.ray_metrics``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any

import ray

from actors.chassis import Chassis
from actors.clock import Clock, SystemClock
from actors.loops import run_every
from actors.monitor import STATE_NAMESPACE as MONITOR_STATE
from actors.settings import OperateSettings
from actors.supervisor_children import Children, RayChildren
from adapters.mqtt.bus import MqttBus
from adapters.mqtt.outbox import Outbox
from adapters.store import Dependency, Store, StoreError, open_store
from adapters.store.buffer import BufferedStore
from policies.breaker.cascade import load_dependency_policy
from policies.health.monitor import MonitorResult
from policies.metrics.rules import load_metric_rules
from policies.supervision.core import Supervision
from policies.supervision.effects import (
    Alert,
    ClearRetained,
    Effect,
    OpenBreaker,
    Persist,
    Publish,
    ReloadIncidents,
    RetireMonitor,
    SaveDependencies,
)
from policies.supervision.status_view import Family, metric_families

__all__ = ["Supervisor", "SupervisorBody"]

logger = logging.getLogger("sfa_ops.supervisor")


class SupervisorBody(Chassis):
    """The supervisor without Ray: ``clock``, ``store`` (the backing store; the body buffers writes
    through a ``BufferedStore`` while it is down), ``bus``, ``children`` (the actors it owns) and
    ``export`` (the metric families, once a second) are injected; the defaults are the real ones."""

    what = "supervisor"

    def __init__(self, settings: OperateSettings, *, clock: Clock | None = None, store: Store | None = None,
                 bus: MqttBus | None = None, children: Children | None = None,
                 export: Callable[[list[Family]], Any] | None = None) -> None:
        self.settings = settings
        self.cluster = settings.cluster_id
        self.clock = clock or SystemClock()
        self.bus = bus or MqttBus(config=settings.mqtt_config(), client_id=f"supervisor-{self.cluster}")
        self.store = BufferedStore(inner=store or open_store(settings.store_url),
                                   on_unavailable=self._store_down, on_recovered=self._store_up,
                                   on_drop=self._store_drop)
        self.reader = self.store.inner  # reads bypass the buffer (it holds writes only)
        self.children = children or RayChildren(settings)
        if export is None:
            from adapters.runtime.ray_metrics import RayFamilyExporter

            export = RayFamilyExporter().export
        self.export = export
        self.policy = Supervision(
            cluster=self.cluster, configured=settings.services,
            dependency_policy=load_dependency_policy(settings.policies_dir),
            metric_rules=load_metric_rules(settings.policies_dir) if settings.metric_rules else None)
        self.outbox = Outbox(store=self.store, bus=self.bus, logger=logger)
        self.monitors: dict[str, Any] = {}
        self.observers: list[Any] = []
        self.checkers: dict[str, Any] = {}
        self.security_actors: dict[str, Any] = {}
        self.alertmanager: Any = None
        self._lock = asyncio.Lock()
        self._loops: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------------

    async def _start(self) -> None:
        """Open store and bus, restore and republish what a crash left unpublished, start (or find
        again) the actors. Every step may run again: a start that failed partway is retried whole."""
        s = self.settings
        await self.store.open()
        await self.bus.start()
        await self.bus.wait_connected(30)
        await self._restore()
        if self.alertmanager is None:
            self.alertmanager = self.children.alertmanager()
        if self.alertmanager is not None:
            await self.alertmanager.start.remote()
        known = sorted({*s.services, *self.policy.known_services})
        await self.monitors_for(known)
        if s.security:
            await self._start_all("security actor", self.security_actors, self.children.security)
        if not self.observers:
            self.observers = [self.children.observer(i) for i in range(max(1, s.observers))]
        await asyncio.gather(*(o.start.remote(known) for o in self.observers))
        await self._start_all("infra checker", self.checkers, self.children.checkers)
        if not self._loops:
            self._loop(0.25, self.health_step, "health-summary")
            self._loop(5.0, self.housekeeping, "housekeeping")
            rules = self.policy.metric_rules
            if rules is not None and rules.rules:
                self._loop(rules.interval, self.rules_step, "metric-rules")
            self._loop(1.0, self.export_metrics, "ray-metrics")

    def _loop(self, every: float, step: Callable[[], Any], name: str) -> None:
        self._loops.append(asyncio.create_task(run_every(every, step, name=name, logger=logger), name=name))

    async def _start_all(self, what: str, handles: dict[str, Any], create: Callable[[], dict[str, Any]]) -> None:
        if not handles:
            handles.update(create())
        results = await asyncio.gather(*(a.start.remote() for a in handles.values()), return_exceptions=True)
        for name, res in zip(handles, results, strict=True):
            if isinstance(res, BaseException):
                logger.error("%s %s did not start: %s", what, name, res)

    async def _restore(self) -> None:
        """After a crash, from the store: what the policy restores, and the messages decided but
        never published (republished now)."""
        r = self.reader
        try:
            deps = [(d.caller, d.callee, d.last_seen, d.count) for d in await r.dependencies_list()]
            states = {name: await r.state_get(MONITOR_STATE, name) for name in await r.state_list(MONITOR_STATE)}
            firing = [{"labels": dict(a.labels), "annotations": dict(a.annotations), "startsAt": a.starts_at,
                       "endsAt": None} for a in await r.alerts_list("firing")]
            pending = await r.outbox_pending(10_000)
            incidents = await r.incidents_open()
        except StoreError:
            logger.exception("could not restore from the store; continuing without")
            return
        self.policy.restore(dependencies=deps, monitor_states=states, firing=firing, incidents=incidents)
        self.outbox.republish(pending)

    async def stop(self) -> None:
        for what, handles in (("infra checker", list(self.checkers.values())), ("observer", self.observers),
                              ("security actor", list(self.security_actors.values()))):
            for h in handles:
                try:
                    await h.stop.remote()
                except Exception:
                    logger.exception("%s stop failed", what)
        for t in self._loops:
            t.cancel()
        results = await asyncio.gather(*(m.flush.remote() for m in self.monitors.values()), return_exceptions=True)
        for name, res in zip(self.monitors, results, strict=True):
            if isinstance(res, BaseException):
                logger.error("monitor %s did not save its state on stop: %s", name, res)
        await self.outbox.flush(5.0)
        if self.alertmanager is not None:
            try:
                await self.alertmanager.stop.remote()
            except Exception:
                logger.exception("alert manager stop failed")
        await self.bus.stop()
        await self.store.close()
        # Detached actors outlive their creator: the supervisor ends them when it stops.
        for h in [*self.checkers.values(), *self.observers, *self.security_actors.values(), *self.monitors.values(),
                  *([self.alertmanager] if self.alertmanager is not None else [])]:
            try:
                self.children.kill(h)
            except Exception:
                logger.exception("could not end an actor at stop")

    # -- effects --------------------------------------------------------------------------------

    async def _carry_out(self, effects: Iterable[Effect], now: float) -> None:
        for e in effects:
            match e:
                case Publish(kind=None):
                    self.bus.publish_nowait(e.topic, e.payload(), qos=1, retain=e.retain)
                case Publish(kind=str(kind)):
                    await self.outbox.publish(e.topic, e.payload(), retain=e.retain, kind=kind)
                case Persist():
                    await self.outbox.record(e.topic, e.payload(), kind=e.kind)
                case ClearRetained():
                    self.bus.publish_nowait(e.topic, b"", qos=1, retain=True)
                case Alert():
                    if self.alertmanager is not None:
                        self.alertmanager.ingest.remote(list(e.alerts))
                case OpenBreaker():
                    handle = self.monitors.get(e.service)
                    if handle is not None:
                        events = await handle.preemptive_open.remote(e.reason, now)
                        await self._carry_out(self.policy.on_breaker_events(events, now), now)
                case RetireMonitor():
                    await self._retire_monitor(e.service)
                case SaveDependencies():
                    await self.store.dependencies_upsert(
                        [Dependency(caller=a, callee=b, count=n, last_seen=e.at) for a, b, n in e.edges])
                case ReloadIncidents():
                    try:  # incidents resolved outside operate (drivers.incidents resolve) leave the board
                        self.policy.board.restore_incidents(await self.reader.incidents_open(), changes=e.changes)
                    except StoreError:
                        logger.warning("could not read the open incidents; the status page keeps the last ones")

    async def _retire_monitor(self, service: str) -> None:
        handle = self.monitors.pop(service, None)
        if handle is not None:
            self.children.kill(handle)
        try:
            await self.store.state_delete(MONITOR_STATE, service)
        except StoreError:
            logger.exception("could not delete the saved state of retired service %s", service)
        logger.info("service %s retired (traffic-only, idle)", service)

    async def _send_alerts(self, now: float) -> None:  # the pending alerts that are news
        await self._carry_out(self.policy.alerts_due(now, alert_manager=self.alertmanager is not None), now)

    # -- actors ---------------------------------------------------------------------------------

    async def monitors_for(self, services: list[str], index: int | None = None) -> dict[str, Any]:
        """Monitors for ``services``, started when missing; ``index``: the observer asking (None: all)."""
        self.policy.track(services, index, self.settings.observers)
        for name in services:
            if name not in self.monitors:
                self.monitors[name] = self.children.monitor(name)
        return {n: self.monitors[n] for n in services}

    async def mark_real(self, services: list[str]) -> None:
        """Services an instance announced (observers tell once per service)."""
        self.policy.real_services.update(services)

    async def retire(self, index: int, services: list[str]) -> None:
        """Observer ``index`` stopped tracking these idle traffic-only services; once every observer
        has, the monitor is stopped and its saved state deleted (nothing respawns it on restart)."""
        await self._carry_out(self.policy.retire(index, services), self.clock.now())

    async def pod_status(self, pods: dict[str, dict[str, Any]]) -> list[str]:
        """Pod status per service from the Kubernetes checker, forwarded to the services' monitors;
        returns the monitored services (whose pods the checker should look at next)."""
        for service, status in pods.items():
            handle = self.monitors.get(service)
            if handle is not None:
                handle.set_pods.remote(status)
        return sorted(self.monitors)

    # -- reports ---------------------------------------------------------------------------------

    async def report(self, index: int, results: list[MonitorResult], counters: dict[str, int],
                     edges: dict[tuple[str, str], int], inflight: dict[str, int] | None = None) -> None:
        async with self._lock:
            now = self.clock.now()
            self.policy.observe(index, counters, edges, inflight, now)
            for r in results:  # one at a time: a cascade sees the breakers the previous one opened
                await self._carry_out(self.policy.on_result(r, now, list(self.monitors)), now)
            await self._send_alerts(now)
            await self.outbox.flush(1.0)

    async def infrastructure_report(self, component: str, health: dict[str, Any],
                                    message: dict[str, Any] | None = None,
                                    alert: dict[str, Any] | None = None) -> None:
        """From an infrastructure checker: ``health`` for the summary's ``infrastructure`` section;
        ``message`` (infrastructure_error / infrastructure_recovered) to publish on the errors topic
        (a critical error also on the emergency topic); ``alert`` for the alert manager."""
        async with self._lock:
            now = self.clock.now()
            await self._carry_out(self.policy.on_infrastructure(component, health, message, alert), now)
            await self._send_alerts(now)
            await self.outbox.flush(1.0)

    async def alert(self, alerts: list[dict[str, Any]]) -> None:
        """Alerts from other actors (security analyst, checkers) routed through the alert manager."""
        async with self._lock:
            self.policy.add_alerts(alerts)
            await self._send_alerts(self.clock.now())

    async def publish(self, topic: str, payload: dict[str, Any], retain: bool = False, kind: str = "finding") -> None:
        """Persist-then-publish for other actors (incidents, enforcement actions)."""
        async with self._lock:
            await self._carry_out([self.policy.relay(topic, payload, retain=retain, kind=kind)], self.clock.now())
            await self.outbox.flush(1.0)

    # -- periodic --------------------------------------------------------------------------------

    async def health_step(self) -> None:
        await self._carry_out(self.policy.health_step(now := self.clock.now()), now)

    async def rules_step(self) -> None:
        """The metric rules on this supervisor's own series; their alerts go the usual way."""
        async with self._lock:
            now = self.clock.now()
            self.policy.on_rules(await self.status(), now)
            await self._send_alerts(now)

    async def housekeeping(self) -> None:
        # A restarted observer starts itself; should that call be lost, this one (idempotent, one
        # per observer every 5 s) starts it. Not awaited: a restarting observer must not hold this up.
        for o in self.observers:
            o.start.remote(None)
        now = self.clock.now()
        effects = self.policy.housekeeping(now, security=bool(self.security_actors),
                                           alert_manager=self.alertmanager is not None)
        if self.alertmanager is not None:
            try:  # a restarted alert manager idles until called: this call resumes its delivery loop
                await self.alertmanager.ensure_started.remote()
                # Conditions still held are re-sent, or the alert manager's resolve timeout ends them.
                for e in effects:
                    if isinstance(e, Alert):
                        await self.alertmanager.ingest.remote(list(e.alerts))
            except Exception:
                logger.exception("alert manager unavailable")
        await self._carry_out([e for e in effects if not isinstance(e, Alert)], now)
        async with self._lock:
            await self.outbox.flush(1.0)

    async def status(self) -> dict[str, Any]:
        stats = self.store.stats()
        return {**self.policy.status(self.clock.now(), list(self.monitors)), "published": dict(self.outbox.published),
                "store": dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) else {},
                "bus": self.bus.stats()}

    async def export_metrics(self) -> None:
        """The families of ``/metrics`` onto Ray's metrics export (gauges set, counters increased)."""
        self.export(metric_families(await self.status(), age_s=0.0))

    # -- store hooks --------------------------------------------------------------------------------

    def _store_down(self, exc: Exception) -> None:
        logger.error("store unavailable: %s; buffering writes", exc)
        self.policy.store_unavailable(str(exc), self.clock.now())

    def _store_up(self, outage_s: float, flushed: int) -> None:
        logger.info("store back after %.1fs; %d buffered writes flushed", outage_s, flushed)
        self.policy.store_recovered(self.clock.now())

    def _store_drop(self, kind: str, n: int) -> None:
        logger.error("store buffer full: dropped %d %s writes", n, kind)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Supervisor:
    """The Ray actor around :class:`SupervisorBody`. Ray restarts it after a crash (its
    constructor queues its own start then); the driver also calls :meth:`start` every few seconds,
    which retries a start that failed."""

    def __init__(self, settings: OperateSettings) -> None:
        logging.basicConfig(level=logging.INFO)
        self.body = SupervisorBody(settings)
        self.body.start_when_restarted()

    async def ensure_started(self) -> None:
        await self.body.ensure_started()

    async def start(self) -> dict[str, Any]:
        """Idempotent; ``started`` says whether this call did the start."""
        before = self.body.started
        await self.body.ensure_started()
        return {"observers": len(self.body.observers), "started": not before}

    async def stop(self) -> None:
        await self.body.stop()

    async def monitors_for(self, services: list[str], index: int | None = None) -> dict[str, Any]:
        return await self.body.monitors_for(services, index)

    async def mark_real(self, services: list[str]) -> None:
        await self.body.mark_real(services)

    async def retire(self, index: int, services: list[str]) -> None:
        await self.body.retire(index, services)

    async def pod_status(self, pods: dict[str, dict[str, Any]]) -> list[str]:
        return await self.body.pod_status(pods)

    async def report(self, index: int, results: list[MonitorResult], counters: dict[str, int],
                     edges: dict[tuple[str, str], int], inflight: dict[str, int] | None = None) -> None:
        await self.body.report(index, results, counters, edges, inflight)

    async def infrastructure_report(self, component: str, health: dict[str, Any],
                                    message: dict[str, Any] | None = None,
                                    alert: dict[str, Any] | None = None) -> None:
        await self.body.infrastructure_report(component, health, message, alert)

    async def alert(self, alerts: list[dict[str, Any]]) -> None:
        await self.body.alert(alerts)

    async def publish(self, topic: str, payload: dict[str, Any], retain: bool = False, kind: str = "finding") -> None:
        await self.body.publish(topic, payload, retain, kind)

    async def status(self) -> dict[str, Any]:
        return await self.body.status()
