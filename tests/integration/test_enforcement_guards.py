"""Enforcement that cannot be turned on us: forged security events against operate's own security
pipeline (``drivers.operate`` on the session mosquitto, enforcement keys in a real Redis), seen
the way a client and a gateway would — on the broker and in Redis — and decided by an operator
through ``drivers.incidents``."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import ray
import redis.asyncio as aioredis

from adapters.runtime.processes import ChildService
from drivers import incidents as incidents_cli
from protocol import parse_model
from protocol.security import AlertMessage, AuthEvent, DataAccessEvent, IncidentMessage, ServiceSecurityEvent
from tests.support.operations import Operations, operations

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

ALERTING = """
route:
  receiver: bus
  group_by: [alertname, service, user, ip]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - {name: bus, type: mqtt}
"""
NOW = "2026-01-01T00:00:00Z"


@pytest.fixture(scope="module")
async def ops(broker_url: str, redis_server: ChildService,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Operations]:
    """operate with its security pipeline (analyst, responder, audit writer) and Redis enforcement."""
    tmp = tmp_path_factory.mktemp("guards")
    async with operations(broker_url, tmp, policies={"alerting.yaml": ALERTING},
                          extra={"enforcement_redis": redis_server.url}) as o:
        yield o


@pytest.fixture
async def redis(redis_server: ChildService) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(redis_server.url)
    yield r
    await r.aclose()


def incidents(ops: Operations, alert_type: str, target: str, event: str = "created") -> list[dict[str, Any]]:
    return [m for m in ops.watcher.on("/incidents")
            if m.get("alertType") == alert_type and m.get("target") == target and m.get("event") == event]


def actions(ops: Operations, target: str) -> list[dict[str, Any]]:
    return [m for m in ops.watcher.on("/security/actions") if m.get("target") == target and not m.get("undo")]


async def forged_failures(ops: Operations, ip: str, n: int = 6) -> None:
    """``n`` failed logins "from" ``ip``, each for another user: any client can publish these."""
    for _ in range(n):
        event = AuthEvent(user_id=f"u-{uuid.uuid4().hex[:6]}", ip_address=ip, success=False, timestamp=NOW)
        await ops.bus.publish("security/auth/login", event.to_wire(), qos=1)
    await ops.bus.flush(5)


async def responder_counts(ops: Operations) -> dict[str, int]:
    handle = ray.get_actor(f"sfa-responder-{ops.cluster}", namespace="sfa-ops")
    return dict((await handle.status.remote())["counts"])


async def test_forged_auth_failures_from_loopback_do_not_block_it(ops: Operations, redis: aioredis.Redis) -> None:
    """Six forged failures "from" 127.0.0.1: the brute-force incident records the finding, but its
    block_ip is refused (listed and counted) — nothing on the actions topic, in the retained set or
    in Redis."""
    before = await responder_counts(ops)
    await forged_failures(ops, "127.0.0.1")
    found = await ops.watcher.wait(lambda w: incidents(ops, "brute_force_attempt", "127.0.0.1"), 20,
                                   "brute force incident for 127.0.0.1")
    inc = parse_model(IncidentMessage, found[0])
    assert "block_ip" not in inc.automated_response
    assert [r.rsplit(":", 1)[-1] for r in inc.refused] == ["block_ip"]
    # The incident is published after its actions: a block would already be here.
    assert [a["action"] for a in actions(ops, "127.0.0.1")] == ["increase_monitoring"]
    assert await redis.exists("sfa:block:ip:127.0.0.1") == 0
    active = ops.watcher.on("/security/actions/active")
    assert active and not any(a["target"] == "127.0.0.1" and a["action"] == "block_ip"
                              for doc in active for a in doc["actions"])
    after = await responder_counts(ops)
    assert after["refused"] == before["refused"] + 1


async def test_forged_auth_failures_from_another_address_block_it_for_a_while(
        ops: Operations, redis: aioredis.Redis) -> None:
    """The same six failures from a non-protected address do block it, with an expiry (Redis TTL)."""
    n = uuid.uuid4().int
    ip = f"203.0.{n % 250 + 1}.{(n >> 8) % 250 + 1}"
    await forged_failures(ops, ip)
    found = await ops.watcher.wait(lambda w: incidents(ops, "brute_force_attempt", ip), 20, f"incident for {ip}")
    assert "block_ip" in found[0]["automatedResponse"] and found[0]["refused"] == []
    [block] = [a for a in actions(ops, ip) if a["action"] == "block_ip"]
    assert block["until"] is not None
    ttl = await redis.ttl(f"sfa:block:ip:{ip}")
    assert 0 < ttl <= 3600


async def test_single_forged_data_access_event_waits_for_approval(
        ops: Operations, redis: aioredis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """One forged data-access event (20 000 records): the exfiltration incident escalates only to
    level 1 and suspends nobody — suspend_user and block_data_access wait. ``drivers.incidents
    approve`` makes the responder carry the suspension out (Redis key, actions topic, incident
    updated); ``reject`` closes the other request without effect."""
    user = f"victim-{uuid.uuid4().hex[:6]}"
    event = DataAccessEvent(user_id=user, collection="customers", operation="export", record_count=20_000,
                            timestamp=NOW)
    await ops.bus.publish("audit/Reports/data-access", event.to_wire(), qos=1)
    found = await ops.watcher.wait(lambda w: incidents(ops, "data_exfiltration_suspected", user), 20,
                                   "exfiltration incident")
    inc = parse_model(IncidentMessage, found[0])
    assert found[0]["escalation"]["level"] == 1
    waiting = {a.rsplit(":", 1)[-1]: a for a in inc.awaiting_approval}
    assert set(waiting) == {"suspend_user", "block_data_access"}
    assert "suspend_user" not in inc.automated_response
    assert await redis.exists(f"sfa:suspend:user:{user}") == 0
    assert not [a for a in actions(ops, user) if a["action"] == "suspend_user"]

    store = ["--store", ops.store_url]
    assert await incidents_cli.run([*store, "list-pending"]) == 0
    listed = capsys.readouterr().out
    assert waiting["suspend_user"] in listed and waiting["block_data_access"] in listed

    assert await incidents_cli.run([*store, "approve", waiting["suspend_user"], "--by", "tester",
                                    "--note", "confirmed with the data owner"]) == 0
    assert await incidents_cli.run([*store, "reject", waiting["block_data_access"], "--by", "tester"]) == 0
    assert await incidents_cli.run([*store, "approve", waiting["block_data_access"]]) == 1  # decided already

    def settled(w: Any) -> list[dict[str, Any]]:
        return [m for m in incidents(ops, "data_exfiltration_suspected", user, "updated")
                if not m["awaitingApproval"]]

    updated = await ops.watcher.wait(settled, 20, "incident updated after both decisions")
    assert "suspend_user" in updated[-1]["automatedResponse"]
    assert "block_data_access" not in updated[-1]["automatedResponse"]
    [suspend] = [a for a in actions(ops, user) if a["action"] == "suspend_user"]
    assert suspend["incidentId"] == inc.incident_id and "until" not in suspend
    assert await redis.ttl(f"sfa:suspend:user:{user}") == -1  # untimed, as approved
    counts = await responder_counts(ops)
    assert counts["approved"] >= 1 and counts["rejected"] >= 1
    assert await incidents_cli.run([*store, "approve", waiting["suspend_user"]]) == 1  # nothing waits now


async def test_service_reported_emergency_becomes_a_warning(ops: Operations) -> None:
    """A service's own security report claiming ``emergency`` is alerted as ``warning`` (the claim
    kept as a label): no service pages by phone unless trusted to."""
    service = f"Pay{uuid.uuid4().hex[:6]}"
    report = ServiceSecurityEvent(event_type="tampering_suspected", severity="emergency", timestamp=NOW,
                                  description="checksum mismatch")
    await ops.bus.publish(f"service/{service}/security", report.to_wire(), qos=1)

    def alerts(w: Any) -> list[dict[str, Any]]:
        return [m for m in ops.watcher.on("/alerts") if m.get("labels", {}).get("service") == service]

    found = await ops.watcher.wait(alerts, 20, "ServiceSecurityEvent alert")
    alert = parse_model(AlertMessage, found[0])
    assert alert.labels["alertname"] == "ServiceSecurityEvent" and alert.status == "firing"
    assert alert.labels["severity"] == "warning" and alert.labels["reportedSeverity"] == "emergency"
    assert time.time() - alert.starts_at.timestamp() < 60
