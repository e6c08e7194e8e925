"""The shipped ``CapturingBus`` behaves as the real bus does where bodies depend on it: wildcard
routing to each matching handler once, sync and async handlers, validated topics, acknowledged
deliveries, and a failing handler counted without stopping the others."""

from __future__ import annotations

import pytest

from adapters.mqtt.bus import Message, MqttTopicError
from adapters.testing.doubles import CapturingBus


async def test_deliver_routes_by_filter_to_sync_and_async_handlers() -> None:
    """``+`` and ``#`` filters match as in MQTT; a handler subscribed twice runs once."""
    bus, seen = CapturingBus(), []

    def sync(msg: Message) -> None:
        seen.append(("sync", msg.topic))

    async def asynchronous(msg: Message) -> None:
        seen.append(("async", msg.topic))

    await bus.subscribe("a/+/c", sync)
    await bus.subscribe("a/+/c", sync)
    await bus.subscribe("a/#", asynchronous)
    assert await bus.deliver("a/b/c", {"x": 1}) == 2
    assert await bus.deliver("a/b", b"raw") == 1
    assert await bus.deliver("z", "nobody") == 0
    assert seen == [("sync", "a/b/c"), ("async", "a/b/c"), ("async", "a/b")]
    await bus.unsubscribe("a/#")
    assert await bus.deliver("a/b", b"raw") == 0


async def test_failing_handler_is_counted_and_the_others_still_run() -> None:
    bus, seen = CapturingBus(), []

    def broken(msg: Message) -> None:
        raise RuntimeError("boom")

    await bus.subscribe("t", broken)
    await bus.subscribe("#", lambda m: seen.append(m.payload))
    assert await bus.deliver("t", b"1") == 2
    assert bus.handler_errors == 1 and seen == [b"1"]


async def test_publishes_are_recorded_encoded_and_acknowledged() -> None:
    """A dict payload is recorded as the JSON bytes the real bus would send; the delivery is acked."""
    bus = CapturingBus()
    delivery = bus.publish_nowait("system/c1/alerts", {"a": 1}, qos=1, retain=True,
                                  user_properties={"k": "v"}, correlation_data="id")
    assert delivery.acked and await (await bus.publish("x/y", "text")).wait(0)
    [p] = bus.on("system/c1/alerts")
    assert p.payload == b'{"a":1}' and p.qos == 1 and p.retain and p.user_properties == (("k", "v"),)
    assert p.correlation_data == b"id" and bus.payloads("system/c1/alerts") == [{"a": 1}]


@pytest.mark.parametrize("topic", ["a/+", "a/#", ""])
async def test_invalid_topics_are_refused_as_by_the_real_bus(topic: str) -> None:
    bus = CapturingBus()
    with pytest.raises(MqttTopicError):
        bus.publish_nowait(topic, b"")
    with pytest.raises(MqttTopicError):
        await bus.deliver(topic, b"")


async def test_invalid_filter_is_refused() -> None:
    with pytest.raises(MqttTopicError):
        await CapturingBus().subscribe("a/#/b", lambda m: None)
