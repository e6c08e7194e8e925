"""The audit trail and compliance checks on real services: the AuditWriter actor on mosquitto and
PostgreSQL, the operators' CLIs (drivers.audit, drivers.incidents) on real stores, and a store
that is down."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import ray

from actors.audit_writer import AuditWriter, AuditWriterBody
from actors.security_common import SecurityOptions
from actors.settings import OperateSettings
from adapters.mqtt.bus import MqttBus, MqttConfig
from adapters.runtime.processes import ChildService, free_port, start_postgres
from adapters.store import ActionRecord, IncidentRecord, open_store
from drivers import audit as audit_cli
from drivers import incidents as incidents_cli
from tests.support.operations import Watcher
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

DAY = 86400.0


@pytest.fixture
async def watched(broker_url: str) -> AsyncIterator[tuple[str, Watcher, MqttBus]]:
    cluster = f"a{uuid.uuid4().hex[:8]}"
    watcher = Watcher()
    bus = MqttBus(config=MqttConfig.from_url(broker_url))
    await bus.start()
    await bus.wait_connected(10)
    await bus.subscribe(f"system/{cluster}/#", watcher, qos=1)
    yield cluster, watcher, bus
    await bus.stop()


@pytest.mark.usefixtures("ray_session")
async def test_audit_writer_actor_calls_data_access_violations_and_purge(
        watched: tuple[str, Watcher, MqttBus], pg_database: str, broker_url: str) -> None:
    """Observed calls and data-access events become sanitized, compliance-tagged audit rows in
    PostgreSQL; reading PHI without the role alerts (HIPAA named) and is stored; a retention purge
    removes expired rows, is itself audited, and the chains still verify."""
    cluster, watcher, bus = watched
    settings = OperateSettings(broker_url=broker_url, cluster_id=cluster, store_url=pg_database)
    writer = AuditWriter.remote(settings, SecurityOptions(audit_flush_s=0.1, audit_purge_s=3600))
    try:
        await writer.start.remote()
        now = time.time()
        await writer.calls.remote([
            {"ts": now, "service": "UserManagement", "method": "createUser", "userId": "alice", "sessionId": "s1",
             "correlationId": "c1", "durationMs": 4.2, "code": None, "ipAddress": "192.0.2.1",
             "userAgent": "sdk/1", "params": {"email": "jane@example.com", "password": "hunter2-hunter2"}},
            {"ts": now - 400 * DAY, "service": "Catalog", "method": "list", "userId": "bob", "code": -32004,
             "params": {}},
        ])
        await bus.publish("audit/Clinic/data-access", {"userId": "carol", "collection": "medical_records",
                                                       "operation": "read", "recordIds": ["r1", "r2"],
                                                       "roles": ["nurse_trainee"],
                                                       "timestamp": "2026-01-01T00:00:00Z"}, qos=1)
        # An `error` security alert goes to the default tree's root receiver: Alertmanager's 30 s group_wait.
        alert = await watcher.wait(lambda w: [a for a in w.on("/alerts")
                                              if a["labels"]["alertname"] == "ComplianceViolation"], 45, "violation")
        assert alert[0]["labels"]["regulation"] == "HIPAA §164.312(a)"
        async with open_store(pg_database) as store:

            async def audited() -> dict[str, Any] | None:
                rows = {r.kind + ":" + str(r.payload.get("userId")): r async for r in store.audit_iter()}
                wanted = ("service_call:alice", "data_access:carol", "compliance_violation:carol", "service_call:bob")
                return rows if all(k in rows for k in wanted) else None

            rows = await eventually(audited, 10, "the calls, the access and the violation in the audit log")
            call = rows["service_call:alice"].payload
            assert call["parameters"]["password"] == "[REDACTED]" and "jane@" not in orjson.dumps(call).decode()
            assert call["compliance"]["dataClassification"] == "pii" and call["correlationId"] == "c1"
            assert rows["data_access:carol"].payload["compliance"]["hipaaApplicable"] is True
            assert "compliance_violation:carol" in rows
            [entry] = (await store.state_list("compliance_violations")).values()
            assert entry["regulation"].startswith("HIPAA")
            assert "service_call:bob" in rows
        done = await writer.purge.remote()
        assert [(d["chain"], d["deleted"]) for d in done] == [("retention-365d", 1)]
        async with open_store(pg_database) as store:
            kinds = [(r.kind, r.payload.get("userId")) async for r in store.audit_iter()]
            assert ("service_call", "bob") not in kinds and ("audit_purge", None) in kinds
            assert (await store.audit_verify()).ok
    finally:
        await writer.stop.remote()
        ray.kill(writer, no_restart=True)


async def _chain(path: Path, n: int = 4) -> str:
    url = f"sqlite:///{path}"
    async with open_store(url) as store:
        await store.audit_append([{"ts": 1000.0 + i, "kind": "service_call", "n": i} for i in range(n)])
    return url


@pytest.mark.parametrize(("tamper", "broken_at"), [
    ("UPDATE audit_events SET payload = replace(payload, '\"n\":2', '\"n\":7') WHERE id = 3", 3),
    ("DELETE FROM audit_events WHERE id = 2", 3),
    ("UPDATE audit_events SET id = 99 WHERE id = 2; UPDATE audit_events SET id = 2 WHERE id = 3; "
     "UPDATE audit_events SET id = 3 WHERE id = 99", 2),
])
async def test_audit_verify_cli_finds_first_broken_link(tmp_path: Path, tamper: str, broken_at: int,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """drivers.audit verify: an intact chain passes; an edited, deleted or reordered row is reported
    as the first broken link (exit 1)."""
    url = await _chain(tmp_path / "a.db")
    assert await audit_cli.run(["--store", url, "verify"]) == 0
    assert "ok: 4 audit events verified" in capsys.readouterr().out
    db = sqlite3.connect(tmp_path / "a.db")
    db.executescript(tamper)
    db.commit()
    db.close()
    assert await audit_cli.run(["--store", url, "verify"]) == 1
    assert f"BROKEN at row {broken_at}" in capsys.readouterr().out


async def test_audit_cli_as_a_process_purges_and_audits_the_purge(tmp_path: Path) -> None:
    """``python -m drivers.audit purge`` removes expired events, records the purge, still verifies."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    now = time.time()
    async with open_store(url) as store:
        await store.audit_append([{"ts": now - 400 * DAY, "retention": "retention-365d", "kind": "service_call"},
                                  {"ts": now, "retention": "retention-365d", "kind": "service_call"}])
    run = [sys.executable, "-m", "drivers.audit", "--store", url]
    out = subprocess.run([*run, "purge"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "retention-365d: 1 events" in out
    verify = subprocess.run([*run, "verify"], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and "ok: 2 audit events" in verify.stdout  # the kept one + the purge event


async def test_incidents_cli_list_show_resolve_lift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """drivers.incidents lists and shows an incident, resolves it (outbox message written) and lifts
    an active action by setting its undo time to now; unknown ids exit 1."""
    url = f"sqlite:///{tmp_path / 'i.db'}"
    now = time.time()
    async with open_store(url) as store:
        await store.incident_upsert(IncidentRecord(id="inc-1", type="security", severity="critical",
                                                   title="brute_force_attempt", source="203.0.113.9", created_at=now))
        await store.action_upsert(ActionRecord(id="inc-1:0:block_ip", incident_id="inc-1", action="block_ip",
                                               target="203.0.113.9", created_at=now, until=now + 3600,
                                               undo_at=now + 3600))
    base = ["--store", url, "--cluster-id", "c9"]
    assert await incidents_cli.run([*base, "list"]) == 0
    assert "inc-1" in capsys.readouterr().out
    assert await incidents_cli.run([*base, "show", "inc-1"]) == 0
    shown: dict[str, Any] = orjson.loads(capsys.readouterr().out)
    assert shown["actions"][0]["action"] == "block_ip"
    assert await incidents_cli.run([*base, "lift", "inc-1:0:block_ip"]) == 0
    assert await incidents_cli.run([*base, "resolve", "inc-1", "--note", "false positive"]) == 0
    assert await incidents_cli.run([*base, "show", "nope"]) == 1
    async with open_store(url) as store:
        [due] = await store.actions_pending_undo(time.time())
        assert due.id == "inc-1:0:block_ip"
        inc = await store.incident_get("inc-1")
        assert inc is not None and inc.status == "resolved" and inc.data["log"][-1]["note"] == "false positive"
        [msg] = await store.outbox_pending()
        assert msg.topic == "system/c9/incidents" and msg.payload["event"] == "resolved"
        assert await store.incidents_open() == []


async def test_store_down_bounded_queue_counts_and_alerts_loss(watched: tuple[str, Watcher, MqttBus],
                                                               broker_url: str) -> None:
    """With PostgreSQL unreachable the audit trail keeps accepting calls; what does not fit the
    bounded queue is counted and alerted; once the database is up the queued events and an
    audit_loss record are written."""
    cluster, watcher, _bus = watched
    port = free_port()
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    body = AuditWriterBody(OperateSettings(broker_url=broker_url, cluster_id=cluster, store_url=url),
                           SecurityOptions(store_max_queued=5, audit_max_pending=8,
                                           audit_flush_s=3600))
    pg: ChildService | None = None
    try:
        await body.start()
        await body.calls([{"ts": time.time(), "service": "Svc", "method": "m", "params": {}}] * 3)
        await body.flush()  # 3 queued in the store buffer
        await body.calls([{"ts": time.time(), "service": "Svc", "method": "m", "params": {}}] * 10)
        await body.flush()  # 8 fit the batch, 2 lost there; the batch of 8 does not fit the buffer
        stats = await body.stats()
        assert stats["counts"]["lost"] == 10 and stats["store"]["queued"] == 3
        await watcher.wait(lambda w: [a for a in w.on("/alerts") if a["labels"]["alertname"] == "AuditEventsLost"],
                           5, "loss alert")
        pg = start_postgres(port=port)
        assert await body.store.drain(30)
        await body.flush()
        async with open_store(pg.url) as store:
            kinds = [r.kind async for r in store.audit_iter()]
        assert kinds.count("service_call") == 3 and kinds.count("audit_loss") == 1
    finally:
        await body.stop()
        if pg is not None:
            pg.stop()
