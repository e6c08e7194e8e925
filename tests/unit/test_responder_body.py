"""The incident responder's body (``ResponderBody``) run in-process on the shipped doubles: a
``FakeClock``, an ``InMemoryStore`` and a ``CapturingBus`` — no Ray, broker or database server. What
it publishes is parsed with the ``protocol`` models the SDK parses it with."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from actors.clock import FakeClock
from actors.incident_responder import ResponderBody
from actors.security_common import SecurityOptions, active_actions_topic
from actors.settings import OperateSettings
from adapters.testing.doubles import CapturingBus, InMemoryStore
from policies.security.events import SecurityAlert
from protocol import topics
from protocol.security import ActiveActions, AlertMessage, IncidentMessage

T0 = 1_700_000_000.0
CLUSTER = "c1"


@pytest.fixture
async def doubles() -> AsyncIterator[tuple[ResponderBody, FakeClock, InMemoryStore, CapturingBus]]:
    clock, store, bus = FakeClock(T0), InMemoryStore(clock=FakeClock(T0)), CapturingBus()
    settings = OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id=CLUSTER, store_url="sqlite://:memory:")
    body = ResponderBody(settings, SecurityOptions(), clock=clock, store=store, bus=bus)
    await body.start()
    yield body, clock, store, bus
    await body.stop()


def brute_force(ip: str, at: float) -> SecurityAlert:
    return SecurityAlert(type="brute_force_attempt", severity="critical", source=ip, target="alice",
                         user_id="alice", ip_address=ip, description="burst", timestamp=at)


async def test_start_publishes_the_retained_active_set(
        doubles: tuple[ResponderBody, FakeClock, InMemoryStore, CapturingBus]) -> None:
    """A started responder publishes its (empty) active set, retained, at its clock's time."""
    _, _, _, bus = doubles
    [active] = bus.on(active_actions_topic(CLUSTER))
    assert active.retain
    doc = ActiveActions.model_validate(active.json())
    assert doc.actions == [] and doc.timestamp.timestamp() == T0


async def test_an_alert_becomes_a_stored_and_published_incident(
        doubles: tuple[ResponderBody, FakeClock, InMemoryStore, CapturingBus]) -> None:
    """A security alert is stored as an incident (created at the fake clock's time) and published
    on the incidents topic; the same alert again is a duplicate and publishes nothing more."""
    body, clock, store, bus = doubles
    clock.advance(5)
    alert = brute_force("203.0.113.7", T0).to_wire()
    summary = await body.handle(alert)
    assert summary is not None
    stored = await store.incident_get(summary["incidentId"])
    assert stored is not None and stored.created_at == T0 + 5
    messages = [IncidentMessage.model_validate(p) for p in bus.payloads(topics.system_incidents(CLUSTER))]
    assert messages and {m.incident_id for m in messages} == {summary["incidentId"]}
    assert messages[0].event == "created"
    published = len(bus.published)
    assert await body.handle(alert) is None
    assert body.counts["duplicates"] == 1 and len(bus.published) == published


async def test_a_restarted_body_restores_offenders_from_the_store(
        doubles: tuple[ResponderBody, FakeClock, InMemoryStore, CapturingBus]) -> None:
    """What one body stored, a new body on the same store restores: a repeat offender's second
    incident counts the first."""
    body, clock, store, _ = doubles
    first = await body.handle(brute_force("203.0.113.9", T0).to_wire())
    assert first is not None
    settings = OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id=CLUSTER, store_url="sqlite://:memory:")
    fresh = ResponderBody(settings, SecurityOptions(), clock=clock, store=store, bus=CapturingBus())
    await fresh._restore()
    assert list(fresh.history.incidents["203.0.113.9"]) == list(body.history.incidents["203.0.113.9"])


async def test_a_critical_incident_is_escalated_on_the_emergency_topic_too(
        doubles: tuple[ResponderBody, FakeClock, InMemoryStore, CapturingBus]) -> None:
    """The body carries out what the policy decided: the block is applied (active set, stored
    action), the incident is created and escalated on the incidents and emergency topics, and the
    escalation alert goes out on the alerts topic."""
    body, _, store, bus = doubles
    summary = await body.handle(brute_force("203.0.113.11", T0).to_wire())
    assert summary is not None and summary["escalation"]["level"] == 1
    for topic in (topics.system_incidents(CLUSTER), topics.system_emergency(CLUSTER)):
        events = [IncidentMessage.model_validate(p).event for p in bus.payloads(topic)]
        assert events == ["created", "escalated"], topic
    [escalated] = [AlertMessage.model_validate(p) for p in bus.payloads(topics.system_alerts(CLUSTER))
                   if p["labels"]["alertname"] == "SecurityIncidentEscalated"]
    assert escalated.labels["incident"] == summary["incidentId"] and escalated.labels["severity"] == "error"
    active = ActiveActions.model_validate(bus.payloads(active_actions_topic(CLUSTER))[-1])
    assert [a.target for a in active.actions if a.action == "block_ip"] == ["203.0.113.11"]
    stored = await store.incident_get(summary["incidentId"])
    assert stored is not None and stored.status == "escalated"
    assert [e["result"] for e in stored.data["log"]] == ["applied"] * 3
