"""The infrastructure checker's body on the chassis, without Ray: a FakeClock, probes given as a
``ProbeSet`` (what a registry entry builds) and a stand-in supervisor whose methods are called as
``.remote(...)`` the way the body calls the real actor's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from actors.clock import FakeClock
from actors.infra_checker import InfraCheckerBody, components_for
from actors.settings import OperateSettings
from adapters.probes import PROBES, ProbeSet
from policies.infrastructure.checks import ProbeResult, Problem
from tests.support.waiting import eventually


class _Method:
    def __init__(self, fn: Callable[..., Awaitable[Any]]) -> None:
        self.remote = fn


class Supervisor:
    """Records what a checker reports; ``health`` is what ``status()`` answers."""

    def __init__(self, health: dict[str, Any] | None = None) -> None:
        self.reports: list[tuple[str, dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]] = []
        self.alerts: list[dict[str, Any]] = []
        self.health = health or {}
        self.infrastructure_report = _Method(self._report)
        self.alert = _Method(self._alert)
        self.status = _Method(self._status)
        self.pod_status = _Method(self._pods)

    async def _report(self, component: str, health: dict[str, Any], message: dict[str, Any] | None,
                      alert: dict[str, Any] | None) -> None:
        self.reports.append((component, health, message, alert))
        if alert is not None:
            self.alerts.append(alert)

    async def _alert(self, alerts: list[dict[str, Any]]) -> None:
        self.alerts.extend(alerts)

    async def _status(self) -> dict[str, Any]:
        return {"health": {"infrastructure": self.health}}

    async def _pods(self, pods: dict[str, Any]) -> list[str]:
        return []


class Redis:
    """A probe whose next results are set by the test."""

    component = "redis"

    def __init__(self, up: bool) -> None:
        self.up = up
        self.closed = False

    async def check(self) -> ProbeResult:
        if self.up:
            return ProbeResult.build(component="redis", latency_ms=1.0)
        return ProbeResult.build(component="redis", latency_ms=1.0, error="refused",
                                 problems=[Problem(code="unreachable", severity="critical", message="refused")])

    async def close(self) -> None:
        self.closed = True


def settings(tmp: Path) -> OperateSettings:
    return OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id="c1", store_url=f"sqlite:///{tmp}/i.db")


def test_components_come_from_the_registry(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert components_for(s) == ["mqtt_broker"]
    with_db = OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id="c1", check_redis=("redis://h:6379",),
                              emqx_api="http://emqx:18083")
    assert components_for(with_db) == ["emqx_cluster", "redis"]
    assert list(PROBES)[:2] == ["mqtt_broker", "emqx_cluster"]


async def test_restarted_checker_resumes_the_outage_and_announces_recovery(tmp_path: Path) -> None:
    """After a restart the announced outage is read back from the supervisor, so the first good
    check announces the recovery; the restart is alerted, then resolved after that check."""
    clock = FakeClock()
    sup = Supervisor({"redis": {"status": "error", "outageSinceEpoch": clock.now() - 60, "severity": "critical"}})
    probe = Redis(up=True)
    body = InfraCheckerBody(settings(tmp_path), "redis", sup, clock=clock, probes=ProbeSet(probes={"r": probe}))
    body.restarted_at = clock.now()  # what start_when_restarted records when Ray restarted the actor
    await body.ensure_started()
    await eventually(lambda: any(m is not None for _, _, m, _ in sup.reports), 5.0, "the recovery message")
    (message,) = [m for _, _, m, _ in sup.reports if m is not None]
    assert message["type"] == "infrastructure_recovered" and message["component"] == "redis"
    restart = [a for a in sup.alerts if a["labels"]["alertname"] == "InfraCheckerRestarted"]
    assert len(restart) == 2 and restart[-1]["endsAt"] is not None
    await body.stop()
    assert probe.closed


async def test_unregistered_component_is_a_configuration_error(tmp_path: Path) -> None:
    """A component no probe is registered for starts, and every check reports it misconfigured."""
    sup = Supervisor()
    body = InfraCheckerBody(settings(tmp_path), "rabbitmq", sup, clock=FakeClock())
    await body.ensure_started()
    assert body.setup_error is not None and "rabbitmq" in body.setup_error
    await eventually(lambda: sup.reports, 5.0, "a health report")
    assert sup.reports[0][1]["status"] == "misconfigured"
    await body.stop()
