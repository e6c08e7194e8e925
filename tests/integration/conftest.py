"""Fixtures shared by the operations tests: a connected SDK client and the service processes a test
starts (stopped at the end)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from adapters.mqtt.bus import MqttBus, MqttConfig
from sdk import ServiceClient
from tests.support.operations import ServiceProcess


@pytest.fixture
async def client(broker_url: str) -> AsyncIterator[ServiceClient]:
    bus = MqttBus(config=MqttConfig.from_url(broker_url))
    await bus.start()
    await bus.wait_connected(10)
    c = ServiceClient(bus)
    await c.start()
    yield c
    await c.close()
    await bus.stop()


@pytest.fixture
def procs() -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for p in started:
        p.stop()
