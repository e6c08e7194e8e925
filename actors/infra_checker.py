"""InfraChecker actor: one per infrastructure component, a shell around its probes and a
:class:`~policies.infrastructure.ComponentTracker`.

Every ``interval`` (``policies/infrastructure.yaml``) it runs the component's probes (each bounded
by the probe's own timeout, and the whole check by an outer ``asyncio.timeout`` as a guard: a
hung probe is a failed check, never a stuck actor), feeds the result to the tracker, and hands the
supervisor one ``infrastructure_report`` per check: the health entry, plus the tier-3 message and
alert when the tracker announced a transition. Reports go through a small outbox drained by their
own task, so a slow supervisor (the broker being down makes its flushes wait) never delays a
check, the latest health replaces an unsent one, and transitions are kept in order until sent.

Components and their probes: ``mqtt_broker`` (round trip over the operated broker), or
``emqx_cluster`` when EMQX's API is configured (that round trip plus the API probe, merged);
``postgresql_cluster`` (all DSNs, one probe); ``mongodb_cluster`` (all URIs, one probe); ``redis`` (one probe per URL, merged);
``kubernetes_cluster`` (nodes, plus pod status per service, which goes to the supervisor's
``pod_status`` and from there to the service monitors).

Ray restarts a crashed checker (``max_restarts=-1``): ``__init__`` runs again, notices it is a
reconstruction, and schedules its own ``start``, which restores an announced outage from the
supervisor's health summary (so its recovery is still announced) and reports the restart (an
``InfraCheckerRestarted`` info alert, resolved after the first check, and ``checkerRestartedAt``
in the health entry).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import ray

from actors.clock import Clock, SystemClock
from actors.loops import run_every
from actors.restart import start_if_restarted
from actors.settings import OperateSettings
from adapters.infra import Probe
from policies.infra_alerts import (
    affected_services,
    health_entry,
    merge_results,
    monitor_pods,
    restarted_alert,
    restored_state,
    runbook_values,
    transition_alerts,
)
from policies.infrastructure import (
    ComponentTracker,
    ProbeResult,
    Problem,
    Severity,
    Transition,
    describe,
    effective_severity,
    load_infrastructure_policy,
    transition_message,
)
from policies.runbooks import load_runbooks
from protocol.names import is_service_name

if TYPE_CHECKING:
    from adapters.infra.kubernetes_probe import KubernetesProbe

logger = logging.getLogger("sfa_ops.infra")

GUARD_S = 1.0  # the outer timeout's margin over the probe's own
OUTBOX_CAP = 100  # unsent transitions kept while the supervisor is unreachable
REPORT_TIMEOUT_S = 10.0


def _host_label(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


def components_for(settings: OperateSettings) -> list[str]:
    """The components checked under ``settings``; the broker is always one of them."""
    out = ["emqx_cluster" if settings.emqx_api else "mqtt_broker"]
    if settings.check_postgres:
        out.append("postgresql_cluster")
    if settings.check_mongodb:
        out.append("mongodb_cluster")
    if settings.check_redis:
        out.append("redis")
    if settings.kubernetes:
        out.append("kubernetes_cluster")
    return out


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class InfraChecker:
    """See the module docstring. ``supervisor``: the name (in ``settings.namespace``) of an actor
    with ``infrastructure_report``, ``alert``, ``pod_status`` and ``status``; default: the
    supervisor of ``settings``. A name, not a handle: a handle argument lives in the object store,
    and Ray cannot restart an actor whose constructor arguments were lost."""

    def __init__(self, settings: OperateSettings, component: str, supervisor: str | None = None) -> None:
        logging.basicConfig(level=logging.INFO)
        self.settings = settings
        self.component = component
        self.cluster = settings.cluster_id
        self.policy = load_infrastructure_policy(settings.policies_dir)
        self.config = self.policy.component(component)
        self.runbooks = load_runbooks(settings.policies_dir)
        self.tracker = ComponentTracker(config=self.config)
        self.clock: Clock = SystemClock()
        self.supervisor_name = supervisor or settings.actor_name("supervisor")
        self.supervisor: Any = None
        self.affected = affected_services(component, self.policy.service_dependencies)
        self.probes: dict[str, Probe] = {}
        self.k8s: KubernetesProbe | None = None
        self.hosts: list[str] = []
        self.setup_error: str | None = None
        self.checks = 0
        self.last: ProbeResult | None = None
        self.restarted_at: float | None = None
        self._restart_resolved = False
        self._started = False
        self._tasks: list[asyncio.Task[None]] = []
        self._outbox: deque[tuple[dict[str, Any] | None, list[dict[str, Any]]]] = deque()
        self._dropped = 0
        self._health: dict[str, Any] | None = None
        self._sent_health: dict[str, Any] | None = None
        self._pods: dict[str, dict[str, Any]] | None = None
        self._wake: asyncio.Event | None = None
        self._drain_lock = asyncio.Lock()
        self._buses: list[Any] = []
        if start_if_restarted(f"infra checker {component}"):
            self.restarted_at = self.clock.now()

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Idempotent: build the probes, restore after a restart, start the check loop."""
        if not self._started:
            self._started = True
            self.supervisor = ray.get_actor(self.supervisor_name, namespace=self.settings.namespace)
            self._wake = asyncio.Event()
            try:
                await self._build_probes()
            except Exception as exc:  # reported as a configuration error by every check
                logger.exception("infra checker %s: cannot set up its probes", self.component)
                self.setup_error = f"cannot set up the {self.component} check: {type(exc).__name__}: {exc}"
            if self.restarted_at is not None:
                await self._restore()
            self._tasks = [
                asyncio.create_task(run_every(self.config.interval, self._step, name=f"infra-{self.component}",
                                              logger=logger, slow_after_s=self.config.timeout + GUARD_S),
                                    name=f"infra-{self.component}"),
                asyncio.create_task(self._reporter(), name=f"infra-{self.component}-reports"),
            ]
        return {"component": self.component, "interval": self.config.interval, "pid": os.getpid(),
                "restarted": self.restarted_at is not None}

    async def _build_probes(self) -> None:
        s, t, timeout = self.settings, self.policy.thresholds, self.config.timeout
        if self.component in ("mqtt_broker", "emqx_cluster"):
            from adapters.infra.mqtt_probe import BrokerProbe
            from adapters.mqtt import MqttBus

            # A probe measures the broker now: nothing queued from before is worth receiving.
            bus = MqttBus(config=s.mqtt_config(persistent=False),
                          client_id=f"infra-{self.cluster}-{self.component}-{uuid.uuid4().hex[:6]}")
            self._buses.append(bus)
            await bus.start()
            broker = BrokerProbe(bus=bus, timeout_s=timeout, thresholds=t.mqtt_broker)
            self.probes["broker"] = broker
            try:
                await broker.start(connect_timeout_s=timeout)
            except Exception:  # not connected yet: the checks say so; the bus keeps reconnecting
                logger.warning("infra checker %s: broker not reachable at start", self.component)
            if self.component == "emqx_cluster":
                from adapters.infra.emqx import EmqxClient, EmqxProbe

                client = EmqxClient(base_url=str(s.emqx_api), api_key=s.emqx_api_key or "",
                                    api_secret=s.emqx_api_secret or "", timeout=timeout)
                self.probes["api"] = EmqxProbe(client=client, timeout_s=timeout, thresholds=t.emqx_cluster)
        elif self.component == "postgresql_cluster":
            from adapters.infra.postgres_probe import PostgresProbe

            probe = PostgresProbe.from_dsns(s.check_postgres, timeout_s=timeout, thresholds=t.postgresql_cluster,
                                            expected_replicas=s.expect_replicas)
            self.probes["postgresql"] = probe
            self.hosts = [tg.label.split(":")[0] for tg in probe.targets]
        elif self.component == "mongodb_cluster":
            from adapters.infra.mongodb_probe import MongoProbe

            mongo = MongoProbe(uris=s.check_mongodb, timeout_s=timeout, thresholds=t.mongodb_cluster,
                               expected_replicas=s.expect_replicas)
            self.probes["mongodb"] = mongo
            self.hosts = mongo.hosts
        elif self.component == "redis":
            from adapters.infra.redis_probe import RedisProbe

            for url in s.check_redis:
                self.probes[_host_label(url)] = RedisProbe(url=url, timeout_s=timeout, thresholds=t.redis,
                                                           expected_replicas=s.expect_replicas)
                self.hosts.append(urlsplit(url).hostname or "localhost")
        elif self.component == "kubernetes_cluster":
            from adapters.infra.kubernetes_probe import KubernetesProbe, api_client

            api = await asyncio.to_thread(api_client, host=s.kube_api)
            self.k8s = KubernetesProbe(api=api, timeout_s=timeout, thresholds=t.kubernetes_cluster,
                                       namespace=s.kube_namespace, services=s.services)
            self.probes["kubernetes"] = self.k8s
        else:
            raise ValueError(f"unknown infrastructure component {self.component!r}")

    async def _restore(self) -> None:
        """Resume an outage announced before the restart, and report the restart."""
        now = self.clock.now()
        try:
            status = await asyncio.wait_for(self.supervisor.status.remote(), REPORT_TIMEOUT_S)
            entry = status["health"]["infrastructure"].get(self.component)
            state = restored_state(entry, failures_before_error=self.config.failures_before_error)
            if state is not None:
                self.tracker.state = state
                logger.info("infra checker %s: resumed the outage open since %s", self.component,
                            entry.get("outageSince") if entry else None)
        except Exception:
            logger.exception("infra checker %s: could not read the previous state", self.component)
        self._outbox.append((None, [restarted_alert(self.component, self.cluster, now)]))

    async def stop(self) -> None:
        """Stop checking, send what is queued (briefly), close the probes."""
        if self._tasks:
            self._tasks[0].cancel()
            if self._outbox or self._health is not None:
                try:
                    await asyncio.wait_for(self._drain(2.0), 5.0)
                except Exception:
                    logger.warning("infra checker %s: %d reports unsent at stop", self.component, len(self._outbox))
            for task in self._tasks:
                task.cancel()
        for probe in self.probes.values():
            try:
                await asyncio.wait_for(probe.close(), 2.0)
            except Exception:
                logger.debug("closing a %s probe failed", self.component, exc_info=True)
        for bus in self._buses:
            await bus.stop()

    async def status(self) -> dict[str, Any]:
        last = self.last
        return {"component": self.component, "pid": os.getpid(), "checks": self.checks,
                "state": self.tracker.state.status.value, "interval": self.config.interval,
                "restarted": self.restarted_at is not None, "outbox": len(self._outbox), "dropped": self._dropped,
                "last": None if last is None else {"ok": last.ok, "error": last.error,
                                                   "latencyMs": last.latency_ms}}

    # -- a check ----------------------------------------------------------------------------------

    async def _check(self) -> tuple[ProbeResult, dict[str, dict[str, Any]] | None]:
        if self.setup_error is not None:
            return ProbeResult.build(component=self.component, latency_ms=0.0, error=self.setup_error,
                                     config_error=True, problems=[Problem(code="misconfigured", severity="warning",
                                                                          message=self.setup_error)]), None
        started = time.perf_counter()
        pods: dict[str, dict[str, Any]] | None = None
        try:
            async with asyncio.timeout(self.config.timeout + GUARD_S):
                if self.k8s is not None:
                    snap = await self.k8s.snapshot()
                    results = {"kubernetes": snap.result}
                    if snap.result.error is None:
                        pods = {name: monitor_pods(running=p.running, ready=p.ready, total=p.total, reason=p.reason,
                                                   failure_reason=p.failure_reason) for name, p in snap.pods.items()}
                else:
                    labels = list(self.probes)
                    done = await asyncio.gather(*(self.probes[n].check() for n in labels))
                    results = dict(zip(labels, done, strict=True))
        except TimeoutError:
            msg = f"{self.component} check hung past {self.config.timeout + GUARD_S:g}s (probe timeout not honoured)"
            severity: Severity = "error" if self.component == "kubernetes_cluster" else "critical"
            return ProbeResult.build(
                component=self.component, latency_ms=(time.perf_counter() - started) * 1000.0, error=msg,
                problems=[Problem(code="timeout", severity=severity, message=msg)]), None
        primary = "api" if self.component == "emqx_cluster" else None
        return merge_results(self.component, results, primary=primary), pods

    async def _step(self) -> None:
        result, pods = await self._check()
        now = self.clock.now()
        self.checks += 1
        self.last = result
        previous_severity = self.tracker.state.severity
        transition = self.tracker.observe(result, now)
        alerts: list[dict[str, Any]] = []
        message: dict[str, Any] | None = None
        if transition is not None:
            message, alerts = self._announce(transition, previous_severity)
        if self.restarted_at is not None and not self._restart_resolved:
            self._restart_resolved = True
            alerts.append(restarted_alert(self.component, self.cluster, now, resolved=True))
        if message is not None or alerts:
            if len(self._outbox) >= OUTBOX_CAP:
                self._outbox.popleft()
                self._dropped += 1
                logger.error("infra checker %s: outbox full, dropped the oldest unsent report", self.component)
            self._outbox.append((message, alerts))
        self._health = health_entry(result, self.tracker.state, now=now,
                                    severity=effective_severity(result, self.config),
                                    affected=self.affected if not result.ok else (),
                                    restarted_at=self.restarted_at)
        if pods is not None:
            self._pods = pods
        assert self._wake is not None
        self._wake.set()

    def _announce(
        self, t: Transition, previous_severity: Severity | None,
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        message = transition_message(t, cluster_id=self.cluster, policy=self.policy,
                                     correlation_id=f"infra-{self.component}-{uuid.uuid4().hex[:16]}",
                                     affected_services=self.affected)
        summary = str(message["message"]) if message and message.get("message") else describe(t.result, self.config)
        alerts = transition_alerts(t, cluster_id=self.cluster, previous_severity=previous_severity,
                                   runbooks=self.runbooks, summary=summary,
                                   values=runbook_values(t.result, hosts=self.hosts), affected=self.affected)
        log = logger.info if t.kind.value in ("recovered", "config_resolved") else logger.warning
        log("infrastructure %s %s (%s): %s", self.component, t.kind.value, t.severity, summary)
        return message, alerts

    # -- reports ------------------------------------------------------------------------------------

    async def _reporter(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                if not await self._drain(REPORT_TIMEOUT_S):
                    await asyncio.sleep(1.0)  # supervisor unreachable: retry soon, checks go on
                    self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("infra checker %s: reporting failed; will retry", self.component)
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _drain(self, timeout: float) -> bool:
        """Send queued transitions (in order) with the latest health, then the health alone if it
        was not sent with one, then the pod status; False when a call failed (kept for a retry)."""
        async with self._drain_lock:  # the reporter task and stop() both drain
            return await self._drain_locked(timeout)

    async def _drain_locked(self, timeout: float) -> bool:
        sup = self.supervisor
        while self._outbox:
            message, alerts = self._outbox[0]
            health = self._health or self._sent_health
            first, rest = (alerts[0], alerts[1:]) if alerts else (None, [])
            if health is None:  # nothing checked yet (a restart alert): alerts only
                if alerts and not await self._call(sup.alert.remote(alerts), timeout):
                    return False
            else:
                if not await self._call(sup.infrastructure_report.remote(self.component, health, message, first),
                                        timeout):
                    return False
                self._sent(health)
                if rest and not await self._call(sup.alert.remote(rest), timeout):
                    self._outbox[0] = (None, rest)
                    return False
            self._outbox.popleft()
        health = self._health
        if health is not None:
            if not await self._call(sup.infrastructure_report.remote(self.component, health, None, None), timeout):
                return False
            self._sent(health)
        pods, self._pods = self._pods, None
        if pods is not None:
            try:
                known = await asyncio.wait_for(sup.pod_status.remote(pods), timeout)
            except Exception:
                logger.warning("infra checker %s: pod status not delivered", self.component, exc_info=True)
                self._pods = self._pods or pods
                return False
            self._track_services(known)
        return True

    def _sent(self, health: dict[str, Any]) -> None:
        self._sent_health = health
        if self._health is health:  # a newer check's health stays queued
            self._health = None

    async def _call(self, ref: Any, timeout: float) -> bool:
        try:
            await asyncio.wait_for(ref, timeout)
            return True
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("infra checker %s: supervisor call failed", self.component, exc_info=True)
            return False

    def _track_services(self, known: Any) -> None:
        """Check the pods of every service the supervisor monitors (not only those given at start)."""
        if self.k8s is None or not isinstance(known, list | tuple):
            return
        wanted = tuple(sorted({*self.settings.services, *(str(n) for n in known if is_service_name(str(n)))}))
        if wanted != self.k8s.services:
            self.k8s.services = wanted  # validated names: they go into a label selector
