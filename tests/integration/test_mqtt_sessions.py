"""MqttBus persistent sessions (MQTT 5 ``clean_start=False`` with a Session Expiry Interval) against a
real mosquitto with ``persistence true`` (tests.support.chaos.PersistentBroker): what a broker keeps
for a client that lost its connection reaches it afterwards, subscriptions come back after a broker
restart, and a clean stop ends the session."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from adapters.mqtt.bus import Message, MqttBus, MqttConfig
from tests.support.chaos import PersistentBroker, wait_until


@pytest.fixture
def broker() -> Iterator[PersistentBroker]:
    b = PersistentBroker()
    b.start()
    yield b
    b.stop()


def persistent(url: str, client_id: str) -> MqttBus:
    return MqttBus(config=MqttConfig.from_url(url, clean_start=False, session_expiry_s=60), client_id=client_id)


async def lose_connection(bus: MqttBus) -> None:
    """The connection goes away without ending the session (as when the process is killed)."""
    assert bus._runner is not None
    bus._closed = True
    bus._runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await bus._runner
    bus._runner = None


async def test_messages_queued_while_away_reach_the_right_handlers(broker: PersistentBroker) -> None:
    """Two filters subscribed in one order; the process goes away; QoS 1 messages to both arrive at the
    broker; a new process with the same client id subscribes them in the other order and still gets
    each queued message on the handler of its own filter (identifiers follow the filter, not the order)."""
    got_a: list[str] = []
    got_b: list[str] = []
    first = persistent(broker.url, "resume-1")
    await first.start()
    await first.subscribe("chaos/a", lambda m: None, qos=1)
    await first.subscribe("chaos/b", lambda m: None, qos=1)
    await first.wait_connected(10)
    await lose_connection(first)
    async with MqttBus(config=MqttConfig.from_url(broker.url)) as pub:
        await pub.wait_connected(10)
        for i in range(3):
            await pub.publish("chaos/a", f"a{i}", qos=1)
            await pub.publish("chaos/b", f"b{i}", qos=1)
        await pub.flush(10)
    second = persistent(broker.url, "resume-1")
    await second.subscribe("chaos/b", lambda m: got_b.append(m.payload.decode()), qos=1)
    await second.subscribe("chaos/a", lambda m: got_a.append(m.payload.decode()), qos=1)
    await second.start()
    try:
        await wait_until(lambda: len(got_a) >= 3 and len(got_b) >= 3, 10, "the queued messages")
        assert got_a == ["a0", "a1", "a2"] and got_b == ["b0", "b1", "b2"]
        assert second.stats()["sessions_resumed"] == 1
    finally:
        await second.stop()


async def test_subscriptions_survive_a_broker_restart_once_each(broker: PersistentBroker) -> None:
    """After a broker restart the resumed session and the re-sent subscriptions give one copy of each
    message; a clean stop ends the session (the next connect with the id starts a new one)."""
    got: list[Message] = []
    bus = persistent(broker.url, "resume-2")
    await bus.start()
    await bus.subscribe("chaos/r/+", got.append, qos=1)
    await bus.wait_connected(10)
    broker.terminate()
    await wait_until(lambda: not bus.connected, 10, "the bus to see the broker go")
    broker.start()
    await bus.wait_connected(30)
    assert bus.stats()["sessions_resumed"] == 1, bus.stats()
    async with MqttBus(config=MqttConfig.from_url(broker.url)) as pub:
        await pub.wait_connected(10)
        for i in range(5):
            await pub.publish(f"chaos/r/{i}", b"x", qos=1)
        await pub.publish("chaos/r/end", b"x", qos=1)
        await pub.flush(10)
    await wait_until(lambda: any(m.topic == "chaos/r/end" for m in got), 10, "the last message")
    assert sorted(m.topic for m in got) == sorted([*(f"chaos/r/{i}" for i in range(5)), "chaos/r/end"])
    # mosquitto counts a kept session in $SYS/broker/clients/total (active and inactive clients):
    # after the clean stop only the watcher is left.
    totals: list[str] = []
    async with MqttBus(config=MqttConfig.from_url(broker.url)) as watch:
        await watch.subscribe("$SYS/broker/clients/total", lambda m: totals.append(m.payload.decode()), qos=0)
        await wait_until(lambda: totals and totals[-1] == "2", 10, "the bus and the watcher counted")
        await bus.stop()
        await wait_until(lambda: totals[-1] == "1", 10, "the bus's session gone from the broker")
    again = persistent(broker.url, "resume-2")
    async with again:
        await again.wait_connected(10)
        assert again.stats()["sessions_resumed"] == 0
