"""Signed system state on the real session mosquitto: what operate publishes under system/ verifies
against its public key, and a PlatformAwareClient with ``trust`` ignores (and counts) forged,
re-signed, tampered and stale breaker states while it acts on the genuine ones."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.mqtt.signing import ensure_key_pair, public_key_path
from protocol import topics
from protocol.system import BreakerState
from sdk import ServiceClient, ServiceException, ServiceTemporarilyUnavailableException
from sdk.client_events import BreakerChangedEvent, ClientEvent
from sdk.platform_client import PlatformAwareClient
from sdk.trust import SystemTrust
from tests.support.mqtt import Collector, running_bus, wait_until
from tests.support.operations import ServiceProcess, operations

pytestmark = pytest.mark.integration


def breaker_state(service: str, state: str, at: datetime, retry_after: float = 30.0) -> bytes:
    return BreakerState(service=service, state=state, since=at, retry_after=retry_after,
                        open_until=at + timedelta(seconds=retry_after), timestamp=at).to_json()


@pytest.mark.usefixtures("ray_session")
async def test_operate_signs_what_it_publishes(broker_url: str, tmp_path: Path) -> None:
    """operate --signing-key: every message it publishes under system/{c}/ (breaker events, retained
    states, errors, health) verifies; a trusting client acts on the breaker opening."""
    key = tmp_path / "signing.key"
    ensure_key_pair(key)
    trust = SystemTrust.from_files(public_key_path(key))
    audit = SystemTrust.from_files(public_key_path(key))
    seen = Collector()
    async with operations(broker_url, tmp_path, extra={"signing_key": str(key)}) as ops:
        await ops.bus.subscribe(f"system/{ops.cluster}/#", seen, qos=1)
        svc = ServiceProcess(broker_url, ops.cluster, "Payments").start()
        try:
            async with running_bus(broker_url) as bus:
                client = PlatformAwareClient(ServiceClient(bus), cluster=ops.cluster, trust=trust)
                events: list[ClientEvent] = []
                client.on_event(events.append)
                await client.start()
                for _ in range(6):
                    with pytest.raises((ServiceException, ServiceTemporarilyUnavailableException)):
                        await client.call("Payments", "fail", {}, timeout=5)
                await wait_until(lambda: any(isinstance(e, BreakerChangedEvent) and e.state == "open"
                                             for e in events), timeout=15)
                await client.close()
        finally:
            svc.stop()
    assert trust.counts["trusted"] >= 1 and trust.refused == 0, trust.counts
    published = [m for m in seen.messages if "/presence/" not in m.topic]
    kinds = {m.topic.removeprefix(f"system/{ops.cluster}/") for m in published}
    assert {"circuit-breaker", "circuit-breaker/Payments", "health"} <= kinds, kinds
    verdicts = {m.topic: audit.check(m) for m in published}
    assert set(verdicts.values()) == {"trusted"}, verdicts


async def test_trusting_client_ignores_forged_breaker_states(broker_url: str, tmp_path: Path) -> None:
    """Unsigned, re-signed with another key, tampered and stale retained breaker states are ignored
    and counted; the genuine signed one, published last, is acted on."""
    cluster, name = f"c{uuid.uuid4().hex[:8]}", f"Users-{uuid.uuid4().hex[:6]}"
    key, rogue = tmp_path / "sfa.key", tmp_path / "rogue.key"
    ensure_key_pair(key)
    ensure_key_pair(rogue)
    topic = topics.circuit_breaker_state(cluster, name)
    now = datetime.now(UTC)
    async with (running_bus(broker_url) as attacker,
                running_bus(broker_url, config={"signing_key_file": str(rogue)}) as rogue_bus,
                running_bus(broker_url, config={"signing_key_file": str(key)}) as sfa,
                running_bus(broker_url) as client_bus):
        trust = SystemTrust.from_files(public_key_path(key))
        client = PlatformAwareClient(ServiceClient(client_bus), cluster=cluster, trust=trust)
        events: list[ClientEvent] = []
        client.on_event(events.append)
        await client.start()
        # A genuine message to copy an envelope from (sfa-ops' real signing path).
        genuine = Collector()
        await attacker.subscribe(topic, genuine, qos=1)
        await sfa.publish(topic, breaker_state(name, "closed", now), qos=1)
        [copy] = await genuine.wait_for(1)

        await attacker.publish(topic, breaker_state(name, "open", now, retry_after=1e9), qos=1)  # unsigned
        await rogue_bus.publish(topic, breaker_state(name, "open", now, retry_after=1e9), qos=1)  # other key
        await attacker.publish(topic, breaker_state(name, "open", now, retry_after=1e9), qos=1,  # tampered
                               user_properties=copy.user_properties)
        await sfa.publish(topic, breaker_state(name, "open", now - timedelta(hours=2)), qos=1)  # replayed, old
        await wait_until(lambda: trust.refused >= 4, timeout=5)
        assert not any(isinstance(e, BreakerChangedEvent) for e in events)
        assert client.strategy.plan(name, "getUser", base_timeout=5, now=now.timestamp(), offline=False).action == "call"

        await sfa.publish(topic, breaker_state(name, "open", datetime.now(UTC)), qos=1, retain=True)
        await wait_until(lambda: any(isinstance(e, BreakerChangedEvent) for e in events), timeout=5)
        await client.close()
        await sfa.publish(topic, b"", qos=1, retain=True)  # clear the retained state
    assert [e.state for e in events if isinstance(e, BreakerChangedEvent)] == ["open"]
    assert {k: trust.counts[k] for k in ("unsigned", "unknown_key", "bad_signature", "stale")} == {
        "unsigned": 1, "unknown_key": 1, "bad_signature": 1, "stale": 1}
    assert trust.counts["trusted"] == 2  # the genuine closed and open states


async def test_forged_retained_state_seen_at_start_is_ignored(broker_url: str, tmp_path: Path) -> None:
    """A forged retained open state already on the broker when the client starts is not believed."""
    cluster, name = f"c{uuid.uuid4().hex[:8]}", f"Orders-{uuid.uuid4().hex[:6]}"
    key = tmp_path / "sfa.key"
    ensure_key_pair(key)
    topic = topics.circuit_breaker_state(cluster, name)
    async with running_bus(broker_url) as attacker, running_bus(broker_url) as client_bus:
        await attacker.publish(topic, breaker_state(name, "open", datetime.now(UTC), retry_after=1e9),
                               qos=1, retain=True)
        await attacker.flush(5)
        trust = SystemTrust.from_files(public_key_path(key))
        client = PlatformAwareClient(ServiceClient(client_bus), cluster=cluster, trust=trust)
        events: list[ClientEvent] = []
        client.on_event(events.append)
        await client.start()
        await wait_until(lambda: trust.counts["unsigned"] == 1, timeout=5)
        assert not events
        await client.close()
        await attacker.publish(topic, b"", qos=1, retain=True)
