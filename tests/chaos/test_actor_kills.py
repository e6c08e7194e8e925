"""kill -9 of each kind of sfa-ops actor's own process under traffic (real mosquitto, the session's
local Ray, SQLite, a local webhook as the alert receiver): the actor comes back whole within the
call timeout, the next service crash is published and its pending calls answered, and the state
from before the kill is back (``tests.support.actor_chaos`` describes one trial).

The kinds are killed one after the other in one operations job (each with its own services), so
every kill after the first also shows that the job survived the ones before it."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Iterator

import pytest

from adapters.mqtt.bus import MqttBus, MqttConfig
from sdk import ServiceClient
from tests.support.actor_chaos import CALL_TIMEOUT_S, KINDS, kill_trial, policies
from tests.support.http_receiver import HttpReceiver, http_receiver
from tests.support.operations import Operations, ServiceProcess, operations

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("ray_session")]


@pytest.fixture(scope="module")
def hook() -> Iterator[HttpReceiver]:
    with http_receiver() as rx:
        yield rx


@pytest.fixture(scope="module")
async def ops(ray_session: None, broker_url: str, tmp_path_factory: pytest.TempPathFactory,
              hook: HttpReceiver) -> AsyncIterator[Operations]:
    async with operations(broker_url, tmp_path_factory.mktemp("chaos"), policies=policies(hook.url)) as running:
        yield running


@pytest.fixture(scope="module")
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


@pytest.mark.parametrize("kind", KINDS)
async def test_kill9_under_traffic(kind: str, ops: Operations, client: ServiceClient,
                                   procs: list[ServiceProcess], hook: HttpReceiver) -> None:
    trial = await kill_trial(ops, client, procs, hook, kind)
    detail = json.dumps(trial.as_dict(), default=str)
    assert trial.lost == 0, detail
    assert trial.restored and all(trial.restored.values()), detail
    assert trial.duplicates == 0, detail
    assert not math.isnan(trial.recover_s) and trial.recover_s <= CALL_TIMEOUT_S, detail
