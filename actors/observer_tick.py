"""The observer's tick and its links to the other actors: once per tick, per-service deltas go to the
service monitors and their decisions to the supervisor (one actor call per monitor, one report, never
a call per message); with several observers, halves of pairs another observer owns go to it in one
batch per owner every ``forward_every``."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import ray

from policies.health.monitor import MonitorResult
from policies.observation.correlation import ServiceDelta
from policies.observation.sharing import Half, encode_batch

if TYPE_CHECKING:
    from actors.observer import ObserverBody

logger = logging.getLogger("sfa_ops.observer")


class ObserverLinks:
    """Handles to the supervisor, monitors, analyst, audit writer and peer observers, and the tick."""

    def __init__(self, body: ObserverBody) -> None:
        self.body = body
        self.index = body.index
        s = body.settings
        self.supervisor: Any = ray.get_actor(s.actor_name("supervisor"), namespace=s.namespace)
        self.analyst: Any = ray.get_actor(s.actor_name("analyst"), namespace=s.namespace) if s.security else None
        self.audit: Any = ray.get_actor(s.actor_name("audit"), namespace=s.namespace) if s.security else None
        self.peers: dict[int, Any] = {i: ray.get_actor(s.actor_name("observer", str(i)), namespace=s.namespace)
                                      for i in range(body.count) if i != body.index} if body.count > 1 else {}
        self.monitors: dict[str, Any] = {}
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, ServiceDelta] = {}
        self._report: Any = None
        self._sending: set[asyncio.Task[None]] = set()

    async def monitored(self) -> list[str]:
        """The services the supervisor monitors (restored after this observer restarted)."""
        status = await asyncio.wait_for(self.supervisor.status.remote(), 30)
        return list(status.get("monitors") or [])

    # -- forwarding between observers ------------------------------------------------------------

    async def forward_loop(self) -> None:
        """Every ``forward_every``: one call per owner with something queued (never per message)."""
        every = self.body.policy.forward_every
        while True:
            await asyncio.sleep(every)
            try:
                for owner, batch in self.body.take_forward().items():
                    task = asyncio.create_task(self._send(owner, batch), name=f"observer-{self.index}-to-{owner}")
                    self._sending.add(task)
                    task.add_done_callback(self._sending.discard)
            except Exception:
                logger.exception("observer %d: forwarding step failed", self.index)

    async def _send(self, owner: int, batch: list[Half]) -> None:
        try:
            await self.peers[owner].forwarded.remote(encode_batch(batch))
        except Exception:
            # The owner restarts (max_restarts=-1): these halves are lost, counted, never retried.
            self.body.forward.dropped += len(batch)
            logger.exception("observer %d: %d halves for observer %d lost", self.index, len(batch), owner)
        finally:
            self.body.forward.sent(owner)

    # -- the tick --------------------------------------------------------------------------------

    async def tick(self) -> None:
        body = self.body
        self._retire()
        now, deltas, edges = body.collect()
        if body.instances.new_real:
            real, body.instances.new_real = body.instances.new_real, []
            self.supervisor.mark_real.remote(real)
        new = [s for s in deltas if s not in self.monitors]
        if new:
            self.monitors.update(await self.supervisor.monitors_for.remote(new, self.index))
            for name in new:
                self._starting[name] = asyncio.create_task(self._until_ready(name), name=f"monitor-ready-{name}")
        # A monitor that is still starting (a new worker process: ~1 s) must not hold up every
        # other service's tick: its deltas wait here, merged, until it answers.
        for name in [n for n in deltas if n in self._starting]:
            held = self._held.get(name)
            if held is None:
                self._held[name] = deltas.pop(name)
            else:
                held.merge(deltas.pop(name))
        for name, task in list(self._starting.items()):
            if task.done():
                del self._starting[name]
                if name in self._held:
                    deltas[name] = self._held.pop(name)
        results = body.reconcile(await self._apply(deltas, now))
        body.refresh_breakers(results)
        # Decisions reach the supervisor before any answer is sent: no answer can cost a finding.
        if self._report is not None:
            try:
                await self._report  # surfaces a failed report in this step's log, keeps order
            except Exception:
                logger.exception("supervisor report failed")
        self._report = self.supervisor.report.remote(self.index, results, body.counters(), edges,
                                                     body.correlator.inflight())
        body.answer_unavailable(results, now)
        activity, audit = body.correlator.drain_security()
        # One call per tick each, fire and forget: the analyst and the writer buffer and count.
        if activity and self.analyst is not None:
            self.analyst.activity.remote(activity, now)
        if audit and self.audit is not None:
            self.audit.calls.remote(audit)

    async def _apply(self, deltas: dict[str, ServiceDelta], now: float) -> list[MonitorResult]:
        """Each monitor's decision; one failing monitor costs only its own result this tick."""
        names = [s for s in deltas if s in self.monitors]
        if not names:
            return []
        got = await asyncio.gather(*(self.monitors[s].apply.remote(deltas[s], now) for s in names),
                                   return_exceptions=True)
        results: list[MonitorResult] = []
        for name, res in zip(names, got, strict=True):
            if isinstance(res, BaseException):
                logger.error("monitor for %s failed this tick: %s", name, res)
                if isinstance(res, ray.exceptions.ActorDiedError):
                    self.monitors.pop(name, None)  # retired elsewhere or gone: asked for again next tick
            else:
                results.append(res)
        return results

    def _retire(self) -> None:
        """Forget idle traffic-only services and tell the supervisor (which stops their monitor
        once no observer tracks them)."""
        gone = self.body.retire_idle()
        if not gone:
            return
        for name in gone:
            self.monitors.pop(name, None)
            self._held.pop(name, None)
            task = self._starting.pop(name, None)
            if task is not None:
                task.cancel()
        self.supervisor.retire.remote(self.index, gone)

    async def _until_ready(self, name: str) -> None:
        try:
            await self.monitors[name].state.remote()
        except Exception:
            logger.exception("monitor for %s did not start; its deltas go to it anyway", name)


__all__ = ["ObserverLinks"]
