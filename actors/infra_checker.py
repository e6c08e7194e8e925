"""InfraChecker actor: one per infrastructure component, a shell around its probes and a
:class:`~policies.infrastructure.checks.ComponentTracker`.

Every ``interval`` (``policies/infrastructure.yaml``) it runs the component's probes (each bounded
by the probe's own timeout, and the whole check by an outer ``asyncio.timeout`` as a guard: a
hung probe is a failed check, never a stuck actor), feeds the result to the tracker, and hands the
supervisor one ``infrastructure_report`` per check: the health entry, plus the tier-3 message and
alert when the tracker announced a transition. Reports go through a small outbox drained by their
own task, so a slow supervisor (the broker being down makes its flushes wait) never delays a
check, the latest health replaces an unsent one, and transitions are kept in order until sent.

Components and their probes come from the registry ``adapters.probes.PROBES`` (the checker only
looks the component up there): ``mqtt_broker`` (round trip over the operated broker), or
``emqx_cluster`` when EMQX's API is configured (that round trip plus the API probe, merged);
``postgresql_cluster`` (all DSNs, one probe); ``mongodb_cluster`` (all URIs, one probe); ``redis`` (one probe per URL, merged);
``kubernetes_cluster`` (nodes, plus pod status per service, which goes to the supervisor's
``pod_status`` and from there to the service monitors).

Ray restarts a crashed checker (``max_restarts=-1``): ``__init__`` runs again, notices it is a
reconstruction (``Chassis.start_when_restarted``) and starts itself, restoring an announced outage
from the supervisor's health summary (so its recovery is still announced) and reporting the
restart (an ``InfraCheckerRestarted`` info alert, resolved after the first check, and
``checkerRestartedAt`` in the health entry).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import deque
from typing import Any

import ray

from actors.chassis import Chassis
from actors.clock import Clock, SystemClock
from actors.loops import run_every
from actors.settings import OperateSettings
from adapters.probes import PROBES, ProbeSet, ProbeSetup, build_probes, unknown_components
from policies.alerting.runbooks import load_runbooks
from policies.infrastructure.alerts import (
    affected_services,
    health_entry,
    merge_results,
    monitor_pods,
    restarted_alert,
    restored_state,
    runbook_values,
    transition_alerts,
)
from policies.infrastructure.checks import (
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
from protocol.names import is_service_name

logger = logging.getLogger("sfa_ops.infra")

GUARD_S = 1.0  # the outer timeout's margin over the probe's own
OUTBOX_CAP = 100  # unsent transitions kept while the supervisor is unreachable
REPORT_TIMEOUT_S = 10.0


def components_for(settings: OperateSettings) -> list[str]:
    """The components checked under ``settings`` (``PROBES`` order); the broker is always one."""
    return [name for name, kind in PROBES.items() if kind.wanted(settings)]


class InfraCheckerBody(Chassis):
    """See the module docstring. ``supervisor``: an actor handle with ``infrastructure_report``,
    ``alert``, ``pod_status`` and ``status`` (or anything whose methods have ``.remote``), or its
    name in ``settings.namespace`` (default: the supervisor of ``settings``). ``probes`` replaces
    the registry's (tests)."""

    what = "infra checker"

    def __init__(self, settings: OperateSettings, component: str, supervisor: Any = None, *,
                 clock: Clock | None = None, probes: ProbeSet | None = None) -> None:
        logging.basicConfig(level=logging.INFO)
        self.settings = settings
        self.component = component
        self.cluster = settings.cluster_id
        self.policy = load_infrastructure_policy(settings.policies_dir)
        self.config = self.policy.component(component)
        self.runbooks = load_runbooks(settings.policies_dir)
        self.tracker = ComponentTracker(config=self.config)
        self.clock: Clock = clock or SystemClock()
        self.supervisor: Any = supervisor if not isinstance(supervisor, str | None) else None
        self.supervisor_name = supervisor if isinstance(supervisor, str) else settings.actor_name("supervisor")
        self.affected = affected_services(component, self.policy.service_dependencies)
        self.probes = probes or ProbeSet(probes={})
        self._given_probes = probes is not None
        self.setup_error: str | None = None
        self.checks = 0
        self.last: ProbeResult | None = None
        self.restarted_at: float | None = None
        self._restart_resolved = False
        self._tasks: list[asyncio.Task[None]] = []
        self._outbox: deque[tuple[dict[str, Any] | None, list[dict[str, Any]]]] = deque()
        self._dropped = 0
        self._health: dict[str, Any] | None = None
        self._sent_health: dict[str, Any] | None = None
        self._pods: dict[str, dict[str, Any]] | None = None
        self._wake = asyncio.Event()
        self._drain_lock = asyncio.Lock()

    def start_when_restarted(self, what: str | None = None) -> bool:
        restarted = super().start_when_restarted(what or f"infra checker {self.component}")
        if restarted:
            self.restarted_at = self.clock.now()
        return restarted

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Idempotent: build the probes, restore after a restart, start the check loop."""
        await self.ensure_started()
        return {"component": self.component, "interval": self.config.interval, "pid": os.getpid(),
                "restarted": self.restarted_at is not None}

    async def _start(self) -> None:
        if self.supervisor is None:
            self.supervisor = ray.get_actor(self.supervisor_name, namespace=self.settings.namespace)
        if not self._given_probes:
            try:
                self.probes = await self._build_probes()
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

    async def _build_probes(self) -> ProbeSet:
        unknown = unknown_components(self.policy)
        if unknown:
            raise ValueError(f"infrastructure.yaml names components no probe is registered for: {unknown}")
        setup = ProbeSetup(component=self.component, cluster=self.cluster, timeout=self.config.timeout,
                           thresholds=self.policy.thresholds_for(self.component), settings=self.settings,
                           policy=self.policy)
        return await build_probes(self.component, setup)

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
        for close in [p.close for p in self.probes.probes.values()] + self.probes.closers:
            try:
                await asyncio.wait_for(close(), 2.0)
            except Exception:
                logger.debug("closing a %s probe failed", self.component, exc_info=True)

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
                if self.probes.pods is not None:
                    snap = await self.probes.pods.snapshot()
                    results = {"kubernetes": snap.result}
                    if snap.result.error is None:
                        pods = {name: monitor_pods(running=p.running, ready=p.ready, total=p.total, reason=p.reason,
                                                   failure_reason=p.failure_reason) for name, p in snap.pods.items()}
                else:
                    probes = self.probes.probes
                    labels = list(probes)
                    done = await asyncio.gather(*(probes[n].check() for n in labels))
                    results = dict(zip(labels, done, strict=True))
        except TimeoutError:
            msg = f"{self.component} check hung past {self.config.timeout + GUARD_S:g}s (probe timeout not honoured)"
            severity: Severity = self.probes.timeout_severity
            return ProbeResult.build(
                component=self.component, latency_ms=(time.perf_counter() - started) * 1000.0, error=msg,
                problems=[Problem(code="timeout", severity=severity, message=msg)]), None
        return merge_results(self.component, results, primary=self.probes.primary), pods

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
                                   values=runbook_values(t.result, hosts=self.probes.hosts), affected=self.affected)
        log = logger.info if t.kind.value in ("recovered", "config_resolved") else logger.warning
        log("infrastructure %s %s (%s): %s", self.component, t.kind.value, t.severity, summary)
        return message, alerts

    # -- reports ------------------------------------------------------------------------------------

    async def _reporter(self) -> None:
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
        k8s = self.probes.pods
        if k8s is None or not isinstance(known, list | tuple):
            return
        wanted = tuple(sorted({*self.settings.services, *(str(n) for n in known if is_service_name(str(n)))}))
        if wanted != k8s.services:
            k8s.services = wanted  # validated names: they go into a label selector


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class InfraChecker:
    """The Ray actor: an :class:`InfraCheckerBody`. ``supervisor`` is a name, not a handle: a
    handle argument lives in the object store, and Ray cannot restart an actor whose constructor
    arguments were lost."""

    def __init__(self, settings: OperateSettings, component: str, supervisor: str | None = None) -> None:
        self.body = InfraCheckerBody(settings, component, supervisor)
        self.body.start_when_restarted()

    async def ensure_started(self) -> None:
        await self.body.ensure_started()

    async def start(self) -> dict[str, Any]:
        return await self.body.start()

    async def stop(self) -> None:
        await self.body.stop()

    async def status(self) -> dict[str, Any]:
        return await self.body.status()
