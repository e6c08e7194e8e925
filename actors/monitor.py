"""ServiceMonitor actor: one per service, a shell around ``policies.health.monitor.MonitorCore``.

It restores its breaker and health from the store when (re)started, applies each tick's deltas,
and persists its snapshot when something worth restoring changed — behind the answer (a saver task
writes the latest snapshot), so a slow store never delays the tick that answers callers; the
decisions themselves are persisted by the supervisor before they are published. Decisions go back to the
observer that sent the delta (which fast-fails and answers pending calls) and, through it, to the
supervisor (which publishes them).

Each tick's delta also goes into the service's cumulative call counts and duration histogram
(``policies.metrics.calls``), returned with the result for operate's ``/metrics``; the durations
are recorded on Ray's metrics export too (``adapters.runtime.ray_metrics``).

It also folds each tick's delta into the service's per-minute rollup (``policies.metrics.rollups``) and,
once a minute, writes the finished minute through the store (``metrics_minute``: calls, errors by
code, timeouts, the latency sketch for p50/p95/p99, concurrency, queue depth) — behind the
answer, like the snapshot. A minute the store refused is retried with the next; at most
``MAX_UNWRITTEN_ROLLUPS`` wait, older ones are dropped and counted. With each write it records the
most instances serving during those minutes (running pods, else online presence) in ``service_resources``, which the
recommendations read (CPU/memory utilisation only ``drivers.generate`` writes so far).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import ray

from actors.chassis import Chassis
from actors.clock import Clock, SystemClock
from actors.settings import OperateSettings
from adapters.runtime.ray_metrics import RayCallHistogram
from adapters.store import MetricRollup, Store, StoreError, open_store
from policies.breaker.settings import load_breaker_policy
from policies.health.monitor import MonitorCore, MonitorResult
from policies.health.status import load_health_policy
from policies.metrics.calls import CallTotals
from policies.metrics.rollups import MinuteRollup, RollupBuilder
from policies.observation.correlation import ServiceDelta

logger = logging.getLogger("sfa_ops.monitor")

STATE_NAMESPACE = "service_monitor"
MAX_UNWRITTEN_ROLLUPS = 120
RESOURCES_NAMESPACE = "service_resources"


def metric_row(r: MinuteRollup) -> MetricRollup:
    return MetricRollup(service=r.service, minute=r.minute, calls=r.calls, outcomes=r.outcomes,
                        latency_sketch=r.latency_sketch, concurrency_max=r.concurrency_max,
                        concurrency_avg=r.concurrency_avg, timeouts=r.timeouts, queue_depth=r.queue_depth)


class MonitorBody(Chassis):
    """One service's monitor without Ray (the actor below forwards to it). ``store`` defaults to
    the one of ``settings``; a store that cannot be opened at start leaves the monitor running
    without saved state (it does not retry: the breaker must work without the store)."""

    what = "service monitor"

    def __init__(self, settings: OperateSettings, service: str, *, clock: Clock | None = None,
                 store: Store | None = None) -> None:
        self.settings = settings
        self.service = service
        self.clock: Clock = clock or SystemClock()
        self._store = store
        self.store: Store | None = None
        self.core: MonitorCore | None = None
        self.pods: dict[str, Any] | None = None
        self._unsaved: dict[str, Any] | None = None
        self._save_wanted = asyncio.Event()
        self._saver: asyncio.Task[None] | None = None
        self.rollups = RollupBuilder(service=service)
        self._unwritten: list[MetricRollup] = []
        self._rollup_writer: asyncio.Task[None] | None = None
        self.rollups_dropped = 0
        self._peak_instances = 0
        self.calls = CallTotals()
        self.call_histogram = RayCallHistogram(cluster=settings.cluster_id, service=service)

    async def _core(self) -> MonitorCore:
        """The core, built on first use: calls run concurrently in an async actor (a restarted
        monitor gets the observer's apply and other callers at once); they share one start."""
        if self.core is None:
            await self.ensure_started()
        assert self.core is not None
        return self.core

    async def _start(self) -> None:
        restored: dict[str, Any] | None = None
        store = self._store or open_store(self.settings.store_url)
        try:
            await store.open()
            restored = await store.state_get(STATE_NAMESPACE, self.service)
            self.store = store
        except StoreError:
            logger.exception("monitor %s: store unavailable; starting without saved state", self.service)
            self.store = None
        breaker = load_breaker_policy(self.settings.policies_dir).for_service(self.service)
        health = load_health_policy(self.settings.policies_dir)
        self.core = MonitorCore(service=self.service, cluster_id=self.settings.cluster_id, breaker=breaker,
                                health=health, now=self.clock.now(), restored=restored)
        if self.core.restore_refused:
            logger.warning("monitor %s: %d fields of its saved state were refused (invalid or over their "
                           "bounds) and start from defaults", self.service, self.core.restore_refused)

    async def apply(self, delta: ServiceDelta, now: float) -> MonitorResult:
        core = await self._core()
        result = core.apply([delta], now, pods=self.pods)
        if result.snapshot is not None:
            self._save_later(result.snapshot)
        if delta.presence or self._peak_instances == 0:
            self._peak_instances = max(self._peak_instances, self._instances())
        finished = self.rollups.add(delta, now)
        if finished is not None:
            self._keep_rollup(finished)
            if self._rollup_writer is None or self._rollup_writer.done():
                self._rollup_writer = asyncio.create_task(self._write_rollups(),
                                                          name=f"monitor-rollup-{self.service}")
        self.call_histogram.observe(self.calls.add(delta).durations)
        # the saved snapshot (a few KB with the health window) is the monitor's own: not sent back
        return dataclasses.replace(result, calls=self.calls.snapshot(), snapshot=None)

    def _keep_rollup(self, r: MinuteRollup) -> None:
        self._keep(metric_row(r))

    def _keep(self, row: MetricRollup) -> None:
        self._unwritten.append(row)
        if len(self._unwritten) > MAX_UNWRITTEN_ROLLUPS:
            drop = len(self._unwritten) - MAX_UNWRITTEN_ROLLUPS
            del self._unwritten[:drop]
            self.rollups_dropped += drop
            logger.error("monitor %s: %d minute rollup(s) dropped (store unavailable)", self.service, drop)

    async def _write_rollups(self) -> None:
        """Write every finished minute not yet written, in one store call."""
        if self.store is None or not self._unwritten:
            return
        rows, self._unwritten = self._unwritten, []
        try:
            await self.store.metrics_upsert(rows)
        except StoreError:
            logger.exception("monitor %s: could not write %d minute rollup(s); retried next minute",
                             self.service, len(rows))
            later, self._unwritten = self._unwritten, []
            for row in rows + later:
                self._keep(row)
            return
        instances, self._peak_instances = max(self._peak_instances, self._instances()), self._instances()
        if instances:
            try:
                await self.store.state_put(RESOURCES_NAMESPACE, self.service, {"instances": instances})
            except StoreError:
                logger.exception("monitor %s: could not write its instance count", self.service)

    def _instances(self) -> int:
        """Instances serving now: running pods when the Kubernetes checker reports them, else online presence."""
        running = (self.pods or {}).get("running")
        if isinstance(running, int) and running > 0:
            return running
        core = self.core
        return sum(1 for up in core.instances.values() if up) if core is not None else 0

    async def set_pods(self, pods: dict[str, Any]) -> None:
        """Pod status from the Kubernetes checker (``running``, ``ready``, ``total``,
        ``failureReason``), used from the next tick on."""
        self.pods = pods

    async def preemptive_open(self, reason: str, now: float) -> tuple[dict[str, Any], ...]:
        core = await self._core()
        events = core.preemptive_open(now, reason)
        if events:
            self._save_later(core.snapshot())
        return events

    async def state(self) -> dict[str, Any]:
        core = await self._core()
        return core.snapshot()

    def _save_later(self, snapshot: dict[str, Any]) -> None:
        """Latest snapshot wins; one saver task writes them in order."""
        self._unsaved = snapshot
        self._save_wanted.set()
        if self._saver is None or self._saver.done():
            self._saver = asyncio.create_task(self._save_loop(), name=f"monitor-save-{self.service}")

    async def _save_loop(self) -> None:
        while True:
            await self._save_wanted.wait()
            self._save_wanted.clear()
            snapshot, self._unsaved = self._unsaved, None
            if snapshot is None or self.store is None:
                continue
            try:
                await self.store.state_put(STATE_NAMESPACE, self.service, snapshot)
            except StoreError:
                logger.exception("monitor %s: could not save state", self.service)
                self._unsaved = self._unsaved or snapshot
                await asyncio.sleep(1.0)
                self._save_wanted.set()

    async def flush(self) -> None:
        """Write the minute so far and wait until the latest snapshot is saved (used on shutdown)."""
        if self._rollup_writer is not None:
            await asyncio.gather(self._rollup_writer, return_exceptions=True)
        partial = self.rollups.close(self.clock.now())
        if partial is not None:
            self._keep_rollup(partial)
        await self._write_rollups()
        if self.core is not None:  # the calls since the last periodic save are not lost on a clean stop
            self._save_later(self.core.snapshot(self.clock.now()))
        for _ in range(100):
            if self._unsaved is None and not self._save_wanted.is_set():
                return
            await asyncio.sleep(0.05)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ServiceMonitor:
    """The Ray actor: a :class:`MonitorBody`, whole again (state restored) after Ray restarted it."""

    def __init__(self, settings: OperateSettings, service: str) -> None:
        self.body = MonitorBody(settings, service)
        self.body.start_when_restarted(f"service monitor {service}")

    async def ensure_started(self) -> None:
        await self.body.ensure_started()

    async def apply(self, delta: ServiceDelta, now: float) -> MonitorResult:
        return await self.body.apply(delta, now)

    async def set_pods(self, pods: dict[str, Any]) -> None:
        await self.body.set_pods(pods)

    async def preemptive_open(self, reason: str, now: float) -> tuple[dict[str, Any], ...]:
        return await self.body.preemptive_open(reason, now)

    async def state(self) -> dict[str, Any]:
        return await self.body.state()

    async def flush(self) -> None:
        await self.body.flush()
