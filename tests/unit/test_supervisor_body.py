"""``SupervisorBody`` without Ray or a broker: ``FakeClock``, ``InMemoryStore`` and ``CapturingBus``,
and an in-process stand-in for the actors it owns (monitors, observers, the alert manager, the
infrastructure checker). The stand-in is not Ray: ``handle.method.remote(...)`` runs the method as a
task on this loop, and a monitor's ``preemptive_open`` answers with what the real ``MonitorCore``
returns. The monitor results fed to ``report`` come from the real ``MonitorCore`` too."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from actors.clock import FakeClock
from actors.monitor import STATE_NAMESPACE
from actors.settings import OperateSettings
from actors.supervisor import SupervisorBody
from adapters.testing.doubles import CapturingBus, InMemoryStore
from policies.breaker.settings import load_breaker_policy
from policies.health.monitor import MonitorCore
from policies.health.status import load_health_policy
from policies.observation.correlation import ServiceDelta
from protocol import parse_model
from protocol.system import (
    BreakerState,
    BreakerStateChange,
    CascadingFailurePrevented,
    ServiceUnavailable,
    SystemHealth,
)

T0 = 1_734_258_600.0


class _Method:
    def __init__(self, actor: StandIn, name: str) -> None:
        self.actor, self.name = actor, name

    def remote(self, *args: Any) -> asyncio.Future[Any]:
        self.actor.calls.append((self.name, args))
        impl: Callable[..., Awaitable[Any]] | None = getattr(self.actor, f"do_{self.name}", None)

        async def run() -> Any:
            return None if impl is None else await impl(*args)

        return asyncio.ensure_future(run())


class StandIn:
    """One of the supervisor's actors, in process: records every call; ``do_<method>`` answers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, method: str) -> _Method:
        if method.startswith("do_"):
            raise AttributeError(method)
        return _Method(self, method)

    def called(self, method: str) -> list[tuple[Any, ...]]:
        return [args for m, args in self.calls if m == method]


def core(service: str) -> MonitorCore:
    breaker = load_breaker_policy().for_service(service).model_copy(update={"open_timeout": 5.0})
    return MonitorCore(service=service, cluster_id="c", breaker=breaker, health=load_health_policy(), now=T0)


class MonitorStandIn(StandIn):
    def __init__(self, service: str) -> None:
        super().__init__(f"monitor-{service}")
        self.core = core(service)

    async def do_preemptive_open(self, reason: str, now: float) -> tuple[dict[str, Any], ...]:
        return self.core.preemptive_open(now, reason)


class FailingObserver(StandIn):
    def __init__(self, failures: int) -> None:
        super().__init__("observer-0")
        self.failures = failures

    async def do_start(self, known: list[str] | None) -> None:
        if self.failures and known is not None:
            self.failures -= 1
            raise ConnectionError("observer not up yet")


class Children:
    """The supervisor's ``Children`` in process."""

    def __init__(self, observer_failures: int = 0) -> None:
        self.monitors: dict[str, MonitorStandIn] = {}
        self.observers: list[StandIn] = []
        self.am = StandIn("alertmanager")
        self.checker = StandIn("infra-mqtt_broker")
        self.observer_failures = observer_failures
        self.killed: list[StandIn] = []

    def alertmanager(self) -> StandIn:
        return self.am

    def monitor(self, service: str) -> MonitorStandIn:
        assert service not in self.monitors, f"monitor {service} created twice"
        self.monitors[service] = MonitorStandIn(service)
        return self.monitors[service]

    def security(self) -> dict[str, Any]:
        raise AssertionError("security is off in these settings")

    def observer(self, index: int) -> StandIn:
        self.observers.append(FailingObserver(self.observer_failures))
        return self.observers[-1]

    def checkers(self) -> dict[str, Any]:
        return {"mqtt_broker": self.checker}

    def kill(self, handle: StandIn) -> None:
        self.killed.append(handle)


@pytest.fixture
def settings(tmp_path: Path) -> OperateSettings:
    (tmp_path / "dependencies.yaml").write_text("dependencies:\n  Orders: [Payments]\nmax_preemptive_open_percent: 100\n")
    return OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id="c", services=("Payments", "Orders"),
                           security=False, metric_rules=False, policies_dir=str(tmp_path))


def body_for(settings: OperateSettings, children: Children) -> tuple[SupervisorBody, CapturingBus, InMemoryStore]:
    clock = FakeClock(T0)
    store, bus = InMemoryStore(clock=clock), CapturingBus()
    body = SupervisorBody(settings, clock=clock, store=store, bus=bus, children=children,  # type: ignore[arg-type]
                          export=lambda families: None)
    return body, bus, store


def delta(service: str, outcomes: list[tuple[float, int | None]], presence: dict[str, bool] | None = None,
          calls: int | None = None) -> ServiceDelta:
    d = ServiceDelta(service, calls=len(outcomes) if calls is None else calls, outcomes=outcomes, presence=presence)
    d.methods = {"pay": len(outcomes)}
    return d


async def test_ticks_publish_breakers_health_and_the_cascade(settings: OperateSettings) -> None:
    """Start, then two observer ticks: a breaker opening is published (event and retained state,
    through the outbox, marked published once acked) and alerted; the health summary shows it; the
    service going down opens its dependent's breaker on its monitor before cascading_failure_prevented."""
    children = Children()
    body, bus, store = body_for(settings, children)
    await body.ensure_started()
    try:
        assert sorted(children.monitors) == ["Orders", "Payments"]
        assert children.observers[0].called("start")[0] == (["Orders", "Payments"],)
        assert children.am.called("start") and children.checker.called("start")

        payments = core("Payments")
        body.clock.advance(1)  # type: ignore[attr-defined]
        r = payments.apply([delta("Payments", [(0.01, -32603)] * 10)], now=body.clock.now())
        await body.report(0, [r], {"calls": 10}, {})
        [event] = bus.payloads("system/c/circuit-breaker")
        assert parse_model(BreakerStateChange, event).to_state == "open"
        [state] = bus.on("system/c/circuit-breaker/Payments")
        assert state.retain and parse_model(BreakerState, state.json()).state == "open"
        assert await store.outbox_pending(10) == []
        assert [len(await store.outbox_query(kind="breaker"))] == [2]
        [alerts] = children.am.called("ingest")
        assert [a["labels"]["alertname"] for a in alerts[0]] == ["CircuitBreakerOpen"]

        await body.health_step()
        health = parse_model(SystemHealth, bus.payloads("system/c/health")[-1])
        assert health.services["Payments"].breaker == "open" and health.observed.calls == 10

        body.clock.advance(1)  # type: ignore[attr-defined]
        now = body.clock.now()
        payments.apply([delta("Payments", [(0.01, None)] * 3, presence={"i1": True})], now=now)
        r = payments.apply([delta("Payments", [], presence={"i1": False}, calls=0)], now=now)
        await body.report(0, [r], {"calls": 13}, {})
        assert children.monitors["Orders"].called("preemptive_open") == [("Dependency Payments is unavailable", now)]
        errors = bus.on("system/c/errors")
        assert [p.json()["type"] for p in errors] == ["service_unavailable", "cascading_failure_prevented"]
        parse_model(ServiceUnavailable, errors[0].json())
        assert parse_model(CascadingFailurePrevented, errors[1].json()).affected_services == ["Orders"]
        order = [p.topic if p.topic != "system/c/errors" else p.json()["type"] for p in bus.published]
        assert order.index("system/c/circuit-breaker/Orders") < order.index("cascading_failure_prevented")
        assert (await body.status())["breakers"] == {"Payments": "open", "Orders": "open"}
    finally:
        await body.stop()
    assert len(children.killed) == 5  # two monitors, the observer, the checker, the alert manager


async def test_a_start_that_fails_partway_is_retried_whole_without_duplicates(settings: OperateSettings) -> None:
    """The observer's start fails the first time: ensure_started raises; the next call starts again
    and completes, with each monitor and observer created once."""
    children = Children(observer_failures=1)
    body, _, _ = body_for(settings, children)
    with pytest.raises(ConnectionError):
        await body.ensure_started()
    assert not body.started
    await body.ensure_started()
    try:
        assert body.started
        assert len(children.observers) == 1 and len(children.observers[0].called("start")) >= 2
        assert sorted(children.monitors) == ["Orders", "Payments"]
        assert len(children.am.called("start")) == 2
        await body.ensure_started()  # started: nothing runs again
        assert len(children.am.called("start")) == 2
    finally:
        await body.stop()


async def test_start_restores_breakers_and_republishes_what_a_crash_left(settings: OperateSettings) -> None:
    """In the store before the start: a monitor's saved state with its breaker open, and an outbox
    row never marked published. The start republishes the row (then marks it) and the status shows
    the breaker open before any tick."""
    children = Children()
    body, bus, store = body_for(settings, children)
    await store.open()
    saved = core("Payments")
    saved.apply([delta("Payments", [(0.01, -32603)] * 10)], now=T0)
    await store.state_put(STATE_NAMESPACE, "Payments", saved.snapshot())
    await store.outbox_add("system/c/errors", {"type": "left-over"}, qos=1, kind="tier2")
    await body.ensure_started()
    try:
        assert bus.payloads("system/c/errors") == [{"type": "left-over"}]
        await body.outbox.flush(1.0)
        assert await store.outbox_pending(10) == []
        assert (await body.status())["breakers"] == {"Payments": "open"}
    finally:
        await body.stop()
