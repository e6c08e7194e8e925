"""PlatformAwareClient driven by real system messages on mosquitto: fast-fail without publishing,
the 3-timeouts rule, stale cache, adaptive timeouts and deferred writes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from adapters.mqtt.bus import MqttBus
from protocol import topics
from protocol.system import (
    BreakerState,
    BreakerStateChange,
    InfrastructureError,
    ServiceRecovered,
    ServiceUnavailable,
)
from sdk.client import ServiceClient
from sdk.client_events import (
    BreakerChangedEvent,
    ClientEvent,
    InfrastructureWarningEvent,
    ServiceRecoveredEvent,
    ServiceUnavailableEvent,
    StaleDataServedEvent,
)
from sdk.errors import (
    ServiceTemporarilyUnavailableException,
    ServiceTimeoutException,
    WritesDeferredException,
)
from sdk.platform_client import PlatformAwareClient
from sdk.runtime import ServiceRuntime
from sdk.service import Service
from tests.support.mqtt import Collector, running_bus, wait_until

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    name: str
    cluster: str
    client: PlatformAwareClient
    runtime: ServiceRuntime
    bus: MqttBus
    events: list[ClientEvent]

    async def system(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        await self.bus.publish(topic, payload, qos=1, retain=retain)

    async def wait_event(self, kind: type[ClientEvent]) -> ClientEvent:
        await wait_until(lambda: any(isinstance(e, kind) for e in self.events), timeout=5)
        return next(e for e in self.events if isinstance(e, kind))

    def served(self) -> int:
        return self.runtime.stats().get("received", 0)


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def rig(broker_url: str) -> AsyncIterator[Rig]:
    name, cluster = f"Users-{uuid.uuid4().hex[:8]}", f"c{uuid.uuid4().hex[:8]}"
    svc = Service(name)

    @svc.function("getUser", cacheable=True)
    async def get_user(user_id: str) -> dict[str, str]:
        return {"id": user_id}

    @svc.function("createUser")
    async def create_user(email: str) -> str:
        return email

    @svc.function("wait", timeout=5.0)
    async def wait(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    runtime = ServiceRuntime.connect(svc, broker_url=broker_url, cluster=cluster)
    async with runtime, running_bus(broker_url) as bus:
        client = PlatformAwareClient(ServiceClient(bus), cluster=cluster, cacheable={name: {"getUser": 60.0}})
        events: list[ClientEvent] = []
        client.on_event(events.append)
        await client.start()
        yield Rig(name, cluster, client, runtime, bus, events)
        await client.close()


def unavailable(rig: Rig, recovery: str = "2-5 minutes") -> bytes:
    return ServiceUnavailable(
        cluster_id=rig.cluster,
        service=rig.name,
        reason="no running pods",
        estimated_recovery=recovery,
        timestamp=now(),
        correlation_id="inc-1",
    ).to_json()


async def test_service_unavailable_fails_fast_without_publishing(rig: Rig, broker_url: str) -> None:
    """After a service_unavailable notice, calls raise at once and nothing reaches the service."""
    await rig.system(topics.system_errors(rig.cluster), unavailable(rig))
    ev = await rig.wait_event(ServiceUnavailableEvent)
    assert isinstance(ev, ServiceUnavailableEvent) and ev.service == rig.name
    watcher = Collector()
    await rig.bus.subscribe(topics.service_call(rig.name), watcher)
    before = rig.served()
    with pytest.raises(ServiceTemporarilyUnavailableException) as info:
        await rig.client.call(rig.name, "createUser", {"email": "a@b.c"})
    assert info.value.local and not info.value.circuit_open and 100 <= (info.value.retry_after or 0) <= 120
    await watcher.assert_quiet(0.2)
    assert rig.served() == before

    await rig.system(
        topics.system_errors(rig.cluster),
        ServiceRecovered(
            cluster_id=rig.cluster, service=rig.name, timestamp=now(), correlation_id="inc-1"
        ).to_json(),
    )
    await rig.wait_event(ServiceRecoveredEvent)
    assert (await rig.client.call(rig.name, "createUser", {"email": "a@b.c"})).value == "a@b.c"


async def test_retained_open_breaker_fails_fast_until_closed(broker_url: str, rig: Rig) -> None:
    """A retained open breaker state seen at start fails calls fast; a closed change clears it."""
    async with running_bus(broker_url) as bus:
        state = BreakerState(
            service=rig.name,
            state="open",
            since=now(),
            retry_after=now() + timedelta(seconds=30),
            retry_after_seconds=30,
            open_until=now() + timedelta(seconds=30),
            timestamp=now(),
        )
        await bus.publish(
            topics.circuit_breaker_state(rig.cluster, rig.name), state.to_json(), qos=1, retain=True
        )
        await bus.flush(5)
        late = PlatformAwareClient(ServiceClient(bus), cluster=rig.cluster)
        await late.start()
        await wait_until(lambda: late.strategy.view(rig.name).breaker_state == "open")
        before = rig.served()
        with pytest.raises(ServiceTemporarilyUnavailableException) as info:
            await late.call(rig.name, "getUser", {"user_id": "u"})
        assert info.value.circuit_open and info.value.local
        await asyncio.sleep(0.1)
        assert rig.served() == before
        change = BreakerStateChange(
            service=rig.name,
            topic=topics.service_call(rig.name),
            from_state="open",
            to_state="half_open",
            reason="wait elapsed",
            timestamp=now(),
        )
        await bus.publish(topics.circuit_breaker_events(rig.cluster), change.to_json(), qos=1)
        await wait_until(lambda: late.strategy.view(rig.name).breaker_state == "half_open")
        assert (await late.call(rig.name, "getUser", {"user_id": "u"})).value == {"id": "u"}
        assert any(isinstance(e, BreakerChangedEvent) and e.state == "half_open" for e in rig.events)
        await bus.publish(topics.circuit_breaker_state(rig.cluster, rig.name), b"", qos=1, retain=True)
        await late.close()


async def test_three_timeouts_then_fail_fast(rig: Rig) -> None:
    """Three unanswered calls make the 4th fail fast without publishing (2-minute hold)."""
    ghost = f"Ghost-{uuid.uuid4().hex[:8]}"
    watcher = Collector()
    await rig.bus.subscribe(topics.service_call(ghost), watcher)
    for _ in range(3):
        with pytest.raises(ServiceTimeoutException):
            await rig.client.call(ghost, "getUser", {"user_id": "u"}, timeout=0.15)
    await watcher.wait_for(3)
    with pytest.raises(ServiceTemporarilyUnavailableException) as info:
        await rig.client.call(ghost, "getUser", {"user_id": "u"}, timeout=0.15)
    assert info.value.local and 110 < (info.value.retry_after or 0) <= 120
    await watcher.assert_quiet(0.2)
    assert len(watcher.messages) == 3
    await rig.wait_event(ServiceUnavailableEvent)


async def test_cache_served_stale_while_unavailable(rig: Rig) -> None:
    """A cacheable result is served, flagged stale, while the service is known unavailable."""
    fresh = await rig.client.call(rig.name, "getUser", {"user_id": "u7"})
    assert fresh.value == {"id": "u7"} and not fresh.stale
    await rig.system(topics.system_errors(rig.cluster), unavailable(rig))
    await rig.wait_event(ServiceUnavailableEvent)
    stale = await rig.client.call(rig.name, "getUser", {"user_id": "u7"})
    assert stale.value == {"id": "u7"} and stale.stale
    assert isinstance(await rig.wait_event(StaleDataServedEvent), StaleDataServedEvent)
    with pytest.raises(ServiceTemporarilyUnavailableException):  # not cached: no value to serve
        await rig.client.call(rig.name, "getUser", {"user_id": "other"})


async def test_broker_trouble_lengthens_timeouts(rig: Rig) -> None:
    """After an mqtt_broker infrastructure_error, a call that needs 1.5x the timeout succeeds."""
    with pytest.raises(ServiceTimeoutException):
        await rig.client.call(rig.name, "wait", {"seconds": 0.45}, timeout=0.3)
    err = InfrastructureError(
        cluster_id=rig.cluster,
        component="mqtt_broker",
        severity="critical",
        message="node down",
        impact="slow delivery",
        timestamp=now(),
        correlation_id="i",
    )
    await rig.system(topics.system_emergency(rig.cluster), err.to_json())
    await rig.wait_event(InfrastructureWarningEvent)
    assert (await rig.client.call(rig.name, "wait", {"seconds": 0.45}, timeout=0.3)).value == 0.45


async def test_database_trouble_defers_writes(rig: Rig) -> None:
    """During postgresql trouble writes raise WritesDeferredException unsent; reads go through."""
    err = InfrastructureError(
        cluster_id=rig.cluster,
        component="postgresql_cluster",
        severity="error",
        message="primary unreachable",
        impact="writes fail",
        timestamp=now(),
        correlation_id="i",
    )
    await rig.system(topics.system_errors(rig.cluster), err.to_json())
    await rig.wait_event(InfrastructureWarningEvent)
    before = rig.served()
    with pytest.raises(WritesDeferredException):
        await rig.client.call(rig.name, "createUser", {"email": "x@y.z"})
    assert rig.served() == before
    assert (await rig.client.call(rig.name, "getUser", {"user_id": "u"})).value == {"id": "u"}


async def test_breaker_state_names_its_topic_service(broker_url: str, rig: Rig) -> None:
    """A retained state on ``…/circuit-breaker/{A}`` whose body names another service is counted and
    ignored: the topic (which the broker's ACL protects) says whose breaker it is."""
    other = f"Other-{uuid.uuid4().hex[:8]}"
    forged = BreakerState(service=other, state="open", since=now(), retry_after=now() + timedelta(seconds=30),
                          timestamp=now())
    await rig.system(topics.circuit_breaker_state(rig.cluster, rig.name), forged.to_json())
    await wait_until(lambda: rig.client.counts["system_mismatched"] == 1)
    assert rig.client.strategy.view(rig.name).breaker_state == "closed"
    assert rig.client.strategy.view(other).breaker_state == "closed"
    assert (await rig.client.call(rig.name, "getUser", {"user_id": "u"})).value == {"id": "u"}


async def test_far_future_retry_after_fails_fast_for_the_cap_only(broker_url: str, rig: Rig) -> None:
    """An open event whose ``retryAfter`` is decades away fails calls fast for at most
    ``max_breaker_open_s`` (300 s by default), not until the forged instant."""
    change = BreakerStateChange(service=rig.name, topic=topics.service_call(rig.name), from_state="closed",
                                to_state="open", reason="forged", retry_after=datetime(2099, 1, 1, tzinfo=UTC),
                                timestamp=now())
    await rig.system(topics.circuit_breaker_events(rig.cluster), change.to_json())
    await rig.wait_event(BreakerChangedEvent)
    with pytest.raises(ServiceTemporarilyUnavailableException) as info:
        await rig.client.call(rig.name, "createUser", {"email": "a@b.c"})
    assert info.value.circuit_open and 290 < (info.value.retry_after or 0) <= 300
