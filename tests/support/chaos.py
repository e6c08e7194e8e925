"""Infrastructure faults under traffic, shared by tests/chaos and benchmarks/chaos: a private
mosquitto that keeps sessions across a restart, a PostgreSQL that can be stopped and started on
the same port, and a steady caller that counts what was answered."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

from adapters.mqtt.bus import MqttBus, MqttConfig
from adapters.runtime.processes import (
    ChildService,
    Mosquitto,
    free_port,
    init_postgres_datadir,
    postgres_workdir,
    start_postgres_datadir,
)
from sdk import ServiceClient
from sdk.errors import ServiceCallError
from tests.support.waiting import eventually


class PersistentBroker:
    """The project's mosquitto with ``persistence true``: sessions (subscriptions and queued QoS 1
    messages) are saved on SIGTERM and read back when it starts again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mosquitto: Mosquitto | None = None
        self.workdir: Path | None = None
        self.service: ChildService | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> ChildService:
        if self.mosquitto is None:
            self.mosquitto = Mosquitto(port=self.port)
            self.workdir = self.mosquitto.workdir
            self.mosquitto.extra_config = ("persistence true", f"persistence_location {self.workdir}/",
                                           "autosave_interval 1")
        self.service = self.mosquitto.start()
        return self.service

    def terminate(self) -> None:
        """SIGTERM: mosquitto writes its sessions to disk and exits."""
        if self.service is not None:
            self.service.terminate()

    def stop(self) -> None:
        self.terminate()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


class RestartablePostgres:
    """A PostgreSQL whose data directory outlives a stop, so it can start again on the same port."""

    def __init__(self) -> None:
        self.workdir = postgres_workdir("sfa-chaos-pg-")
        self.datadir = init_postgres_datadir(self.workdir)
        self.service = start_postgres_datadir(self.datadir, self.workdir)
        self.url, self.port = self.service.url, self.service.port

    def pause(self) -> None:
        self.service.terminate()

    def resume(self) -> None:
        self.service = start_postgres_datadir(self.datadir, self.workdir, port=self.port)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.service.terminate()
        shutil.rmtree(self.workdir, ignore_errors=True)


class SteadyCaller:
    """Calls ``service.ok`` every ``every_s`` seconds on its own bus; counts answers and errors."""

    def __init__(self, broker_url: str, service: str, *, every_s: float = 0.05, timeout: float = 5.0) -> None:
        self.service = service
        self.every_s = every_s
        self.timeout = timeout
        self.bus = MqttBus(config=MqttConfig.from_url(broker_url))
        self.client = ServiceClient(self.bus)
        self.answered = 0
        self.errors: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.bus.start()
        await self.bus.wait_connected(10)
        await self.client.start()
        self._task = asyncio.create_task(self._run())

    async def _one(self) -> None:
        try:
            await self.client.call(self.service, "ok", {}, timeout=self.timeout)
            self.answered += 1
        except ServiceCallError as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    async def _run(self) -> None:
        while True:
            task = asyncio.create_task(self._one())
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            await asyncio.sleep(self.every_s)  # the traffic's pace, not synchronisation

    async def wait_answered(self, n: int, timeout: float) -> None:
        target = self.answered + n
        deadline = time.monotonic() + timeout
        while self.answered < target:
            assert time.monotonic() < deadline, f"only {self.answered} of {target} calls answered after {timeout} s"
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._inflight):
            task.cancel()
        await self.client.close()
        await self.bus.stop()


async def wait_until(predicate: Any, timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``predicate`` (sync or async) every ``every`` s until it returns something truthy
    (predicates here may make calls, so a slower poll than ``eventually``'s default)."""
    return await eventually(predicate, timeout, what, interval=every)


async def observer_counters(cluster: str, index: int = 0) -> dict[str, int]:
    """An observer's counters (calls, responses, fastFailed, pending…), from its actor."""
    import ray

    observer = ray.get_actor(f"sfa-observer-{cluster}-{index}", namespace="sfa-ops")
    counters: dict[str, int] = await observer.counters.remote()
    return counters


def breaker_closed(ops: Any, service: str) -> bool:
    """No breaker event for ``service`` seen yet, or the last one closed it."""
    events = [e for e in ops.watcher.on("/circuit-breaker") if e.get("service") == service and e.get("to")]
    return not events or events[-1]["to"] == "closed"


async def quiet_window(ops: Any, caller: SteadyCaller, calls: int = 10) -> bool:
    """``calls`` more calls answered without the observer fast-failing one."""
    start = await observer_counters(ops.cluster)
    await caller.wait_answered(calls, 30)
    return (await observer_counters(ops.cluster))["fastFailed"] == start["fastFailed"]


async def close_by_calls(client: ServiceClient, ops: Any, service: str) -> bool:
    """One trial call to ``service``; True when it was not fast-failed by the observer (its breaker is
    closed: an idle service's breaker needs calls to pass half-open)."""
    before = (await observer_counters(ops.cluster))["fastFailed"]
    try:
        await client.call(service, "ok", {}, timeout=5)
    except ServiceCallError:
        return False
    return (await observer_counters(ops.cluster))["fastFailed"] == before and breaker_closed(ops, service)
