"""The alert manager's body (``AlertManagerBody``) run in-process on the shipped doubles: a
``FakeClock``, an ``InMemoryStore`` and a ``CapturingBus`` — no Ray, broker, database or HTTP server
(the receivers are MQTT ones). What it publishes is parsed with the ``protocol`` model the SDK and
the other consumers parse it with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.alertmanager import AlertManagerBody
from actors.clock import FakeClock
from actors.settings import OperateSettings
from adapters.testing.doubles import CapturingBus, InMemoryStore
from protocol.security import AlertMessage
from tests.support.waiting import eventually

T0 = 1_700_000_000.0
CLUSTER = "c1"
ALERTS = f"system/{CLUSTER}/alerts"
OPS = f"system/{CLUSTER}/ops"
POLICY = """
alerting:
  route:
    receiver: ops
    group_by: [alertname]
    group_wait: 0s
    group_interval: 1m
    repeat_interval: 1h
  receivers:
    - name: ops
      mqtt: {topic: 'system/{cluster}/ops'}
"""

Doubles = tuple[AlertManagerBody, FakeClock, InMemoryStore, CapturingBus]


def make(tmp: Path, clock: FakeClock, store: InMemoryStore, bus: CapturingBus) -> AlertManagerBody:
    settings = OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id=CLUSTER, store_url="sqlite://:memory:",
                               policies_dir=str(tmp))
    # tick_s an hour: the loop runs once at start; the test drives the ticks
    return AlertManagerBody(settings, tick_s=3600, clock=clock, store=store, bus=bus)


@pytest.fixture
async def doubles(tmp_path: Path) -> AsyncIterator[Doubles]:
    (tmp_path / "alerting.yaml").write_text(POLICY)
    clock, store, bus = FakeClock(T0), InMemoryStore(clock=FakeClock(T0)), CapturingBus()
    body = make(tmp_path, clock, store, bus)
    await body.start()
    yield body, clock, store, bus
    await body.stop()


def alert(name: str, **extra: object) -> dict[str, object]:
    return {"labels": {"alertname": name, "severity": "error", "component": "service", "service": "orders"},
            "annotations": {"summary": f"{name} fired"}, "startsAt": T0, **extra}


async def test_an_alert_is_enriched_delivered_and_mirrored_once(doubles: Doubles) -> None:
    """An ingested alert reaches the receiver's topic and the mirror (alerts topic) with its runbook
    and the recent events of its service; the next tick within the repeat interval sends nothing."""
    body, clock, _, bus = doubles
    await body.note_event({"service": "orders", "type": "service_degraded", "timestamp": "2024-05-01T12:00:00Z",
                           "message": "p99 up"})
    result = await body.ingest([alert("OrdersDown"), {"labels": {}}])
    assert (result["accepted"], result["rejected"]) == (1, 1)
    await body._tick()
    [ops] = [AlertMessage.model_validate(p) for p in bus.payloads(OPS)]
    [mirrored] = [AlertMessage.model_validate(p) for p in bus.payloads(ALERTS)]
    for m in (ops, mirrored):
        assert m.receiver == "ops" and m.status == "firing" and m.labels["alertname"] == "OrdersDown"
        assert m.runbook and all({"title", "command"} <= set(s) for s in m.runbook)
        assert '"p99 up"' in m.annotations["recentEvents"]
    status = await body.status()
    assert status["delivery"]["ops"]["sent"] == 1 and status["delivery"]["mirror"]["sent"] == 1
    published = len(bus.published)
    clock.advance(120)
    await body._tick()
    assert len(bus.published) == published


async def test_a_restarted_body_neither_repeats_nor_loses(doubles: Doubles, tmp_path: Path) -> None:
    """A new body on the same store restores the notification log: an alert ingested before the
    'crash' but not yet delivered is delivered at its start (no call needed), once; the one
    delivered before is not sent again."""
    body, clock, store, _ = doubles
    await body.ingest([alert("Before")])
    await body._tick()
    await body.ingest([alert("Pending")])  # saved on ingest, never delivered by this body
    bus = CapturingBus()
    fresh = make(tmp_path, clock, store, bus)
    await fresh.ensure_started()

    async def counted() -> int:  # counted once its first tick has saved the log
        return int((await fresh.status())["delivery"].get("ops", {}).get("sent", 0))

    await eventually(counted, 10, "the pending notification delivered")
    clock.advance(120)
    await fresh._tick()
    names = [AlertMessage.model_validate(p).labels["alertname"] for p in bus.payloads(OPS)]
    assert names == ["Pending"]
    assert (await fresh.status())["dispatcher"]["groups"] == 2
