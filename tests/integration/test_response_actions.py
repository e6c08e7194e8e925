"""Response actions that are not enforcement do something: operate's own security pipeline
(``drivers.operate`` on the session mosquitto, the shipped alerting tree) turns failed logins into
incidents whose ``notify_user`` reaches the platform as a ``SecurityNotice``, whose
``notify_security_team`` reaches the ``security-team`` receiver, and whose ``increase_monitoring``
lowers the analyst's thresholds for its target, whose ``enhanced_logging`` makes the audit writer
keep the target's calls in full, and whose ``preserve_evidence`` seals the
target's audit rows into an evidence record in the store — observed on the broker and in the
store, parsed with the contract's models as published."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import ray

from adapters.store import open_store
from policies.response.evidence import EVIDENCE, verify
from protocol import topics
from protocol.contract import parse_published
from protocol.rpc import Call, UserContext
from protocol.security import AlertMessage, AuthEvent, DataAccessEvent, SecurityNotice
from tests.support.operations import Operations, operations

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

NOW = "2026-01-01T00:00:00Z"


@pytest.fixture(scope="module")
async def ops(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Operations]:
    """operate with its security pipeline and the shipped alerting tree (no alerting override)."""
    async with operations(broker_url, tmp_path_factory.mktemp("actions")) as o:
        yield o


def random_ip() -> str:
    n = uuid.uuid4().int
    return f"203.0.{n % 250 + 1}.{(n >> 8) % 250 + 1}"


async def failed_logins(ops: Operations, ip: str, users: list[str]) -> None:
    for user in users:
        event = AuthEvent(user_id=user, ip_address=ip, success=False, timestamp=NOW)
        await ops.bus.publish("security/auth/login", event.to_wire(), qos=1)
    await ops.bus.flush(5)


def incident(ops: Operations, alert_type: str, target: str) -> list[dict[str, Any]]:
    return [m for m in ops.watcher.on("/incidents")
            if m.get("alertType") == alert_type and m.get("target") == target and m.get("event") == "created"]


async def test_brute_force_notifies_the_user_on_the_notices_topic(ops: Operations) -> None:
    """Five failed logins for one user: the brute-force incident's notify_user publishes a
    SecurityNotice for that user (naming the source address) on system/{c}/security/notices."""
    user, ip = f"alice-{uuid.uuid4().hex[:6]}", random_ip()
    await failed_logins(ops, ip, [user] * 5)
    topic = topics.security_notices(ops.cluster)
    found = await ops.watcher.wait(
        lambda w: [(t, d) for _, t, d in w.messages if t == topic and isinstance(d, dict) and d.get("userId") == user],
        30, f"a security notice for {user}")
    notice = parse_published(*found[0])
    assert isinstance(notice, SecurityNotice)
    assert notice.reason == "brute_force_attempt" and notice.ip_address == ip and ip in notice.message
    [inc] = await ops.watcher.wait(lambda w: incident(ops, "brute_force_attempt", user), 10, "the incident")
    assert notice.incident_id == inc["incidentId"] and "notify_user" in inc["automatedResponse"]
    assert notice.notice_id.startswith(inc["incidentId"]) and notice.notice_id.endswith(":notify_user")


async def test_credential_stuffing_reaches_the_security_team_receiver(ops: Operations) -> None:
    """Failed logins for ten distinct users from one address: the credential-stuffing incident's
    notify_security_team is routed by the shipped tree to the security-team receiver, whose MQTT
    integration publishes it on system/{c}/alerts."""
    ip = random_ip()
    await failed_logins(ops, ip, [f"u-{uuid.uuid4().hex[:6]}" for _ in range(10)])
    topic = topics.system_alerts(ops.cluster)

    def team_alerts(w: Any) -> list[tuple[str, dict[str, Any]]]:
        return [(t, d) for _, t, d in w.messages if t == topic and isinstance(d, dict)
                and d.get("labels", {}).get("notify") == "security-team" and d["labels"].get("target") == ip]

    found = await ops.watcher.wait(team_alerts, 60, f"a security-team alert for {ip}")
    msg = parse_published(*found[0])
    assert isinstance(msg, AlertMessage)
    assert msg.receiver == "security-team" and msg.status == "firing"
    assert msg.labels["alertname"] == "SecurityTeamNotification"
    assert msg.labels["type"] == "credential_stuffing" and msg.labels["severity"] == "critical"
    [inc] = await ops.watcher.wait(lambda w: incident(ops, "credential_stuffing", ip), 10, "the incident")
    assert msg.labels["incident"] == inc["incidentId"] and "notify_security_team" in inc["automatedResponse"]


async def test_increase_monitoring_lowers_the_analysts_threshold_for_the_source(ops: Operations) -> None:
    """A brute force on one user from address A puts A under heightened monitoring (the analyst
    reads the responder's retained active set); then three failures from A, for other users,
    are a brute force from A — five are needed for an address nobody watches."""
    user, ip = f"bob-{uuid.uuid4().hex[:6]}", random_ip()
    await failed_logins(ops, ip, [user] * 5)
    await ops.watcher.wait(lambda w: incident(ops, "brute_force_attempt", user), 30, "the first incident")
    analyst = ray.get_actor(f"sfa-analyst-{ops.cluster}", namespace="sfa-ops")

    async def watched() -> dict[str, Any] | None:
        return await analyst.watching.remote(ip)  # type: ignore[no-any-return]

    deadline = asyncio.get_running_loop().time() + 20
    watch = await watched()
    while watch is None and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        watch = await watched()
    assert watch is not None and watch["factor"] == 0.5 and watch["until"] > time.time() + 23 * 3600
    assert not incident(ops, "brute_force_attempt", ip)
    await failed_logins(ops, ip, [f"u-{uuid.uuid4().hex[:6]}" for _ in range(3)])
    [inc] = await ops.watcher.wait(lambda w: incident(ops, "brute_force_attempt", ip), 30,
                                   f"a brute force incident for the watched {ip}")
    assert inc["source"] == ip


async def test_preserve_evidence_seals_the_targets_audit_rows_in_the_store(ops: Operations) -> None:
    """A data-access event of 20 000 records: the exfiltration incident's preserve_evidence stores
    a sealed evidence record holding the audit writer's row of that very event (with its chain
    hash) and the alert, and logs it on the incident."""
    user = f"mallory-{uuid.uuid4().hex[:6]}"
    event = DataAccessEvent(user_id=user, collection="customers", operation="export", record_count=20_000,
                            timestamp=time.time())  # audit rows carry the event's time: the lookback is 24 h
    await ops.bus.publish("audit/Reports/data-access", event.to_wire(), qos=1)
    [inc] = await ops.watcher.wait(lambda w: incident(ops, "data_exfiltration_suspected", user), 30,
                                   "the exfiltration incident")
    [action] = [a for a in ops.watcher.on("/security/actions")
                if a.get("target") == user and a.get("action") == "preserve_evidence"]
    store = open_store(ops.store_url)
    await store.open()
    try:
        deadline = time.monotonic() + 30
        record = await store.state_get(EVIDENCE, action["actionId"])
        while record is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            record = await store.state_get(EVIDENCE, action["actionId"])
        assert record is not None, "no evidence record stored"
        stored_inc = await store.incident_get(inc["incidentId"])
    finally:
        await store.close()
    assert verify(record) and record["incidentId"] == inc["incidentId"] and record["target"] == user
    assert record["alert"]["type"] == "data_exfiltration_suspected"
    rows = record["auditRows"]
    assert all(r["payload"]["userId"] == user for r in rows)
    [access] = [r for r in rows if r["kind"] == "data_access"]
    assert access["payload"]["recordCount"] == 20_000 and access["hash"] and access["chain"]
    assert stored_inc is not None
    [logged] = [e for e in stored_inc.data["log"] if e.get("result") == "preserved"]
    assert logged["sha256"] == record["sha256"] and logged["auditRows"] == len(rows)


async def test_enhanced_logging_keeps_the_targets_call_parameters_in_full(ops: Operations) -> None:
    """2 000 records read by one user (excessive data access) put the user under enhanced logging;
    then a call by that user with a 10 000-character parameter is stored in the audit log in full
    (still redacted), where another user's identical call is cut at the configured 2 048."""
    user, other = f"erin-{uuid.uuid4().hex[:6]}", f"frank-{uuid.uuid4().hex[:6]}"
    event = DataAccessEvent(user_id=user, collection="customers", operation="read", record_count=2_000,
                            timestamp=time.time())
    await ops.bus.publish("audit/Reports/data-access", event.to_wire(), qos=1)
    await ops.watcher.wait(lambda w: incident(ops, "excessive_data_access", user), 30, "the incident")
    await ops.watcher.wait(lambda w: [d for d in w.on("/security/actions/active") for a in d["actions"]
                                      if a["action"] == "enhanced_logging" and a["target"] == user],
                           10, "enhanced_logging in the active set")
    long = "x" * 10_000
    for who in (user, other):
        call = Call(id=uuid.uuid4().hex, method="search", params={"query": long, "password": "hunter2-secret"},
                    reply_to=f"session/{uuid.uuid4().hex}/response", user_context=UserContext(user_id=who))
        await ops.bus.publish("service/Orders", call.to_wire(), qos=1)  # nobody answers: audited at timeout
    await ops.bus.flush(5)
    store = open_store(ops.store_url)
    await store.open()
    try:
        async def calls() -> dict[str, dict[str, Any]]:
            return {r.payload["userId"]: r.payload async for r in store.audit_iter(since=time.time() - 600)
                    if r.kind == "service_call" and r.payload.get("userId") in (user, other)}
        deadline = time.monotonic() + 30
        found = await calls()
        while len(found) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            found = await calls()
    finally:
        await store.close()
    assert set(found) == {user, other}, "both calls audited"
    assert found[user]["enhancedLogging"] is True and found[user]["parameters"]["query"] == long
    assert found[other]["enhancedLogging"] is False and len(found[other]["parameters"]["query"]) < 2100
    assert "hunter2" not in str(found[user]["parameters"])
