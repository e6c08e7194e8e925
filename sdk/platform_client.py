"""A client that listens to the platform (seed: ``PlatformAwareClient``, ``ResilientServiceClient``):
it fails fast without publishing while a service is known to be down, adapts timeouts and writes
to infrastructure trouble, serves cached results (flagged stale) when it cannot call, and tells the
application what is going on through typed events.

::

    client = PlatformAwareClient(ServiceClient(bus), cluster="prod", cacheable={"Users": {"getUser": 300}})
    await client.start()
    client.on_event(lambda ev: print(ev))
    res = await client.call("Users", "getUser", {"userId": "u1"})   # CallResult
    res.value, res.stale

Subscribes to ``system/{cluster}/errors``, ``/emergency``, ``/circuit-breaker`` and the retained
``/circuit-breaker/+``. Decisions are made by ``sdk.strategy.AdaptiveStrategy`` (pure).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from adapters.mqtt.bus import Message
from protocol import topics
from protocol.base import parse_model
from protocol.exceptions import ProtocolError
from protocol.names import is_service_name
from protocol.rpc import UserContext
from protocol.system import (
    BreakerState,
    BreakerStateChange,
    CascadingFailurePrevented,
    InfrastructureError,
    InfrastructureRecovered,
    ServiceDegraded,
    ServiceRecovered,
    ServiceUnavailable,
)
from sdk.cache import ResultCache, cache_key
from sdk.client import DEFAULT_CALL_TIMEOUT, Params, ServiceClient
from sdk.client_events import (
    BreakerChangedEvent,
    CallResult,
    CascadePreventedEvent,
    ClientEvent,
    EventCallback,
    InfrastructureRecoveredEvent,
    InfrastructureWarningEvent,
    ServiceDegradedEvent,
    ServiceRecoveredEvent,
    ServiceUnavailableEvent,
    StaleDataServedEvent,
)
from sdk.errors import (
    ServiceCallError,
    ServiceTemporarilyUnavailableException,
    ServiceTimeoutException,
    WritesDeferredException,
    retry_seconds,
)
from sdk.strategy import AdaptiveStrategy, CallPlan
from sdk.trust import SystemTrust, verified

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- client


class PlatformAwareClient:
    """Wraps a ``ServiceClient`` with the platform's availability knowledge; see the module doc."""

    def __init__(
        self,
        client: ServiceClient,
        *,
        cluster: str,
        strategy: AdaptiveStrategy | None = None,
        cache: ResultCache | None = None,
        cacheable: Mapping[str, Mapping[str, float]] | None = None,
        clock: Callable[[], float] = time.time,
        trust: SystemTrust | None = None,
    ) -> None:
        """``cacheable`` maps service → method → how long (s) a result may be served stale;
        ``trust``: believe only system messages signed by sfa-ops (``sdk.trust``; refusals counted
        in ``trust.counts``)."""
        self.trust = trust
        self.client = client
        self.cluster = cluster
        self.strategy = strategy or AdaptiveStrategy()
        self.cache = cache or ResultCache()
        self._ttl = {(s, m): float(t) for s, methods in (cacheable or {}).items() for m, t in methods.items()}
        self._clock = clock
        self._callbacks: list[EventCallback] = []
        self._tasks: set[asyncio.Future[None]] = set()
        self.counts = {"fast_failed": 0, "writes_deferred": 0, "stale_served": 0, "system_malformed": 0,
                       "system_mismatched": 0}

    async def start(self) -> None:
        """Subscribe to the response topic and the system topics."""
        await self.client.start()
        bus = self.client.bus
        on_system, on_breaker = self._verified(self._on_system), self._verified(self._on_breaker)
        await bus.subscribe(topics.system_errors(self.cluster), on_system, qos=1)
        await bus.subscribe(topics.system_emergency(self.cluster), on_system, qos=1)
        await bus.subscribe(topics.circuit_breaker_events(self.cluster), on_breaker, qos=1)
        await bus.subscribe(topics.breaker_state_filter(self.cluster), on_breaker, qos=1)

    def _verified(self, handler: Callable[[Message], None]) -> Callable[[Message], None]:
        """``handler`` behind the signature and age check, when ``trust`` is set."""
        return verified(handler, self.trust)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.client.close()

    def on_event(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` (sync or async) for every event; returns an unsubscriber."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def mark_cacheable(self, service: str, method: str, ttl: float) -> None:
        self._ttl[(service, method)] = ttl

    # ------------------------------------------------------------ calls

    async def call(
        self,
        service: str,
        method: str,
        params: Params = None,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        user_context: UserContext | Mapping[str, Any] | None = None,
        write: bool | None = None,
    ) -> CallResult:
        """Call unless the strategy says not to; see ``CallResult`` and ``sdk.errors``."""
        now = self._clock()
        plan = self.strategy.plan(
            service, method, base_timeout=timeout, now=now, offline=not self.client.bus.connected, write=write
        )
        ttl = self._ttl.get((service, method))
        key = cache_key(service, method, params) if ttl is not None else None
        if plan.action != "call":
            stale = (
                self._stale(key, ttl, service, method, plan.reason or "unavailable")
                if plan.serve_stale
                else None
            )
            if stale is not None:
                return stale
            raise self._refusal(plan, service, method)
        if plan.serve_stale:  # offline: the cache beats a call that may wait for a reconnect
            stale = self._stale(key, ttl, service, method, "offline")
            if stale is not None:
                return stale
        try:
            value = await self.client.call(
                service, method, params, timeout=plan.timeout, user_context=user_context
            )
        except ServiceTimeoutException as exc:
            if exc.local:
                if self.strategy.record_timeout(service, now=self._clock()):
                    view = self.strategy.view(service)
                    self._emit(
                        ServiceUnavailableEvent(
                            self._clock(),
                            service,
                            view.reason or "timeouts",
                            self.strategy.config.timeout_unavailable_s,
                            None,
                        )
                    )
            else:
                self.strategy.record_answer(service)
            stale = self._stale(key, ttl, service, method, "timeout")
            if stale is not None:
                return stale
            raise
        except ServiceTemporarilyUnavailableException as exc:
            self.strategy.record_answer(service)
            self._learn_unavailable(service, exc)
            stale = self._stale(key, ttl, service, method, exc.reason or "unavailable")
            if stale is not None:
                return stale
            raise
        except ServiceCallError:
            self.strategy.record_answer(service)
            raise
        self.strategy.record_answer(service)
        if key is not None:
            self.cache.put(key, value, now=self._clock())
        return CallResult(value)

    def _refusal(self, plan: CallPlan, service: str, method: str) -> ServiceTemporarilyUnavailableException:
        if plan.action == "defer_write":
            self.counts["writes_deferred"] += 1
            return WritesDeferredException(
                f"{service}.{method} not sent: {plan.reason}",
                retry_after=plan.retry_after,
                reason=plan.reason,
                local=True,
                service=service,
                method=method,
            )
        self.counts["fast_failed"] += 1
        return ServiceTemporarilyUnavailableException(
            f"Service {service} is temporarily unavailable ({plan.reason}); retry after {plan.retry_after or 0:.0f}s",
            retry_after=plan.retry_after,
            reason=plan.reason,
            circuit_open=plan.circuit_open,
            local=True,
            service=service,
            method=method,
        )

    def _stale(
        self, key: Any, ttl: float | None, service: str, method: str, reason: str
    ) -> CallResult | None:
        if key is None or ttl is None:
            return None
        hit = self.cache.get(key, now=self._clock(), max_age=ttl)
        if hit is None:
            return None
        value, age = hit
        self.counts["stale_served"] += 1
        self._emit(StaleDataServedEvent(self._clock(), service, method, age, reason))
        return CallResult(value, stale=True, age_seconds=age)

    def _learn_unavailable(self, service: str, exc: ServiceTemporarilyUnavailableException) -> None:
        now = self._clock()
        if exc.circuit_open:
            if self.strategy.breaker(service, "open", now=now, retry_after=exc.retry_after):
                self._emit(BreakerChangedEvent(now, service, "open", exc.retry_after))
        elif self.strategy.service_unavailable(
            service, reason=exc.reason or "unavailable", now=now, retry_after=exc.retry_after
        ):
            self._emit(
                ServiceUnavailableEvent(now, service, exc.reason or "unavailable", exc.retry_after, None)
            )

    # ------------------------------------------------------------ system messages

    def _on_system(self, msg: Message) -> None:
        try:
            doc = orjson.loads(msg.payload)
            kind = doc.get("type") if isinstance(doc, dict) else None
            self._apply_system(kind, doc)
        except (orjson.JSONDecodeError, ProtocolError) as exc:
            self.counts["system_malformed"] += 1
            logger.warning("ignored a malformed message on %s: %s", msg.topic, exc)

    def _apply_system(self, kind: Any, doc: dict[str, Any]) -> None:
        now = self._clock()
        st = self.strategy
        if kind == "service_unavailable":
            su = parse_model(ServiceUnavailable, doc)
            _check_service(su.service)
            retry_s = retry_seconds(doc, now)
            if st.service_unavailable(
                su.service,
                reason=su.reason,
                now=now,
                estimated_recovery=su.estimated_recovery,
                retry_after=retry_s,
            ):
                self._emit(
                    ServiceUnavailableEvent(now, su.service, su.reason, retry_s, su.estimated_recovery)
                )
        elif kind == "service_recovered":
            sr = parse_model(ServiceRecovered, doc)
            _check_service(sr.service)
            if st.service_recovered(sr.service, now=now):
                self._emit(ServiceRecoveredEvent(now, sr.service))
        elif kind == "service_degraded":
            sd = parse_model(ServiceDegraded, doc)
            self._emit(ServiceDegradedEvent(now, sd.service, sd.reason))
        elif kind == "cascading_failure_prevented":
            cf = parse_model(CascadingFailurePrevented, doc)
            self._emit(CascadePreventedEvent(now, cf.origin_service, tuple(cf.affected_services)))
        elif kind == "infrastructure_error":
            ie = parse_model(InfrastructureError, doc)
            if st.infrastructure_error(
                ie.component,
                severity=ie.severity,
                message=ie.message,
                now=now,
                estimated_resolution=ie.estimated_resolution,
            ):
                self._emit(InfrastructureWarningEvent(now, ie.component, ie.severity, ie.message, ie.impact))
        elif kind == "infrastructure_recovered":
            ir = parse_model(InfrastructureRecovered, doc)
            if st.infrastructure_recovered(ir.component, now=now):
                self._emit(InfrastructureRecoveredEvent(now, ir.component))

    def _on_breaker(self, msg: Message) -> None:
        """A breaker change (``…/circuit-breaker``) or retained state (``…/circuit-breaker/{Service}``:
        the service is the topic's, and a body naming another one is counted and ignored)."""
        try:
            doc = orjson.loads(msg.payload)
            kind = doc.get("type") if isinstance(doc, dict) else None
            now = self._clock()
            topic = topics.parse(msg.topic)
            until: float | None = None
            if kind == "circuit_breaker_state_change" and topic is not None and topic.kind == "circuit_breaker_events":
                change = parse_model(BreakerStateChange, doc)
                service, state, instant = change.service, change.to_state, change.retry_after
            elif kind == "circuit_breaker_state" and topic is not None and topic.kind == "circuit_breaker_state":
                current = parse_model(BreakerState, doc)
                if current.service != topic["service"]:
                    self.counts["system_mismatched"] += 1
                    logger.warning("ignored a breaker state for %r on the topic of %r", current.service[:64],
                                   topic["service"])
                    return
                service, state, instant = topic["service"], current.state, current.retry_after
                until = current.open_until.timestamp() if current.open_until is not None else None
            else:
                self.counts["system_mismatched"] += 1
                return
            if not is_service_name(service):
                raise ProtocolError("service", "not a valid service name")
            retry = None if instant is None else max(0.0, instant.timestamp() - now)
            if self.strategy.breaker(service, state, now=now, retry_after=retry, open_until=until):
                self._emit(BreakerChangedEvent(now, service, state, retry))
        except (orjson.JSONDecodeError, ProtocolError) as exc:
            self.counts["system_malformed"] += 1
            logger.warning("ignored a malformed breaker message on %s: %s", msg.topic, exc)

    def _emit(self, event: ClientEvent) -> None:
        for callback in list(self._callbacks):
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except Exception:
                logger.exception("event callback %r failed on %s", callback, type(event).__name__)


def _check_service(name: str) -> None:
    """A service named in a system message must be a valid name (the client keeps state per name)."""
    if not is_service_name(name):
        raise ProtocolError("service", "not a valid service name")
