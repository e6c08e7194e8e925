"""The trust boundary around enforcement and incidents, on the real session mosquitto with the
IncidentResponder's body in-process (its own signing bus, as operate --signing-key runs it, and a
SQLite store): an SDK's ActionsEnforcement with a trust ignores forged active sets and acts on the
responder's; drivers.incidents publishes a resolution SDK clients believe; an idle incident
resolves as expired."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actors.clock import Clock, FakeClock
from actors.incident_responder import ResponderBody
from actors.security_common import SecurityOptions
from actors.settings import OperateSettings
from adapters.mqtt.signing import ensure_key_pair, public_key_path
from adapters.store import IncidentRecord, open_store
from drivers import incidents as incidents_cli
from protocol import parse_model, topics
from protocol.rpc import UserContext
from protocol.security import ActiveActions, IncidentMessage
from sdk.enforcement import ActionsEnforcement, active_topic
from sdk.errors import AuthorizationError
from sdk.service import CallContext
from sdk.trust import SystemTrust, verified
from tests.support.mqtt import Collector, running_bus, wait_until

pytestmark = pytest.mark.integration

CTX = CallContext(service="Shop", method="buy", call_id="1", correlation_id=None, user_context=None,
                  reply_to="session/s/response", received_at=0.0)


def addr() -> str:
    n = uuid.uuid4().int
    return f"203.0.{n % 250 + 1}.{(n >> 8) % 250 + 1}"


def blocked(enforcement: ActionsEnforcement, ip: str) -> bool:
    return isinstance(enforcement(CTX, UserContext(ip_address=ip)), AuthorizationError)


def brute_force(ip: str, at: float) -> dict[str, Any]:
    return {"type": "brute_force_attempt", "severity": "critical", "source": ip, "target": ip,
            "description": "failed logins", "timestamp": at, "ipAddress": ip}


def active_set(ips: list[str], at: datetime) -> dict[str, Any]:
    return ActiveActions.model_validate({"actions": [{"action": "block_ip", "target": ip} for ip in ips],
                                         "timestamp": at}).to_wire()


@asynccontextmanager
async def responder(broker_url: str, tmp_path: Path, key: Path, clock: Clock | None = None,
                    **options: float) -> AsyncIterator[ResponderBody]:
    settings = OperateSettings(broker_url=broker_url, cluster_id=f"t{uuid.uuid4().hex[:8]}",
                               store_url=f"sqlite:///{tmp_path / 'ops.db'}", signing_key_file=str(key))
    opts = SecurityOptions(**({"undo_poll_s": 3600.0, "store_poll_s": 3600.0} | options))
    r = ResponderBody(settings, opts, clock=clock)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


async def test_enforcement_with_trust_ignores_forged_active_sets(broker_url: str, tmp_path: Path) -> None:
    """A forged active set (unsigned from another client, signed with another key, or a signed one
    replayed stale) does not change a trusting enforcement's bans — an enforcement that allows
    unsigned sets takes the unsigned forgery, so it did arrive; the responder's signed sets do."""
    key, rogue = tmp_path / "sfa.key", tmp_path / "rogue.key"
    ensure_key_pair(key)
    ensure_key_pair(rogue)
    trust = SystemTrust.from_files(public_key_path(key))
    first, second = addr(), addr()
    async with (responder(broker_url, tmp_path, key) as r,
                running_bus(broker_url) as client_bus, running_bus(broker_url) as attacker,
                running_bus(broker_url, config={"signing_key_file": str(rogue)}) as rogue_bus,
                running_bus(broker_url, config={"signing_key_file": str(key)}) as replayer):
        topic = active_topic(r.cluster)
        trusting = ActionsEnforcement(cluster=r.cluster, trust=trust)
        loose = ActionsEnforcement(cluster=r.cluster, allow_unsigned=True)
        await trusting.attach(client_bus)
        await loose.attach(client_bus)

        await r.handle(brute_force(first, time.time()))
        await wait_until(lambda: blocked(trusting, first), timeout=10)
        updates = trusting.updates

        now = datetime.now(UTC)
        await attacker.publish(topic, active_set([second], now), qos=1, retain=True)  # unsigned: lifts `first`
        await wait_until(lambda: blocked(loose, second) and not blocked(loose, first), timeout=5)
        await rogue_bus.publish(topic, active_set([second], now), qos=1, retain=True)  # another key
        await replayer.publish(topic, active_set([second], now - timedelta(hours=2)), qos=1, retain=True)  # stale
        await wait_until(lambda: trust.refused >= 3, timeout=5)
        assert {k: trust.counts[k] for k in ("unsigned", "unknown_key", "stale")} == {
            "unsigned": 1, "unknown_key": 1, "stale": 1}, trust.counts
        assert trusting.updates == updates and blocked(trusting, first) and not blocked(trusting, second)

        await r.handle(brute_force(second, time.time()))  # the responder's signed set, now with both
        await wait_until(lambda: blocked(trusting, second), timeout=10)
        assert blocked(trusting, first)
        await attacker.publish(topic, b"", qos=1, retain=True)
    assert trust.counts["trusted"] == 3, trust.counts  # the responder's sets: at start (empty), `first`, both


def test_enforcement_needs_an_explicit_choice() -> None:
    """Without a trust the caller must allow unsigned sets explicitly."""
    with pytest.raises(ValueError, match="allow_unsigned"):
        ActionsEnforcement(cluster="c")
    assert ActionsEnforcement(cluster="c", allow_unsigned=True).trust is None


async def _incident(url: str) -> None:
    async with open_store(url) as store:
        await store.incident_upsert(IncidentRecord(id="inc-1", type="security", severity="critical",
                                                   title="brute_force_attempt", source="203.0.113.9",
                                                   created_at=time.time()))


async def test_incidents_cli_publishes_a_signed_resolution(broker_url: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """resolve --broker without --signing-key is refused before anything changes; with operate's key
    the resolved message is signed and a trusting client believes it; --unsigned publishes one
    that it ignores and counts."""
    key = tmp_path / "sfa.key"
    ensure_key_pair(key)
    url, cluster = f"sqlite:///{tmp_path / 'i.db'}", f"c{uuid.uuid4().hex[:8]}"
    await _incident(url)
    trust = SystemTrust.from_files(public_key_path(key))
    base = ["--store", url, "--cluster-id", cluster, "--broker", broker_url]
    async with running_bus(broker_url) as bus:
        believed = Collector()
        await bus.subscribe(topics.system_incidents(cluster), verified(believed, trust), qos=1)

        assert await incidents_cli.run([*base, "resolve", "inc-1"]) == 2
        assert "--signing-key" in capsys.readouterr().err
        async with open_store(url) as store:
            inc = await store.incident_get("inc-1")
            assert inc is not None and inc.status == "open" and await store.outbox_pending() == []

        assert await incidents_cli.run([*base, "--signing-key", str(key), "resolve", "inc-1"]) == 0
        [msg] = await believed.wait_for(1)
        resolved = parse_model(IncidentMessage, msg.payload)
        assert (resolved.event, resolved.incident_id, resolved.resolution) == ("resolved", "inc-1", "operator")
        async with open_store(url) as store:
            assert await store.outbox_pending() == []  # acknowledged, so marked published

        await _incident(url)  # open again (same id), resolved unsigned this time
        assert await incidents_cli.run([*base, "--unsigned", "resolve", "inc-1"]) == 0
        await wait_until(lambda: trust.counts["unsigned"] == 1, timeout=5)
    assert len(believed.messages) == 1 and trust.counts["trusted"] == 1


async def test_idle_incident_resolves_as_expired(broker_url: str, tmp_path: Path) -> None:
    """An incident with no new event for the policy's TTL (24 h) is resolved as expired by the
    responder's housekeeping, with a signed resolved message; the retained active set, stale by
    then, is republished fresh; an operator's resolution says so."""
    key = tmp_path / "sfa.key"
    ensure_key_pair(key)
    trust = SystemTrust.from_files(public_key_path(key))
    ttl = 24 * 3600.0
    clock = FakeClock(start=time.time() - ttl - 120)
    async with (responder(broker_url, tmp_path, key, clock, housekeeping_s=0.05) as r,
                running_bus(broker_url) as bus):
        believed = Collector()
        await bus.subscribe(topics.system_incidents(r.cluster), verified(believed, trust), qos=1)
        enforcement = ActionsEnforcement(cluster=r.cluster, trust=trust)
        await enforcement.attach(bus)
        summary = await r.handle(brute_force(addr(), clock.now()))
        assert summary is not None
        await wait_until(lambda: trust.counts["stale"] >= 2, timeout=5)  # created message and set: a day old
        assert r.counts["expired"] == 0 and enforcement.updates == 0

        clock.advance(ttl + 120)
        [msg] = await believed.wait_for(1, timeout=10)
        resolved = parse_model(IncidentMessage, msg.payload)
        assert (resolved.event, resolved.status, resolved.resolution, resolved.incident_id) == (
            "resolved", "resolved", "expired", summary["incidentId"])
        await wait_until(lambda: enforcement.updates == 1, timeout=5)
        inc = await r.store.inner.incident_get(summary["incidentId"])
        assert inc is not None and inc.status == "resolved" and inc.data["log"][-1]["result"] == "expired"
        assert r.counts["expired"] == 1

        fresh = await r.handle(brute_force(addr(), clock.now()))  # an operator resolves this one
        assert fresh is not None and await r.resolve(fresh["incidentId"], "handled")
        await wait_until(lambda: any(parse_model(IncidentMessage, m.payload).resolution == "operator"
                                     for m in believed.messages), timeout=5)
        assert r.counts["expired"] == 1
        await bus.publish(active_topic(r.cluster), b"", qos=1, retain=True)
