"""The security analyst's and the audit writer's bodies on the chassis, without Ray or a broker:
FakeClock, InMemoryStore and CapturingBus injected; what the real bus would deliver is handed to
the subscribed handlers, and what the bodies publish is read back through the protocol models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.audit_writer import AuditWriterBody
from actors.clock import FakeClock
from actors.security_analyst import AnalystBody
from actors.security_common import SecurityOptions, active_actions_topic
from actors.settings import OperateSettings
from adapters.testing.doubles import CapturingBus, InMemoryStore
from protocol import parse_model, topics
from protocol.base import rfc3339_from_epoch
from protocol.security import AlertMessage
from protocol.system import AuditAnchor

CLUSTER = "c1"
QUIET = SecurityOptions(alert_flush_s=3600.0, pattern_interval_s=3600.0, baseline_refresh_s=3600.0,
                        audit_flush_s=3600.0, audit_purge_s=3600.0)


def settings(tmp: Path) -> OperateSettings:
    return OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id=CLUSTER, store_url=f"sqlite:///{tmp}/x.db",
                           policies_dir=None, audit_anchor_s=0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def analyst(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[AnalystBody, CapturingBus]]:
    bus = CapturingBus()
    body = AnalystBody(settings(tmp_path), QUIET, clock=clock, store=InMemoryStore(clock=clock), bus=bus)
    yield body, bus
    await body.stop()


@pytest.fixture
async def writer(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[AuditWriterBody, CapturingBus]]:
    bus = CapturingBus()
    body = AuditWriterBody(settings(tmp_path), QUIET, clock=clock, store=InMemoryStore(clock=clock), bus=bus)
    yield body, bus
    await body.stop()


def failed_login(clock: FakeClock, user: str, ip: str) -> dict[str, object]:
    return {"userId": user, "ipAddress": ip, "success": False, "timestamp": rfc3339_from_epoch(clock.now())}


async def test_analyst_starts_once_and_subscribes_its_inputs(analyst: tuple[AnalystBody, CapturingBus]) -> None:
    body, bus = analyst
    assert not body.started
    await body.ensure_started()
    await body.ensure_started()
    assert body.started and bus.connected
    assert {topics.AUTH_FILTER, topics.AUTHZ_FILTER, topics.SERVICE_SECURITY_FILTER, topics.DATA_ACCESS_FILTER,
            active_actions_topic(CLUSTER)} <= set(bus.subscriptions)
    assert len(body._loops) == 3 and not any(t.done() for t in body._loops)


async def test_analyst_brute_force_is_alerted_on_the_bus(analyst: tuple[AnalystBody, CapturingBus],
                                                          clock: FakeClock) -> None:
    """Five failed logins within the window (seed: brute force) → one alert, published (no
    supervisor) on system/{cluster}/alerts as an AlertMessage, stamped with the injected clock."""
    body, bus = analyst
    await body.ensure_started()
    for _ in range(5):
        clock.advance(10)
        assert await bus.deliver("security/auth/login", failed_login(clock, "mallory", "203.0.113.7")) == 1
    await body.run_patterns()  # runs the pattern rules and flushes the pending alerts
    alerts = [parse_model(AlertMessage, p.payload) for p in bus.on(topics.system_alerts(CLUSTER))]
    assert [a.labels["alertname"] for a in alerts] == ["BruteForceAttempt"]
    assert alerts[0].labels["user"] == "mallory" and alerts[0].starts_at.timestamp() == clock.now()
    assert (await body.stats())["counts"]["alerts"] == 1


async def test_audit_writer_records_what_it_receives_and_anchors(writer: tuple[AuditWriterBody, CapturingBus],
                                                                 clock: FakeClock) -> None:
    """An auth event delivered on the bus is appended to the chain at the next flush; the anchor
    names that chain and is published retained."""
    body, bus = writer
    await body.ensure_started()
    assert topics.AUTH_FILTER in bus.subscriptions and len(body._loops) == 2
    await bus.deliver("security/auth/login", failed_login(clock, "alice", "198.51.100.4"))
    await body.flush()
    heads = await body.store.audit_heads()
    assert sum(h.count for h in heads) >= 1
    anchor = await body.anchor()
    assert anchor is not None
    sent = bus.on(topics.audit_anchor(CLUSTER))
    assert len(sent) == 1 and sent[0].retain
    assert parse_model(AuditAnchor, sent[0].payload).chains


async def test_a_failed_start_is_retried(tmp_path: Path, clock: FakeClock) -> None:
    """A start that fails (the store not up) is not left half done: the next call runs it again."""
    bus = CapturingBus()
    store = InMemoryStore(clock=clock)
    body = AuditWriterBody(settings(tmp_path), QUIET, clock=clock, store=store, bus=bus)
    opened = store.open
    calls = 0

    async def flaky_open() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("store not up yet")
        await opened()

    store.open = flaky_open  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await body.ensure_started()
    assert not body.started
    await body.ensure_started()
    assert body.started and calls == 2
    await body.stop()
