"""Security analysis and incident response end to end: SecurityAnalyst and IncidentResponder as
Ray actors on real mosquitto, PostgreSQL and Redis, EMQX's banned API replayed over HTTP; observed
on the broker, in Redis and in the store — and enforced by an SDK service runtime."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import ray
import redis.asyncio as aioredis

from actors.incident_responder import IncidentResponder
from actors.security_analyst import SecurityAnalyst
from actors.security_common import SecurityOptions
from actors.settings import OperateSettings
from adapters.enforcement.actions import EnforcementConfig
from adapters.mqtt.bus import MqttBus, MqttConfig
from adapters.runtime.processes import ChildService
from adapters.store import open_store
from protocol import parse_model, topics
from protocol.security import ActiveActions, AlertMessage, AuthEvent, EnforcementAction, IncidentMessage
from sdk import Service, ServiceClient
from sdk.enforcement import ActionsEnforcement
from sdk.runtime import ServiceRuntime
from tests.support.operations import Watcher
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

ALLOWED_IP = "198.51.100.77"
SECURITY_YAML = f"allowlist:\n  ips: [\"{ALLOWED_IP}\"]\n"
RESPONSE_YAML = """
playbooks:
  brute_force_attempt:
    - {action: block_ip, target: ip, duration: 3s, increment: true}
    - {action: notify_user, target: user}
  credential_stuffing:
    - {action: block_ip, target: ip, duration: 3s, increment: true}
    - {action: notify_security_team, target: source}
"""


class BannedApi:
    """EMQX 5 ``/api/v5/banned`` replayed (shapes of emqx_mgmt_api_banned.erl, v5.8): POST answers
    200 with the ban or 400 ALREADY_EXISTS, DELETE /banned/peerhost/{ip} 204 or 404 NOT_FOUND."""

    def __init__(self) -> None:
        self.bans: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, Any] | None, str | None]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> BannedApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: Any = None) -> None:
                raw = orjson.dumps(body) if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                doc = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                api.requests.append(("POST", self.path, doc, self.headers.get("Authorization")))
                if doc["who"] in api.bans:
                    return self._reply(400, {"code": "ALREADY_EXISTS",
                                             "message": orjson.dumps(api.bans[doc["who"]]).decode()})
                api.bans[doc["who"]] = doc
                return self._reply(200, doc)

            def do_DELETE(self) -> None:
                api.requests.append(("DELETE", self.path, None, self.headers.get("Authorization")))
                who = self.path.rsplit("/", 1)[1]
                if api.bans.pop(who, None) is None:
                    return self._reply(404, {"code": "NOT_FOUND", "message": f"peerhost: {who} not found"})
                return self._reply(204)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture(scope="module")
def banned_api() -> Iterator[BannedApi]:
    api = BannedApi().start()
    yield api
    api.stop()


async def fresh_schema(pg_database: str) -> str:
    schema = f"s_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_database)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    await admin.close()
    return f"{pg_database}?search_path={schema}"


@dataclass
class Security:
    cluster: str
    settings: OperateSettings
    options: SecurityOptions
    analyst: Any
    responder: Any
    watcher: Watcher
    bus: MqttBus
    redis: aioredis.Redis
    api: BannedApi
    actors: list[Any] = field(default_factory=list)

    async def login_failures(self, n: int, *, user: str | None, ip: str | None) -> None:
        for _ in range(n):
            await self.bus.publish("security/auth/login", {"userId": user, "ipAddress": ip, "success": False,
                                                           "timestamp": "2026-01-01T00:00:00Z"}, qos=1)
        await self.bus.flush(5)

    def incidents(self, alert_type: str, target: str, event: str = "created") -> list[dict[str, Any]]:
        return [m for m in self.watcher.on("/incidents")
                if m.get("alertType") == alert_type and m.get("target") == target and m.get("event") == event]

    async def incident(self, alert_type: str, target: str, timeout: float = 10) -> dict[str, Any]:
        found = await self.watcher.wait(lambda w: self.incidents(alert_type, target), timeout,
                                        f"{alert_type} incident for {target}")
        return found[0]

    def actions(self, target: str, *, undo: bool = False) -> list[dict[str, Any]]:
        return [m for m in self.watcher.on("/security/actions") if m.get("target") == target
                and bool(m.get("undo")) == undo]

    def active(self) -> dict[str, Any] | None:
        found = self.watcher.on("/security/actions/active")
        return found[-1] if found else None


async def start_security(settings: OperateSettings, options: SecurityOptions, broker_url: str,
                         redis_url: str, api: BannedApi) -> Security:
    watcher = Watcher()
    bus = MqttBus(config=MqttConfig.from_url(broker_url))
    await bus.start()
    await bus.wait_connected(10)
    await bus.subscribe(f"system/{settings.cluster_id}/#", watcher, qos=1)
    responder = IncidentResponder.remote(settings, options)
    analyst = SecurityAnalyst.remote(settings, options, responder=responder)
    await asyncio.gather(responder.start.remote(), analyst.start.remote())
    return Security(settings.cluster_id, settings, options, analyst, responder, watcher, bus,
                    aioredis.Redis.from_url(redis_url), api, [analyst, responder])


async def stop_security(sec: Security) -> None:
    for a in sec.actors:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(a.stop.remote(), 10)
        ray.kill(a, no_restart=True)
    await sec.bus.stop()
    await sec.redis.aclose()


def write_policies(directory: Path, files: dict[str, str]) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return str(directory)


def options_for(redis_server: ChildService, api: BannedApi, **kw: Any) -> SecurityOptions:
    enforcement = EnforcementConfig(redis_url=redis_server.url, emqx_url=api.url, emqx_api_key="k",
                                    emqx_api_secret="s")
    base: dict[str, Any] = {"pattern_interval_s": 3600.0, "undo_poll_s": 0.1, "store_poll_s": 0.3,
                            "alert_flush_s": 0.05}
    return SecurityOptions(enforcement=enforcement, **(base | kw))


@pytest.fixture(scope="module")
async def sec(broker_url: str, redis_server: ChildService, pg_database: str, banned_api: BannedApi,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Security]:
    policies = write_policies(tmp_path_factory.mktemp("sec-policies"),
                              {"security.yaml": SECURITY_YAML, "response.yaml": RESPONSE_YAML})
    cluster = f"s{uuid.uuid4().hex[:8]}"
    settings = OperateSettings(broker_url=broker_url, cluster_id=cluster, store_url=await fresh_schema(pg_database),
                               policies_dir=policies)
    s = await start_security(settings, options_for(redis_server, banned_api), broker_url, redis_server.url,
                             banned_api)
    yield s
    await stop_security(s)


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def ip() -> str:
    n = uuid.uuid4().int
    return f"203.0.{n % 250 + 1}.{(n >> 8) % 250 + 1}"


# --- detection → incident → enforcement --------------------------------------------------------


async def test_brute_force_by_ip_blocks_in_redis_emqx_and_retained_set(sec: Security) -> None:
    """5 failures from one IP (different users): incident, block_ip published with until, the Redis
    key with a TTL, an EMQX ban POSTed, the retained active set listing it, and a firing alert."""
    addr = ip()
    for i in range(5):
        await sec.login_failures(1, user=uniq(f"u{i}"), ip=addr)
    inc = parse_model(IncidentMessage, await sec.incident("brute_force_attempt", addr))
    # critical alerts escalate to level 1 (the security team) by the default policy
    assert inc.severity == "critical" and inc.status == "escalated" and "block_ip" in inc.automated_response
    block = parse_model(EnforcementAction, (await sec.watcher.wait(lambda w: sec.actions(addr), 5, "block"))[0])
    assert block.action == "block_ip" and block.until is not None and block.incident_id == inc.incident_id
    ttl = await sec.redis.ttl(f"sfa:block:ip:{addr}")
    assert 0 < ttl <= 3
    assert sec.api.bans[addr]["as"] == "peerhost" and sec.api.bans[addr]["until"] != "infinity"
    active = await sec.watcher.wait(lambda w: (a := sec.active()) and any(x["target"] == addr for x in a["actions"])
                                    and a, 5, "retained active set")
    parse_model(ActiveActions, active)
    alerts = [a for a in sec.watcher.on("/alerts") if a["labels"].get("ip") == addr]
    assert alerts and alerts[0]["labels"]["alertname"] == "BruteForceAttempt"
    assert alerts[0]["labels"]["component"] == "security"
    # emergency copy of a critical incident
    assert any(m.get("incidentId") == inc.incident_id for m in sec.watcher.on("/emergency"))


async def test_brute_force_by_user_and_block_expires(sec: Security) -> None:
    """5 failures against one account: an incident keyed by the user; its timed block is undone at
    expiry (undo published, Redis key and EMQX ban gone)."""
    user, addr = uniq("victim"), ip()
    await sec.login_failures(5, user=user, ip=addr)
    inc = await sec.incident("brute_force_attempt", user)
    assert inc["source"] == addr
    undo = await sec.watcher.wait(lambda w: sec.actions(addr, undo=True), 8, "unblock at expiry")
    assert undo[0]["action"] == "unblock_ip" and undo[0]["params"]["reason"] == "expired"
    assert await sec.redis.exists(f"sfa:block:ip:{addr}") == 0
    assert addr not in sec.api.bans
    assert ("DELETE", f"/api/v5/banned/peerhost/{addr}", None, "Basic azpz") in sec.api.requests


async def test_credential_stuffing(sec: Security) -> None:
    """Failures for 10 distinct users from one IP (2 each, below the per-user threshold): a
    credential_stuffing incident against the IP."""
    addr = ip()
    users = [uniq("cs") for _ in range(10)]
    for u in users:
        await sec.login_failures(1, user=u, ip=addr)
    inc = await sec.incident("credential_stuffing", addr)
    assert inc["severity"] == "critical"


async def test_suppression_second_burst_raises_no_second_incident(sec: Security) -> None:
    """A second burst from the same IP inside the suppression window creates no new incident."""
    addr = ip()
    await sec.login_failures(5, user=None, ip=addr)
    await sec.incident("brute_force_attempt", addr)
    suppressed = (await sec.analyst.stats.remote())["analyzer"]["suppressed"]
    await sec.login_failures(5, user=None, ip=addr)

    async def burst_suppressed() -> bool:
        return bool((await sec.analyst.stats.remote())["analyzer"]["suppressed"] > suppressed)

    await eventually(burst_suppressed, 10, "the second burst suppressed")
    assert len(sec.incidents("brute_force_attempt", addr)) == 1


async def test_allowlisted_ip_never_alerts(sec: Security) -> None:
    """Failures from an allowlisted address are counted as allowlisted and raise nothing."""
    before = (await sec.analyst.stats.remote())["analyzer"]["allowlisted"]
    await sec.login_failures(12, user=None, ip=ALLOWED_IP)

    async def all_counted() -> bool:
        return bool((await sec.analyst.stats.remote())["analyzer"]["allowlisted"] >= before + 12)

    await eventually(all_counted, 10, "12 allowlisted failures counted")
    assert not sec.incidents("brute_force_attempt", ALLOWED_IP)


async def test_privilege_escalation_denied_then_allowed(sec: Security) -> None:
    """A denied privileged call followed by an allowed one: privilege_escalation incident."""
    user = uniq("mallory")
    base = {"userId": user, "service": "UserManagement", "timestamp": "2026-01-01T00:00:00Z", "roles": ["user"]}
    await sec.bus.publish("security/authz/decision", {**base, "method": "adminDeleteUser", "allowed": False}, qos=1)
    await sec.bus.publish("security/authz/decision", {**base, "method": "adminDeleteUser", "allowed": True}, qos=1)
    inc = await sec.incident("privilege_escalation", user)
    assert inc["severity"] == "critical"


async def test_exfiltration_from_one_event_waits_for_approval(sec: Security) -> None:
    """20 000 records read in one (forgeable) event: data_exfiltration_suspected escalated to
    level 1 only, and the untimed suspend_user waits for approval — no Redis key yet."""
    user = uniq("exfil")
    await sec.bus.publish("audit/Reports/data-access", {"userId": user, "collection": "customers",
                                                        "operation": "export", "recordCount": 20_000,
                                                        "timestamp": "2026-01-01T00:00:00Z"}, qos=1)
    inc = await sec.incident("data_exfiltration_suspected", user)
    assert inc["status"] == "escalated" and inc["escalation"]["level"] == 1
    assert any(a.endswith(":suspend_user") for a in inc["awaitingApproval"])
    escalated = await sec.watcher.wait(lambda w: sec.incidents("data_exfiltration_suspected", user, "escalated"),
                                       5, "escalated event")
    assert escalated[0]["incidentId"] == inc["incidentId"]
    assert await sec.redis.exists(f"sfa:suspend:user:{user}") == 0
    assert not [a for a in sec.actions(user) if a["action"] in ("suspend_user", "block_data_access")]


async def test_unusual_volume_against_stored_baseline_and_new_services(sec: Security) -> None:
    """A stored user_activity baseline (10 req/h, services A,B): 200 calls to five new services in
    one pattern run raise unusual_api_volume (rate_limit_user in Redis) and unusual_service_access."""
    user = uniq("busy")
    async with open_store(sec.settings.store_url) as store:
        await store.baseline_put("user_activity", {"users": {user: {"requestsPerHour": 10, "services": ["A", "B"],
                                                                    "recordsPerDay": 100}}})
    await sec.analyst.refresh_baselines.remote()
    await sec.analyst.activity.remote({user: {"A": 40, "C": 40, "D": 40, "E": 40, "F": 40}}, time.time())
    await sec.analyst.run_patterns.remote()
    vol = await sec.incident("unusual_api_volume", user)
    assert "rate_limit_user" in vol["automatedResponse"]
    await sec.incident("unusual_service_access", user)
    assert await sec.redis.exists(f"sfa:ratelimit:user:{user}") == 1


async def test_unusual_login_pattern_from_a_new_network(sec: Security) -> None:
    """Five successful logins from one /24 with one browser, then one from another network, each
    built with the auth service's wire model (AuthEvent) and published on security/auth/login: the
    analyst's real path learns the user's baseline and raises unusual_login_pattern (a new network
    alone, at the default warning) — an alert on the broker naming the novel network, and an
    incident for the user. Logins before the baseline is complete raise nothing."""
    user, home, away = uniq("traveller"), ip(), "192.0.2.44"
    ua = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"

    async def login(addr: str) -> None:
        ev = AuthEvent(user_id=user, ip_address=addr, success=True, timestamp=datetime.now(UTC), method="password",
                       user_agent=ua)
        await sec.bus.publish(topics.security_auth("login"), ev.to_wire(), qos=1)

    for _ in range(5):
        await login(home)
    await login(away)
    await sec.bus.flush(5)

    def found(w: Watcher) -> list[dict[str, Any]]:
        return [a for a in w.on("/alerts") if a["labels"].get("alertname") == "UnusualLoginPattern"
                and a["labels"].get("user") == user]

    [alert] = await sec.watcher.wait(found, 10, "UnusualLoginPattern alert")
    msg = parse_model(AlertMessage, alert)
    assert msg.labels["severity"] == "warning" and msg.labels["ip"] == away
    assert "new network" in msg.annotations["summary"]
    inc = await sec.incident("unusual_login_pattern", user)
    assert inc["severity"] == "warning"
    stats = await sec.analyst.stats.remote()
    assert stats["analyzer"]["alerts"]["unusual_login_pattern"] >= 1
    assert stats["analyzer"]["tracked"]["login_users"] >= 1


async def test_escalating_bans_for_a_repeat_offender(sec: Security) -> None:
    """The same IP's third incident: bans of 3 s, 6 s, 12 s (factor 2) and escalation as a repeat
    offender; an earlier ban's undo leaves the longer, newer ban in place."""
    addr = ip()
    durations = []
    for n in range(3):
        await sec.responder.handle.remote({
            "type": "brute_force_attempt", "severity": "critical", "source": addr, "target": addr,
            "description": "burst", "timestamp": time.time() + n * 1e-3, "ipAddress": addr})
        def nth_block(w: Watcher, k: int = n + 1) -> list[dict[str, Any]]:
            found = sec.actions(addr)
            return found if len(found) >= k else []

        blocks = await sec.watcher.wait(nth_block, 5, f"block {n + 1}")
        a = parse_model(EnforcementAction, blocks[n])
        assert a.until is not None and a.timestamp is not None
        durations.append(round((a.until - a.timestamp).total_seconds()))
    assert durations == [3, 6, 12]
    incs = sec.incidents("brute_force_attempt", addr)
    assert incs[-1]["escalation"]["rule"] == "repeat_offender"
    undo = await sec.watcher.wait(lambda w: sec.actions(addr, undo=True), 6, "first undo")
    assert "heldBy" in undo[0]["params"]
    assert await sec.redis.exists(f"sfa:block:ip:{addr}") == 1


async def test_alerts_beyond_the_per_source_limit_fold_into_the_latest_incident(sec: Security) -> None:
    """The sixth alert from one source within the hour opens no incident and takes no action: it is
    counted and logged on the source's fifth incident."""
    addr = ip()
    before = (await sec.responder.status.remote())["counts"]["folded"]
    summaries = [await sec.responder.handle.remote({**_alert("credential_stuffing", addr),
                                                    "timestamp": time.time() + n * 1e-3}) for n in range(6)]
    assert [x["status"] == "folded" for x in summaries] == [False] * 5 + [True]
    assert summaries[5]["incidentId"] == summaries[4]["incidentId"] and summaries[5]["actions"] == []
    assert (await sec.responder.status.remote())["counts"]["folded"] == before + 1
    assert len(sec.incidents("credential_stuffing", addr)) <= 5
    async with open_store(sec.settings.store_url) as store:
        fifth = await store.incident_get(summaries[4]["incidentId"])
    assert fifth is not None and fifth.data["folded"] == 1
    assert fifth.data["log"][-1]["result"] == "folded"


async def test_malformed_events_are_counted_and_dropped(sec: Security) -> None:
    """Malformed security events are counted per kind and do not stop the analyst."""
    before = (await sec.analyst.stats.remote())["counts"]["malformed"]
    for payload in (b"{not json", b"[]", b'{"success":"no","userId":"x"}', b'{"userId":1,"success":false}'):
        await sec.bus.publish("security/auth/login", payload, qos=1)
    await sec.bus.publish("audit/Svc/data-access", b'{"userId":"x"}', qos=1)
    await sec.bus.flush(5)

    async def malformed() -> int:
        return int((await sec.analyst.stats.remote())["counts"]["malformed"])

    async def all_counted() -> bool:
        return await malformed() >= before + 5

    await eventually(all_counted, 10, "5 malformed events counted")
    assert await malformed() == before + 5
    addr = ip()
    await sec.login_failures(5, user=None, ip=addr)
    await sec.incident("brute_force_attempt", addr)


# --- the loop closed: failed logins → block → refused call → expiry → calls succeed -----------


async def test_end_to_end_block_refuses_calls_until_expiry(sec: Security, broker_url: str) -> None:
    """Failed logins → incident → block_ip → the next call from that IP to an SDK service with
    ActionsEnforcement is refused -32003 → the block expires → calls succeed again."""
    svc = Service(uniq("Shop").replace("-", ""))

    @svc.function("ping")
    async def ping() -> str:
        return "pong"

    enforcement = ActionsEnforcement(cluster=sec.cluster, allow_unsigned=True)  # this responder signs nothing
    runtime = ServiceRuntime.connect(svc, broker_url=broker_url, cluster=sec.cluster, enforcement=enforcement)
    await enforcement.attach(runtime.bus)
    addr = ip()
    ctx = {"userId": uniq("shopper"), "ipAddress": addr}
    async with runtime, ServiceClient(sec.bus) as client:
        ok = await client.call_raw(svc.name, "ping", {}, user_context=ctx, timeout=5)
        assert ok["result"] == "pong"
        await sec.login_failures(5, user=None, ip=addr)
        await sec.incident("brute_force_attempt", addr)
        deadline = time.monotonic() + 5
        while True:
            doc = await client.call_raw(svc.name, "ping", {}, user_context=ctx, timeout=5)
            if "error" in doc or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert doc["error"]["code"] == -32003 and doc["error"]["data"]["details"]["reason"] == "ip_blocked"
        other = await client.call_raw(svc.name, "ping", {}, user_context={"userId": "x", "ipAddress": ip()})
        assert other["result"] == "pong"
        await sec.watcher.wait(lambda w: sec.actions(addr, undo=True), 8, "block expiry")
        again = await client.call_raw(svc.name, "ping", {}, user_context=ctx, timeout=5)
        assert again["result"] == "pong"
    assert enforcement.counts["ip_blocked"] >= 1


# --- restarts ---------------------------------------------------------------------------------------


def _alert(kind: str, addr: str) -> dict[str, Any]:
    return {"type": kind, "severity": "critical", "source": addr, "target": addr, "description": "burst",
            "timestamp": time.time(), "ipAddress": addr}


async def test_ray_restart_restores_active_bans_and_undo_passed_while_down_runs_at_start(
        broker_url: str, redis_server: ChildService, pg_database: str, banned_api: BannedApi,
        tmp_path: Path) -> None:
    """Kill the responder's process: Ray restarts it and it restores the active ban (retained set
    republished, undo still scheduled). Then stop it for longer than another, short ban: a new
    responder on the same store runs that overdue undo at start and still holds the long ban."""
    response = RESPONSE_YAML.replace("3s", "30s", 1).replace("3s", "2s")  # brute force 30 s, stuffing 2 s
    policies = write_policies(tmp_path / "p", {"response.yaml": response})
    settings = OperateSettings(broker_url=broker_url, cluster_id=f"r{uuid.uuid4().hex[:8]}",
                               store_url=await fresh_schema(pg_database), policies_dir=policies)
    opts = options_for(redis_server, banned_api)
    s = await start_security(settings, opts, broker_url, redis_server.url, banned_api)
    long_ip, short_ip = ip(), ip()
    try:
        await s.responder.handle.remote(_alert("brute_force_attempt", long_ip))
        status = await s.responder.status.remote()
        assert [a["target"] for a in status["active"]] == [long_ip]
        s.watcher.messages.clear()
        os.kill(status["pid"], signal.SIGKILL)
        restored = await s.watcher.wait(lambda w: (a := s.active()) and a["actions"] and a, 30, "retained set again")
        assert [a["target"] for a in restored["actions"]] == [long_ip]
        status = await s.responder.status.remote()
        assert status["counts"]["restored"] == 1 and len(status["pendingUndos"]) == 1
        assert await s.redis.exists(f"sfa:block:ip:{long_ip}") == 1

        await s.responder.handle.remote(_alert("credential_stuffing", short_ip))
        ray.kill(s.responder, no_restart=True)  # down for longer than the short ban
        s.actors.remove(s.responder)
        await asyncio.sleep(2.5)
        async with open_store(settings.store_url) as store:
            [overdue] = await store.actions_pending_undo(time.time())
            assert overdue.target == short_ip and overdue.undone_at is None  # nobody undid it meanwhile
        s.watcher.messages.clear()
        fresh = IncidentResponder.remote(settings, opts)
        s.actors.append(fresh)
        await fresh.start.remote()
        undo = await s.watcher.wait(lambda w: s.actions(short_ip, undo=True), 5, "overdue undo at start")
        assert undo[0]["params"]["reason"] == "expired" and short_ip not in s.api.bans
        assert [a["target"] for a in (await fresh.status.remote())["active"]] == [long_ip]
        async with open_store(settings.store_url) as store:
            assert await store.actions_pending_undo(time.time()) == []
    finally:
        await stop_security(s)


async def test_approval_waits_in_the_store_across_a_restart(
        broker_url: str, redis_server: ChildService, pg_database: str, banned_api: BannedApi,
        tmp_path: Path) -> None:
    """An untimed suspension waits for approval in PostgreSQL; approved with ``drivers.incidents``
    while the responder is down, a new responder on the same store carries it out at start."""
    from drivers import incidents as incidents_cli

    settings = OperateSettings(broker_url=broker_url, cluster_id=f"p{uuid.uuid4().hex[:8]}",
                               store_url=await fresh_schema(pg_database),
                               policies_dir=write_policies(tmp_path / "p", {"response.yaml": RESPONSE_YAML}))
    opts = options_for(redis_server, banned_api)
    s = await start_security(settings, opts, broker_url, redis_server.url, banned_api)
    user = uniq("held")
    try:
        summary = await s.responder.handle.remote({
            "type": "data_exfiltration_suspected", "severity": "critical", "source": user, "target": user,
            "userId": user, "description": "bulk read", "timestamp": time.time(), "metadata": {"single_event": True}})
        [suspend_id] = [a for a in summary["awaitingApproval"] if a.endswith(":suspend_user")]
        assert (await s.responder.status.remote())["pendingApprovals"] == sorted(summary["awaitingApproval"])
        ray.kill(s.responder, no_restart=True)
        s.actors.remove(s.responder)
        assert await incidents_cli.run(["--store", settings.store_url, "approve", suspend_id, "--by", "t"]) == 0
        assert await s.redis.exists(f"sfa:suspend:user:{user}") == 0  # nobody carried it out meanwhile
        fresh = IncidentResponder.remote(settings, opts)
        s.actors.append(fresh)
        await fresh.start.remote()
        done = await s.watcher.wait(lambda w: [a for a in s.actions(user) if a["action"] == "suspend_user"], 10,
                                    "approved suspension carried out")
        assert done[0]["actionId"] == suspend_id and await s.redis.ttl(f"sfa:suspend:user:{user}") == -1
        status = await fresh.status.remote()
        assert suspend_id not in status["pendingApprovals"] and status["counts"]["approved"] == 1
        async with open_store(settings.store_url) as store:
            [rec] = [a for a in await store.actions_for_incident(summary["incidentId"]) if a.id == suspend_id]
            assert rec.status == "applied"
    finally:
        await stop_security(s)


async def test_redis_keys_enforced_by_the_sdk_check(redis_server: ChildService) -> None:
    """Keys written by the enforcement adapter are enforced by RedisEnforcementCheck: a blocked IP
    and a suspended user get -32003, a rate-limited user -32006 beyond its rate, and a lifted
    block allows calls again once the cache expires."""
    from adapters.enforcement.actions import RedisEnforcement
    from protocol.rpc import UserContext
    from sdk.enforcement import RedisEnforcementCheck
    from sdk.service import CallContext

    prefix = uniq("t")
    keys = RedisEnforcement(url=redis_server.url, prefix=prefix)
    check = RedisEnforcementCheck(url=redis_server.url, prefix=prefix, cache_s=0.2)
    ctx = CallContext(service="S", method="m", call_id="1", correlation_id=None, user_context=None,
                      reply_to="session/x/response", received_at=0.0)
    now = time.time()
    bad_ip, user, limited = ip(), uniq("sus"), uniq("lim")
    try:
        await keys.apply({"action": "block_ip", "target": bad_ip}, until=now + 60, now=now)
        await keys.apply({"action": "suspend_user", "target": user}, until=None, now=now)
        await keys.apply({"action": "rate_limit_user", "target": limited, "params": {"ratePerMinute": 6}},
                         until=now + 60, now=now)
        refused = await check(ctx, UserContext(user_id="ok", ip_address=bad_ip))
        assert refused is not None and refused.code == -32003
        refused = await check(ctx, UserContext(user_id=user, ip_address=ip()))
        assert refused is not None and refused.code == -32003
        assert await check(ctx, UserContext(user_id=limited)) is None  # burst of 1 at 6/min
        refused = await check(ctx, UserContext(user_id=limited))
        assert refused is not None and refused.code == -32006
        assert await check(ctx, UserContext(user_id="someone-else", ip_address=ip())) is None
        await keys.undo("unblock_ip", bad_ip)
        await asyncio.sleep(0.25)  # the check's 0.2 s cache must expire: time passing is the point
        assert await check(ctx, UserContext(user_id="ok", ip_address=bad_ip)) is None
    finally:
        await keys.close()
        await check.close()
