"""The service monitor's body on the chassis, without Ray: FakeClock and InMemoryStore injected.
Concurrent first calls share one start; a monitor built again on the same store (what Ray's
restart amounts to) comes back with the breaker it had saved."""

from __future__ import annotations

import asyncio
from pathlib import Path

from actors.clock import FakeClock
from actors.monitor import STATE_NAMESPACE, MonitorBody
from actors.settings import OperateSettings
from adapters.testing.doubles import InMemoryStore
from policies.observation.correlation import ServiceDelta
from tests.support.waiting import eventually


def settings(tmp: Path) -> OperateSettings:
    return OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id="c1", store_url=f"sqlite:///{tmp}/m.db")


def failures(n: int) -> ServiceDelta:
    d = ServiceDelta("Users", calls=n, outcomes=[(0.01, -32603)] * n, trials=[], presence=None)
    d.methods = {"getUser": n}
    return d


async def test_concurrent_first_calls_build_one_core(tmp_path: Path) -> None:
    clock = FakeClock()
    store = InMemoryStore(clock=clock)
    opens = 0
    opened = store.open

    async def counting_open() -> None:
        nonlocal opens
        opens += 1
        await opened()

    store.open = counting_open  # type: ignore[method-assign]
    body = MonitorBody(settings(tmp_path), "Users", clock=clock, store=store)
    states = await asyncio.gather(*(body.state() for _ in range(5)))
    assert opens == 1 and body.started and all(s["breaker"]["state"] == "closed" for s in states)


async def test_restarted_monitor_restores_its_open_breaker(tmp_path: Path) -> None:
    clock = FakeClock()
    store = InMemoryStore(clock=clock)
    body = MonitorBody(settings(tmp_path), "Users", clock=clock, store=store)
    result = await body.apply(failures(20), clock.now())
    assert [e["to"] for e in result.breaker_events] == ["open"]

    async def saved() -> bool:
        snap = await store.state_get(STATE_NAMESPACE, "Users")
        return snap is not None and snap["breaker"]["state"] == "open"

    await eventually(saved, 5.0, "the open breaker saved")
    await body.flush()
    again = MonitorBody(settings(tmp_path), "Users", clock=clock, store=store)
    assert (await again.state())["breaker"]["state"] == "open"
