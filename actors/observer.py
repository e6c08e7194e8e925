"""Observer actor: watches calls, responses, presence and UI changes on the broker, correlates them
in-process (``policies.correlation``), and once per tick hands per-service deltas to the service
monitors and their decisions to the supervisor. It answers on a service's behalf: -32503 "Circuit
Breaker Open" for new calls while a breaker refuses them, and -32503 "Service Temporarily
Unavailable" for every pending call when a service goes down.

With several observers each owns the calls whose reply topic hashes (CRC-32) to its index: a
response is dropped by the others before it is parsed, so a call and its answer always meet in
the same observer. Calls are parsed by every observer to learn their reply topic.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from typing import Any

import orjson
import ray

from actors.clock import Clock, SystemClock
from actors.loops import run_every
from actors.settings import OperateSettings
from adapters.mqtt import Message, MqttBus
from policies.circuit_breaker import rfc3339
from policies.correlation import Answer, Correlator, Pending, ServiceDelta
from policies.monitoring import MonitorResult
from policies.observation import ObservationPolicy, load_observation_policy
from protocol import topics
from protocol.names import is_service_name

logger = logging.getLogger("sfa_ops.observer")

_IDLE_EVALUATION_S = 1.0  # services without traffic are still evaluated this often (damping, recovery)


def circuit_open_answer(a: Answer, now: float) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": a.call_id,
        "error": {
            "code": -32503,
            "message": "Circuit Breaker Open",
            "data": {
                "errorType": "CircuitBreakerOpen",
                "serviceName": a.service,
                "message": f"Circuit breaker for {a.service} is open; calls are refused until it half-opens",
                "retryAfter": round(a.retry_after_s, 3),
                "correlationId": a.correlation_id,
                "timestamp": rfc3339(now),
            },
        },
    }


def unavailable_answer(p: Pending, reason: str, estimate: str | None, retry_after_s: float,
                       now: float) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": p.call_id,
        "error": {
            "code": -32503,
            "message": "Service Temporarily Unavailable",
            "data": {
                "errorType": "ServiceUnavailable",
                "serviceName": p.service,
                "reason": reason,
                "estimatedRecovery": estimate,
                "retryAfter": round(retry_after_s, 3),
                "correlationId": p.correlation_id,
                "timestamp": rfc3339(now),
            },
        },
    }


class ObserverCore:
    """The observer without Ray: message handlers and the tick, for the actor and for tests."""

    def __init__(self, *, settings: OperateSettings, index: int = 0, clock: Clock | None = None,
                 policy: ObservationPolicy | None = None) -> None:
        self.settings = settings
        self.index = index
        self.count = max(1, settings.observers)
        self.clock = clock or SystemClock()
        self.policy = policy or load_observation_policy(settings.policies_dir)
        self.correlator = Correlator(call_timeout_s=self.policy.call_timeout,
                                     per_service_timeout_s=self.policy.per_service_timeouts(),
                                     pending_cap=self.policy.pending_cap,
                                     audit=settings.security and settings.audit_calls)
        self.bus = MqttBus(config=settings.mqtt_config(),
                           client_id=f"observer-{settings.cluster_id}-{index}",
                           max_payload_bytes=self.policy.max_payload_bytes, incoming_queue_size=200_000)
        self.malformed = 0
        self.ui_changes = 0
        self.presence_prefix = f"system/{settings.cluster_id}/presence/"
        self.known: set[str] = set(settings.services)
        self._last_eval: dict[str, float] = {}
        self._service_cache: dict[str, str | None] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.start()
        await self.bus.subscribe(topics.CALLS_FILTER, self.on_call, qos=0)
        await self.bus.subscribe(topics.RESPONSES_FILTER, self.on_response, qos=0)
        await self.bus.subscribe(topics.UI_CHANGES_FILTER, self.on_ui_change, qos=0)
        if self.index == 0:
            await self.bus.subscribe(topics.presence_filter(self.settings.cluster_id), self.on_presence, qos=1)

    async def stop(self) -> None:
        await self.bus.stop()

    # -- handlers (per message: cheap, never raise) --------------------------------------------

    def _mine(self, reply_to: str) -> bool:
        return self.count == 1 or zlib.crc32(reply_to.encode()) % self.count == self.index

    def _service(self, topic: str) -> str | None:
        cached = self._service_cache.get(topic, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        name = topics.service_of_call_topic(topic)
        if len(self._service_cache) < 10_000:
            self._service_cache[topic] = name
        return name

    def on_call(self, msg: Message) -> None:
        service = self._service(msg.topic)
        if service is None:
            self.malformed += 1
            return
        try:
            doc = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            self.malformed += 1
            return
        if type(doc) is not dict or type(doc.get("method")) is not str or "id" not in doc:
            self.malformed += 1
            return
        reply_to = msg.response_topic or doc.get("replyTo")
        if reply_to is not None and (type(reply_to) is not str or not reply_to):
            reply_to = None
        if reply_to is not None and not self._mine(reply_to):
            return
        if reply_to is None and self.index != 0:
            return  # unanswerable calls are counted once, by observer 0
        corr = doc.get("correlationId")
        if msg.correlation_data is not None:
            corr = msg.correlation_data.decode(errors="replace")
        corr = corr if type(corr) is str else None
        now = self.clock.now()
        answer = self.correlator.on_call(service, doc, reply_to, corr, now)
        if answer is not None:
            self.bus.publish_nowait(answer.reply_to, circuit_open_answer(answer, now), qos=1,
                                    correlation_data=msg.correlation_data)

    def on_response(self, msg: Message) -> None:
        if not self._mine(msg.topic):
            return
        try:
            doc = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            self.malformed += 1
            return
        if type(doc) is not dict or "id" not in doc:
            self.malformed += 1
            return
        self.correlator.on_response(msg.topic, doc, self.clock.now())

    def on_ui_change(self, msg: Message) -> None:
        self.ui_changes += 1

    def on_presence(self, msg: Message) -> None:
        rest = msg.topic[len(self.presence_prefix):].split("/")
        if len(rest) != 2 or not is_service_name(rest[0]) or not rest[1]:
            self.malformed += 1
            return
        try:
            doc = orjson.loads(msg.payload) if msg.payload else {"status": "offline"}
        except orjson.JSONDecodeError:
            self.malformed += 1
            return
        status = doc.get("status") if isinstance(doc, dict) else None
        if status not in ("online", "offline"):
            self.malformed += 1
            return
        self.correlator.on_presence(rest[0], rest[1], status == "online")

    # -- the tick --------------------------------------------------------------------------------

    def collect(self) -> tuple[float, dict[str, ServiceDelta], dict[tuple[str, str], int]]:
        """Expire, drain, and add empty deltas for idle services due an evaluation."""
        now = self.clock.now()
        self.correlator.expire(now)
        deltas, edges = self.correlator.drain()
        self.known.update(deltas)
        for name in self.known:
            if name not in deltas and now - self._last_eval.get(name, 0.0) >= _IDLE_EVALUATION_S:
                deltas[name] = ServiceDelta(name)
        for name in deltas:
            self._last_eval[name] = now
        return now, deltas, edges

    def apply_results(self, results: list[MonitorResult], now: float) -> int:
        """Refresh breaker views and answer pending calls of services declared unavailable."""
        answered = 0
        for r in results:
            v = r.view
            self.correlator.set_breaker(r.service, v.state, v.open_until, v.trial_permits, v.epoch)
            u = r.unavailable
            if u is not None:
                for p in self.correlator.take_pending(r.service, now):
                    self.bus.publish_nowait(p.reply_to, unavailable_answer(p, u.reason, u.estimated_recovery,
                                                                           u.retry_after_s, now), qos=1)
                    answered += 1
        return answered

    def counters(self) -> dict[str, int]:
        c = self.correlator.counters
        bus = self.bus.stats()
        dropped = int(bus["oversized"]) + int(bus["incoming_dropped"]) + c.pending_overflow
        return {"calls": c.calls, "responses": c.responses, "timeouts": c.timeouts, "malformed": self.malformed,
                "dropped": dropped, "fastFailed": c.fast_failed, "uiChanges": self.ui_changes,
                "unmatchedResponses": c.unmatched_responses, "pending": len(self.correlator.pending),
                "auditDropped": self.correlator.audit_dropped, "activityDropped": self.correlator.activity_dropped}


@ray.remote(num_cpus=0, max_restarts=-1)
class Observer:
    """Ray shell around :class:`ObserverCore`: runs the tick loop, talks to monitors/supervisor."""

    def __init__(self, settings: OperateSettings, index: int) -> None:
        logging.basicConfig(level=logging.INFO)
        self.core = ObserverCore(settings=settings, index=index)
        self.settings = settings
        self.index = index
        self.monitors: dict[str, Any] = {}
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, ServiceDelta] = {}
        self.supervisor: Any = None
        self.analyst: Any = None
        self.audit: Any = None
        self._loop: asyncio.Task[None] | None = None
        self._report: Any = None

    async def start(self, known: list[str] | None = None) -> None:
        """Connect and start ticking; ``known`` services are evaluated from the first tick."""
        self.core.known.update(known or ())
        s = self.settings
        self.supervisor = ray.get_actor(s.actor_name("supervisor"), namespace=s.namespace)
        if s.security:
            self.analyst = ray.get_actor(s.actor_name("analyst"), namespace=s.namespace)
            self.audit = ray.get_actor(s.actor_name("audit"), namespace=s.namespace)
        await self.core.start()
        await self.core.bus.wait_connected(30)
        self._loop = asyncio.create_task(
            run_every(self.core.policy.tick, self._tick, name=f"observer-{self.index}", logger=logger),
            name=f"observer-{self.index}-tick")

    async def _tick(self) -> None:
        now, deltas, edges = self.core.collect()
        new = [s for s in deltas if s not in self.monitors]
        if new:
            self.monitors.update(await self.supervisor.monitors_for.remote(new))
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
        refs = [self.monitors[s].apply.remote(d, now) for s, d in deltas.items() if s in self.monitors]
        results: list[MonitorResult] = list(await asyncio.gather(*refs)) if refs else []
        self.core.apply_results(results, now)
        if self._report is not None:
            try:
                await self._report  # surfaces a failed report in this step's log, keeps order
            except Exception:
                logger.exception("supervisor report failed")
        self._report = self.supervisor.report.remote(self.index, results, self.core.counters(), edges)
        activity, audit = self.core.correlator.drain_security()
        # One call per tick each, fire and forget: the analyst and the writer buffer and count.
        if activity and self.analyst is not None:
            self.analyst.activity.remote(activity, now)
        if audit and self.audit is not None:
            self.audit.calls.remote(audit)

    async def _until_ready(self, name: str) -> None:
        try:
            await self.monitors[name].state.remote()
        except Exception:
            logger.exception("monitor for %s did not start; its deltas go to it anyway", name)

    async def counters(self) -> dict[str, int]:
        return self.core.counters()

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
        await self.core.bus.flush(2.0)
        await self.core.stop()
