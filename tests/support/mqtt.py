"""Small helpers for tests that talk to the real broker through :class:`adapters.mqtt.bus.MqttBus`.

Typical use::

    async with running_bus(broker_url) as bus:
        got = Collector()
        await bus.subscribe(f"{prefix}/#", got)
        await bus.publish(f"{prefix}/x", {"a": 1}, qos=1)
        [msg] = await got.wait_for(1)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import orjson

from adapters.mqtt.bus import Message, MqttBus, MqttConfig


def unique_prefix(name: str = "t") -> str:
    """A topic prefix no other test uses, e.g. ``test/roundtrip/3f2a9c1b``."""
    return f"test/{name}/{uuid.uuid4().hex[:8]}"


class Collector:
    """A bus handler that keeps every message it gets; ``await wait_for(n)`` until it has ``n``.

    Pass it to ``bus.subscribe(filter, collector)``. ``messages`` is the list in arrival order.
    """

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._changed = asyncio.Event()

    def __call__(self, msg: Message) -> None:
        self.messages.append(msg)
        self._changed.set()

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[Message]:
        """Wait until at least ``n`` messages arrived; returns all of them. AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(self.messages)} of {n} messages within {timeout}s: "
                                     f"{[m.topic for m in self.messages[:10]]}")
            self._changed.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return list(self.messages)

    async def assert_quiet(self, seconds: float = 0.2) -> None:
        """Assert that nothing (more) arrives within ``seconds``."""
        before = len(self.messages)
        await asyncio.sleep(seconds)
        assert len(self.messages) == before, f"unexpected messages: {self.messages[before:]}"

    @property
    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.messages]

    def json(self) -> list[Any]:
        """Every payload decoded as JSON."""
        return [orjson.loads(m.payload) for m in self.messages]


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> None:
    """Poll ``predicate`` until true; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@asynccontextmanager
async def running_bus(url: str, *, connect_timeout: float = 5.0, config: dict[str, Any] | None = None,
                      **bus_kwargs: Any) -> AsyncIterator[MqttBus]:
    """A started, connected :class:`MqttBus` for ``url``; stopped on exit.

    ``config`` holds :class:`MqttConfig` overrides, ``bus_kwargs`` go to :class:`MqttBus`.
    """
    bus = MqttBus(config=MqttConfig.from_url(url, env={}, **(config or {})), **bus_kwargs)
    await bus.start()
    try:
        await bus.wait_connected(connect_timeout)
        yield bus
    finally:
        await bus.stop()
