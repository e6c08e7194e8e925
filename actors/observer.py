"""Observer actor: watches calls, responses, presence and UI changes on the broker, correlates them
in-process (``policies.observation.correlation``), and once per tick hands per-service deltas to the service
monitors and their decisions to the supervisor (``actors.observer_tick``). It answers on a service's
behalf: -32503 "Circuit Breaker Open" for new calls while a breaker refuses them, and -32503 "Service
Temporarily Unavailable" for every pending call when a service goes down — at once when the Last Will
of its last online instance is believed (``actors.observer_presence``), else on the monitor's tick.

With several observers, calls, responses and UI changes arrive through MQTT 5 shared
subscriptions (``$share/sfa-ops-{cluster}/…``): each message reaches one observer. A pair is
owned by the observer its reply topic names (``policies.observation.sharing``); the observer that receives a
half it does not own forwards it, unparsed where the topic or Response Topic says enough, in one
batch per owner every ``forward_every`` (one actor call per batch, never per message). Presence
stays a plain subscription: every observer must see it.

Intake cannot be turned against anyone (``policies.observation.intake``): sfa-ops answers only on a checked
reply topic; other calls are counted and never answered. Which services get a monitor is bounded
(``policies.supervision.discovery``). Each tick reports its decisions to the supervisor before any answer is
sent, and one answer that cannot be sent is counted without stopping the others.

Traces: a -32503 answer carries the call's own ``traceparent``/``tracestate`` user properties, and
while a tracer provider is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` in the actor's environment,
see ``adapters.mqtt.tracing``) the refusal is recorded as a span of sfa-ops, child of the caller's span,
with a ``circuit_open`` or ``service_unavailable`` event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import ray
from opentelemetry import trace

from actors.chassis import Chassis
from actors.clock import Clock, SystemClock
from actors.loops import run_every
from actors.observer_presence import InstanceWatch
from actors.observer_tick import ObserverLinks
from actors.settings import OperateSettings
from adapters.mqtt import tracing
from adapters.mqtt.bus import Message, MqttBus
from policies.health.monitor import MonitorResult, Unavailable
from policies.health.status import load_health_policy
from policies.observation.answers import circuit_open_answer, unavailable_answer
from policies.observation.config import ObservationPolicy, load_observation_policy
from policies.observation.correlation import Correlator, ServiceDelta
from policies.observation.intake import IntakeCall, Refused, read_call
from policies.observation.sharing import EarlyResponses, ForwardBatches, Half, decode_batch, owner_of
from policies.supervision.discovery import ServiceAdmission
from protocol import topics
from protocol.intake import is_call_id

logger = logging.getLogger("sfa_ops.observer")

_IDLE_EVALUATION_S = 1.0  # services without traffic are still evaluated this often (damping, recovery)


class ObserverBody(Chassis):
    """The observer without Ray: message handlers and the tick's steps (testable with ``FakeClock``
    and ``CapturingBus``); ``ensure_started()`` connects, links to the other actors and starts the
    loops.

    Every call payload is counted exactly once across observers: as a tracked call (``calls``), a
    call to an unknown service beyond the discovery cap (``unknownServices``), ``malformed`` or
    ``rejected`` (a reply topic sfa-ops never publishes on). A payload is counted where it is
    parsed: by the observer that owns its reply topic, or by the one that received it when no
    observer owns it (refused, or no reply topic). Forwarded halves go out through
    :meth:`take_forward` and come in through :meth:`on_forwarded`. Presence is counted by
    :class:`~actors.observer_presence.InstanceWatch`.
    """

    what = "observer"

    def __init__(self, *, settings: OperateSettings, index: int = 0, clock: Clock | None = None,
                 bus: MqttBus | None = None, policy: ObservationPolicy | None = None,
                 tracer_provider: trace.TracerProvider | None = None) -> None:
        self.settings = settings
        self.index = index
        self.count = max(1, settings.observers)
        self.clock = clock or SystemClock()
        self.policy = policy or load_observation_policy(settings.policies_dir)
        self.correlator = Correlator(call_timeout_s=self.policy.call_timeout,
                                     per_service_timeout_s=self.policy.per_service_timeouts(),
                                     pending_cap=self.policy.pending_cap,
                                     audit=settings.security and settings.audit_calls)
        self.bus = bus or MqttBus(config=settings.mqtt_config(), client_id=f"observer-{settings.cluster_id}-{index}",
                                  max_payload_bytes=self.policy.max_payload_bytes, incoming_queue_size=200_000)
        # Each observer admits its share of traffic-only names: together they never pass the cap.
        self.admission = ServiceAdmission(configured=settings.services,
                                          max_discovered=settings.max_discovered_services // self.count,
                                          idle_retire_s=self.policy.discovered_idle_retire)
        self.malformed = 0
        self.rejected = 0
        self.answer_failed = 0
        self.ui_changes = 0
        self._last_eval: dict[str, float] = {}
        self._service_cache: dict[str, str | None] = {}
        self._tracing = tracing.TracerSource("sfa_ops.observer", tracer_provider)
        self.instances = InstanceWatch(cluster_id=settings.cluster_id, index=index, bus=self.bus, clock=self.clock,
                                       policy=self.policy, health=load_health_policy(settings.policies_dir),
                                       correlator=self.correlator, admission=self.admission,
                                       answer_pending=self._answer_pending, failed=self._answer_failed)
        self._tick_no = 0
        self.forward = ForwardBatches(index=index, count=self.count, max_batch=self.policy.forward_batch_cap)
        self.early = EarlyResponses(hold_s=self.policy.early_response_hold, cap=self.policy.early_response_cap)
        self.share_group = f"sfa-ops-{settings.cluster_id}" if self.count > 1 else None
        """With one observer nothing is shared (plain subscriptions, nothing forwarded)."""
        self.links: ObserverLinks | None = None
        self._known_given = False
        self._loops: list[asyncio.Task[None]] = []

    @property
    def known(self) -> set[str]:
        """Every service this observer tracks (configured, present, admitted from traffic)."""
        return self.admission.monitored()

    def restore(self, services: list[str] | tuple[str, ...]) -> None:
        """Services monitored before (from the supervisor): evaluated from the first tick."""
        self._known_given = True
        self.admission.restore(services, self.clock.now())

    # -- lifecycle ----------------------------------------------------------------------------

    async def _start(self) -> None:
        """Link to the other actors, restore the monitored services (asked from the supervisor when
        nobody passed them: a restart by Ray), connect and subscribe, then start the loops."""
        links = ObserverLinks(self)
        if not self._known_given:
            try:
                self.admission.restore(await links.monitored(), self.clock.now())
            except Exception:
                logger.exception("observer %d: monitored services unknown; learnt again from traffic", self.index)
        await self.subscribe()
        await self.bus.wait_connected(30)
        self.links = links
        self._loops.append(asyncio.create_task(
            run_every(self.policy.tick, links.tick, name=f"observer-{self.index}", logger=logger),
            name=f"observer-{self.index}-tick"))
        if self.count > 1:
            self._loops.append(asyncio.create_task(links.forward_loop(), name=f"observer-{self.index}-forward"))

    async def subscribe(self) -> None:
        """Start the bus (idempotent) and register every subscription (idempotent per handler)."""
        await self.bus.start()
        group = self.share_group
        # QoS 1: with the persistent session the broker queues what arrives while we reconnect (a
        # response missed after its call was seen would count as a timeout against a healthy service).
        await self.bus.subscribe(topics.CALLS_FILTER, self.on_call, qos=1, shared_group=group)
        await self.bus.subscribe(topics.RESPONSES_FILTER, self.on_response, qos=1, shared_group=group)
        await self.bus.subscribe(topics.UI_CHANGES_FILTER, self.on_ui_change, qos=1, shared_group=group)
        await self.instances.subscribe()

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        self.instances.stop()
        await self.bus.flush(2.0)
        await self.bus.stop()

    # -- handlers (per message: cheap, never raise) --------------------------------------------

    def _service(self, topic: str) -> str | None:
        cached = self._service_cache.get(topic, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        name = topics.service_of_call_topic(topic)
        if len(self._service_cache) < 10_000:
            self._service_cache[topic] = name
        return name

    def on_call(self, msg: Message) -> None:
        now = self.clock.now()
        trace = tracing.trace_headers(msg.user_properties)
        if self.count > 1 and msg.response_topic is not None:
            owner = owner_of(msg.response_topic, self.count)
            if owner != self.index:  # the property names the owner: forwarded unparsed
                self.forward.add(owner, Half(True, now, msg.topic, msg.payload, msg.response_topic,
                                             msg.correlation_data, trace))
                return
        self._call(msg.topic, msg.payload, msg.response_topic, msg.correlation_data, trace, now, forwarded=False)

    def _call(self, topic: str, payload: bytes, response_topic: str | None, correlation_data: bytes | None,
              trace: tracing.Pairs, now: float, *, forwarded: bool) -> None:
        """One call payload received at ``now`` (here, or by the observer that forwarded it)."""
        service = self._service(topic)
        call = read_call(payload, response_topic, correlation_data) if service else None
        if service is None or not isinstance(call, IntakeCall):
            if isinstance(call, Refused) and call.kind == "rejected":
                self.rejected += 1
            else:
                self.malformed += 1
            return
        reply_to = call.reply_to
        if reply_to is not None and self.count > 1 and not forwarded:
            owner = owner_of(reply_to, self.count)
            if owner != self.index:
                self.forward.add(owner, Half(True, now, topic, payload, response_topic, correlation_data, trace))
                return
        if not self.admission.admit(service, now):
            return  # counted by the admission as an unknown service: no monitor, nothing kept
        answer = self.correlator.on_call(service, call.doc, reply_to, call.correlation_id, now, trace)
        if reply_to is not None and self.count > 1 and len(self.early):
            key = (reply_to, call.call_id)
            if key in self.correlator.pending:
                held = self.early.take(key)
                if held is not None:  # its response came first (this call was forwarded later)
                    self.correlator.on_response(reply_to, held[1], max(held[0], now))
        if answer is not None:
            try:
                self.bus.publish_nowait(answer.reply_to, circuit_open_answer(answer, now), qos=1,
                                        correlation_data=correlation_data, user_properties=answer.trace)
            except Exception:
                self._answer_failed("circuit-open answer")
                return
            self._trace_refusal(answer.trace, "circuit_open", answer.service, answer.call_id,
                                {"sfa.retry_after_s": answer.retry_after_s})

    def on_response(self, msg: Message) -> None:
        now = self.clock.now()
        if self.count > 1:
            owner = owner_of(msg.topic, self.count)
            if owner != self.index:  # its topic is the reply topic: forwarded unparsed
                self.forward.add(owner, Half(False, now, msg.topic, msg.payload))
                return
        self._response(msg.topic, msg.payload, now)

    def _response(self, topic: str, payload: bytes, received: float) -> None:
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.malformed += 1
            return
        if type(doc) is not dict or "id" not in doc or not is_call_id(doc["id"]):
            self.malformed += 1
            return
        if self.count > 1:
            key = (topic, doc["id"])
            # Its call may still be on its way from another observer: held, not unmatched yet.
            if key not in self.correlator.pending and self.early.hold(key, received, doc, self.clock.now()):
                return
        self.correlator.on_response(topic, doc, received)

    # -- forwarding between observers ------------------------------------------------------------

    def take_forward(self) -> dict[int, list[Half]]:
        """Batches to send now, per owner index; call ``self.forward.sent(owner)`` after each send."""
        return self.forward.take()

    def on_forwarded(self, halves: list[Half]) -> None:
        """Halves another observer received and this one owns; one bad half never stops the rest."""
        for h in halves:
            try:
                if h.is_call:
                    self._call(h.topic, h.payload, h.response_topic, h.correlation_data, h.trace, h.received,
                               forwarded=True)
                else:
                    self._response(h.topic, h.payload, h.received)
            except Exception:
                self.malformed += 1
                logger.exception("observer %d: a forwarded message could not be handled", self.index)

    def on_ui_change(self, msg: Message) -> None:
        self.ui_changes += 1

    # -- the tick --------------------------------------------------------------------------------

    def collect(self) -> tuple[float, dict[str, ServiceDelta], dict[tuple[str, str], int]]:
        """Expire, drain, and add empty deltas for idle services due an evaluation."""
        self.instances.release_held()
        now = self.clock.now()
        self.correlator.expire(now)
        self.correlator.counters.unmatched_responses += self.early.expire(now)
        deltas, edges = self.correlator.drain()
        self._tick_no = self.instances.outages.begin_tick()
        for name in self.known:
            if name not in deltas and now - self._last_eval.get(name, 0.0) >= _IDLE_EVALUATION_S:
                deltas[name] = ServiceDelta(name)
        for name in deltas:
            self._last_eval[name] = now
        return now, deltas, edges

    def retire_idle(self) -> list[str]:
        """Traffic-only services idle long enough (and with no call in flight): forgotten here."""
        now = self.clock.now()
        gone = []
        for name in self.admission.retire_idle(now):
            if self.correlator.has_inflight(name):
                self.admission.restore([name], now)
                continue
            self.correlator.forget(name)
            self.instances.forget(name)
            self._last_eval.pop(name, None)
            gone.append(name)
        return gone

    def refresh_breakers(self, results: list[MonitorResult]) -> None:
        """The monitors' breaker views, used to fast-fail calls from now on."""
        for r in results:
            v = r.view
            self.correlator.set_breaker(r.service, v.state, v.open_until, v.trial_permits, v.epoch)

    def answer_unavailable(self, results: list[MonitorResult], now: float) -> int:
        """Answer every pending call of services declared unavailable; one failed answer is counted
        and never stops the others."""
        return sum(self._answer_pending(r.service, r.unavailable, now) for r in results
                   if r.unavailable is not None)

    def _answer_pending(self, service: str, u: Unavailable, now: float) -> int:
        answered = 0
        for p in self.correlator.take_pending(service, now):
            try:
                self.bus.publish_nowait(p.reply_to, unavailable_answer(p, u.reason, u.estimated_recovery,
                                                                       u.retry_after_s, now), qos=1,
                                        user_properties=p.trace)
                answered += 1
            except Exception:
                self._answer_failed("unavailable answer")
                continue
            self._trace_refusal(p.trace, "service_unavailable", p.service, p.call_id,
                                {"sfa.reason": u.reason, "sfa.retry_after_s": u.retry_after_s})
        return answered

    def reconcile(self, results: list[MonitorResult]) -> list[MonitorResult]:
        """This tick's results with the outages already published by event marked so; publishes the
        ``service_recovered`` of an announced outage the monitor never saw (``policies.health.outage``)."""
        results, recovered = self.instances.outages.reconcile(results, self._tick_no, self.clock.now())
        for msg in recovered:
            try:
                self.bus.publish_nowait(topics.system_errors(self.settings.cluster_id), msg, qos=1)
            except Exception:
                self._answer_failed("service_recovered event")
        return results

    def _trace_refusal(self, headers: tracing.Pairs, event: str, service: str, call_id: Any,
                       attributes: dict[str, str | float]) -> None:
        """A span of sfa-ops answering for ``service``, child of the caller's; never raises."""
        tracer = self._tracing.get() if headers else None
        if tracer is None:
            return
        try:
            tracing.record_refusal(tracer, headers, service, call_id, event, attributes)
        except Exception:
            logger.exception("observer %d: a refusal span could not be recorded", self.index)

    def apply_results(self, results: list[MonitorResult], now: float) -> int:
        """Refresh breaker views and answer pending calls of services declared unavailable."""
        self.refresh_breakers(results)
        return self.answer_unavailable(results, now)

    def _answer_failed(self, what: str) -> None:
        self.answer_failed += 1
        if self.answer_failed == 1 or self.answer_failed % 1000 == 0:
            logger.exception("observer %d: a %s could not be sent (%d so far)", self.index, what,
                             self.answer_failed)

    def counters(self) -> dict[str, int]:
        c = self.correlator.counters
        bus = self.bus.stats()
        dropped = int(bus["oversized"]) + int(bus["incoming_dropped"]) + c.pending_overflow + self.forward.dropped
        return {"calls": c.calls, "responses": c.responses, "timeouts": c.timeouts, "malformed": self.malformed + self.instances.malformed,
                "rejected": self.rejected, "unknownServices": self.admission.refused,
                "answerFailed": self.answer_failed, "capped": c.capped,
                "dropped": dropped, "fastFailed": c.fast_failed, "uiChanges": self.ui_changes,
                "unmatchedResponses": c.unmatched_responses, "pending": len(self.correlator.pending),
                "auditDropped": self.correlator.audit_dropped, "activityDropped": self.correlator.activity_dropped,
                "forwarded": self.forward.forwarded,
                "forwardDropped": self.forward.dropped, "earlyMatched": self.early.matched,
                "presenceRefused": self.admission.presence_refused if self.index == 0 else 0,
                **self.instances.counters()}


@ray.remote(num_cpus=0, max_restarts=-1)
class Observer:
    """Ray shell around :class:`ObserverBody`. Restarted by Ray (its process died), it starts itself
    (``start_when_restarted``), asking the supervisor for the monitored services, so an open breaker
    refuses calls from the first tick again; the supervisor's idempotent ``start`` is the backstop."""

    def __init__(self, settings: OperateSettings, index: int) -> None:
        logging.basicConfig(level=logging.INFO)
        tracing.configure_tracing("sfa-ops")  # only when OTEL_EXPORTER_OTLP_ENDPOINT is set
        self.body = ObserverBody(settings=settings, index=index)
        self.body.start_when_restarted(f"observer {index}")

    async def start(self, known: list[str] | None = None) -> None:
        """Connect and start ticking; ``known`` services are evaluated from the first tick. Idempotent."""
        if known is not None:
            self.body.restore(known)
        await self.body.ensure_started()

    async def ensure_started(self) -> None:
        await self.body.ensure_started()

    async def forwarded(self, batch: bytes) -> None:
        """Halves of pairs this observer owns, received by another observer (``encode_batch``)."""
        self.body.on_forwarded(decode_batch(batch))

    async def counters(self) -> dict[str, int]:
        return self.body.counters()

    async def stop(self) -> None:
        await self.body.stop()
