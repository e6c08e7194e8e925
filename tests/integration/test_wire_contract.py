"""The wire contract with its real producers and consumers: operate (real Ray, real mosquitto)
and what it watches. Everything sfa-ops publishes on ``system/{cluster}/#`` (and every -32503
answer it sends) is recorded and must parse with its ``protocol`` model (``protocol.contract``),
and the real consumers act on those real messages. Nothing is built by the test from the models
except what the platform itself would send (the auth service's ``AuthEvent``).

- Tiers 1-2: the sample platform (one process per service) goes through a breaker open/close
  cycle, a degradation, a crash and a cascade; a ``PlatformAwareClient`` fails fast on the real
  open breaker and the real ``service_unavailable`` and calls again after the real close and
  recovery. The audit anchor published meanwhile parses too.
- Tier 3 and security: operate (signing what it publishes) checks a real Redis that is stopped
  and started again, and sees failed logins from one address; the real infrastructure_error /
  infrastructure_recovered reach a trusting ``PlatformAwareClient``, and the real retained active
  set makes a service runtime's ``ActionsEnforcement`` refuse the blocked address.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.mqtt.bus import Message, MqttBus, MqttConfig
from adapters.mqtt.signing import ensure_key_pair, public_key_path
from adapters.runtime.processes import start_redis
from drivers.sample_platform import SERVICES, FaultMode
from drivers.simulate_platform import PlatformProcesses
from drivers.simulate_traffic import Traffic
from protocol import ProtocolError, topics
from protocol.base import utc_now
from protocol.contract import ACTIVE_ACTIONS_SUFFIX, parse_published
from protocol.rpc import ErrorResponse, UserContext
from protocol.security import AuthEvent
from sdk.client import ServiceClient
from sdk.client_events import ClientEvent, InfrastructureRecoveredEvent, InfrastructureWarningEvent
from sdk.enforcement import ActionsEnforcement
from sdk.errors import ServiceTemporarilyUnavailableException, ServiceTimeoutException
from sdk.platform_client import PlatformAwareClient
from sdk.runtime import ServiceRuntime
from sdk.service import Service
from sdk.trust import SystemTrust
from tests.support.operations import operations

pytestmark = pytest.mark.usefixtures("ray_session")

POLICIES = {
    # Calls may stay pending long enough to be answered -32503 when their service crashes.
    "observation.yaml": "call_timeout: 20s\ntick: 100ms\n",
    # Open for 6 s: long enough for the client to act on the real open event on a loaded machine.
    "circuit_breaker.yaml": ("defaults:\n  minimum_calls: 5\n  window: 20s\n  open_timeout: 6s\n"
                             "  half_open_max_calls: 2\n  half_open_success_threshold: 2\n"),
    "dependencies.yaml": "dependencies:\n  OrderManagement: [UserManagement]\n",
}


class Tape:
    """Every message on the subscribed filters, raw, in arrival order; with ``trust``, also each
    message's signature verdict (``SystemTrust.check``)."""

    def __init__(self, trust: SystemTrust | None = None) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.trust = trust
        self.verdicts: Counter[str] = Counter()

    def __call__(self, msg: Message) -> None:
        self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
        if self.trust is not None:
            self.verdicts[self.trust.check(msg)] += 1

    def docs(self, prefix: str) -> list[dict[str, Any]]:
        out = []
        for topic, payload, _ in self.messages:
            if topic.startswith(prefix) and payload:
                with contextlib.suppress(orjson.JSONDecodeError):
                    doc = orjson.loads(payload)
                    if isinstance(doc, dict):
                        out.append(doc)
        return out


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def until_hung(client: ServiceClient, service: str, timeout: float = 20.0) -> None:
    """Until a call to ``service`` goes unanswered for a second (its retained fault mode applies)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            await client.call_raw(service, "getUser", {"userId": "probe"}, timeout=1.0)
        except ServiceTimeoutException:
            return
    raise AssertionError(f"{service} still answers {timeout}s after being told to hang")


def breaker_moves(tape: Tape, cluster: str, service: str) -> list[str]:
    return [d["to"] for d in tape.docs(f"system/{cluster}/circuit-breaker")
            if d.get("type") == "circuit_breaker_state_change" and d.get("service") == service]


def of_type(tape: Tape, cluster: str, kind: str, **fields: Any) -> list[dict[str, Any]]:
    return [d for d in tape.docs(f"system/{cluster}/") if d.get("type") == kind
            and all(d.get(k) == v for k, v in fields.items())]


def parse_recorded(tape: Tape, cluster: str) -> Counter[str]:
    """Parse every recorded message on ``system/{cluster}/#`` with its contract model (asserting
    none fails); how many of each model were seen."""
    kinds: Counter[str] = Counter()
    bad: list[str] = []
    for topic, payload, _retained in tape.messages:
        if not topic.startswith(f"system/{cluster}/") or not payload:
            continue
        try:
            kinds[type(parse_published(topic, payload)).__name__] += 1
        except ProtocolError as exc:
            bad.append(f"{topic}: {exc}: {payload[:300]!r}")
    assert not bad, "\n".join(bad[:10])
    return kinds


@pytest.mark.timeout(480)  # ~140 s of scripted scenario, plus the session Ray's start when it runs first
async def test_real_producers_parse_and_drive_the_platform_aware_client(broker_url: str, tmp_path: Path) -> None:
    """Crash, breaker cycle, cascade, degradation: every real message parses with its model, and a
    PlatformAwareClient fails fast on the real open breaker / service_unavailable, then recovers."""
    # The scenario itself is bounded (each wait below); only the actors' start may take long on a busy machine.
    async with operations(broker_url, tmp_path, policies=POLICIES, start_timeout=240,
                          extra={"audit_anchor_interval": 5.0}) as ops:
        c = ops.cluster
        tape = Tape()
        await ops.bus.subscribe(f"system/{c}/#", tape, qos=1)
        await ops.bus.subscribe("session/+/response", tape, qos=1)
        procs = PlatformProcesses(broker=broker_url, cluster=c, log_dir=tmp_path / "instances", bus=ops.bus,
                                  instances=("i1",))
        for s in SERVICES:
            await procs.set_mode(s, FaultMode())
        procs.start_all()
        client_bus = MqttBus(config=MqttConfig.from_url(broker_url))
        await client_bus.start()
        await client_bus.wait_connected(10)
        client = PlatformAwareClient(ServiceClient(client_bus), cluster=c)
        await client.start()
        traffic_bus = MqttBus(config=MqttConfig.from_url(broker_url))
        await traffic_bus.start()
        await traffic_bus.wait_connected(10)
        traffic_client = ServiceClient(traffic_bus)
        await traffic_client.start()
        traffic = Traffic(client=traffic_client, rate=16.0, seed=7)
        stop = asyncio.Event()
        running = asyncio.create_task(traffic.run(stop))
        try:
            await until(lambda: all(s in (ops.health() or {}).get("services", {}) for s in SERVICES), 60,
                        "every sample service in the health summary")

            # 1. Breaker cycle on Payments: the client fails fast on the real open event, and calls
            #    again once the real half_open/closed events arrive.
            await procs.set_mode("Payments", FaultMode(mode="internal_errors", rate=1.0))
            await until(lambda: "open" in breaker_moves(tape, c, "Payments"), 30, "Payments breaker open")
            await until(lambda: client.strategy.view("Payments").breaker_state == "open", 5,
                        "the client to see the open breaker")
            before = client.counts["fast_failed"]
            with pytest.raises(ServiceTemporarilyUnavailableException) as info:
                await client.call("Payments", "charge", {"userId": "u1", "amount": 5.0}, timeout=5)
            assert info.value.local and info.value.circuit_open
            assert 0 < (info.value.retry_after or 0) <= 6.5
            assert client.counts["fast_failed"] == before + 1
            await procs.set_mode("Payments", FaultMode())
            await until(lambda: breaker_moves(tape, c, "Payments")[-1:] == ["closed"], 40, "Payments closed")
            await until(lambda: client.strategy.view("Payments").breaker_state == "closed", 5,
                        "the client to see the closed breaker")
            assert (await client.call("Payments", "charge", {"userId": "u1", "amount": 5.0}, timeout=10)).value

            # 2. Degradation: a third of Inventory's calls fail (under the breaker's 50 %).
            await procs.set_mode("Inventory", FaultMode(mode="internal_errors", rate=0.35))
            await until(lambda: of_type(tape, c, "service_degraded", service="Inventory"), 40,
                        "service_degraded for Inventory")
            await procs.set_mode("Inventory", FaultMode())

            # 3. Crash with pending calls, and the cascade to OrderManagement.
            await procs.set_mode("UserManagement", FaultMode(mode="hang", rate=1.0))
            await until_hung(traffic_client, "UserManagement")
            calls = Tape()
            await ops.bus.subscribe("service/UserManagement", calls, qos=1)
            pending = [asyncio.create_task(client.call("UserManagement", "getUser", {"userId": f"p{i}"},
                                                       timeout=18)) for i in range(3)]
            # The calls reach the service (and hang there) before it dies: the broker has routed them.
            await until(lambda: {d.get("params", {}).get("userId") for d in calls.docs("service/")}
                        >= {"p0", "p1", "p2"}, 10, "the three pending calls routed by the broker")
            await procs.crash("UserManagement")
            await procs.set_mode("UserManagement", FaultMode())  # retained: the restarted instance is normal
            answers = await asyncio.gather(*pending, return_exceptions=True)
            for a in answers:
                assert isinstance(a, ServiceTemporarilyUnavailableException), a
                assert not a.local and not a.circuit_open and a.retry_after is not None and a.retry_after > 0
            await until(lambda: of_type(tape, c, "service_unavailable", service="UserManagement"), 20,
                        "service_unavailable for UserManagement")
            await until(lambda: client.strategy.is_unavailable(client.strategy.view("UserManagement"),
                                                                time.time()), 5,
                        "the client to hold UserManagement unavailable")
            with pytest.raises(ServiceTemporarilyUnavailableException) as info:
                await client.call("UserManagement", "getUser", {"userId": "u1"}, timeout=5)
            assert info.value.local  # (circuit_open too when the breaker's open event came first)
            await until(lambda: of_type(tape, c, "cascading_failure_prevented", originService="UserManagement"),
                        20, "cascading_failure_prevented")
            await procs.restart("UserManagement")
            await until(lambda: of_type(tape, c, "service_recovered", service="UserManagement"), 90,
                        "service_recovered for UserManagement")
            await until(lambda: not client.strategy.is_unavailable(client.strategy.view("UserManagement"),
                                                                    time.time()), 5,
                        "the client to clear UserManagement")
            await until(lambda: client.strategy.view("UserManagement").breaker_state in ("closed", "half_open"),
                        40, "UserManagement breaker leaving open")
            assert (await client.call("UserManagement", "getUser", {"userId": "u1"}, timeout=10)).value
        finally:
            stop.set()
            running.cancel()
            with contextlib.suppress(BaseException):
                await running
            await client.close()
            await traffic_client.close()
            await asyncio.to_thread(procs.stop_all)
            await client_bus.stop()
            await traffic_bus.stop()

        kinds = parse_recorded(tape, c)
        for model in ("BreakerStateChange", "BreakerState", "SystemHealth", "ServiceUnavailable", "ServiceDegraded",
                      "ServiceRecovered", "CascadingFailurePrevented", "Presence", "AuditAnchor"):
            assert kinds[model], f"no {model} recorded: {dict(kinds)}"
        # Every response parses with its model. sfa-ops' -32503 answers (they name ``serviceName``;
        # a sample service answering -32503 itself for a dependency names ``service``) carry
        # retryAfter as an instant after they were sent.
        kinds_503: Counter[str] = Counter()
        for topic, payload, _retained in tape.messages:
            if not topic.startswith("session/"):
                continue
            reply = parse_published(topic, payload)
            if not isinstance(reply, ErrorResponse) or reply.error.code != -32503:
                continue
            err = reply.error
            if err.data is None or err.data.service_name is None:
                continue
            assert err.data.retry_after is not None and err.data.timestamp is not None
            assert err.data.retry_after > err.data.timestamp
            kinds_503[err.data.error_type] += 1
        assert kinds_503["CircuitBreakerOpen"] and kinds_503["ServiceUnavailable"], dict(kinds_503)
        # The client understood every message it received.
        assert client.counts["system_malformed"] == 0 and client.counts["system_mismatched"] == 0


# -- tier 3 and security: a real Redis checked by operate, failed logins as the auth service sends them --

INFRA_POLICIES = {
    "infrastructure.yaml": ("defaults: {interval: 1s, timeout: 1s, failures_before_error: 2, "
                            "successes_before_recovery: 1}\nservice_dependencies:\n  UserManagement: [redis]\n"),
}
ATTACKER_IP = "203.0.113.66"  # TEST-NET-3
BYSTANDER_IP = "198.51.100.20"  # TEST-NET-2


async def failed_logins(bus: MqttBus, n: int, ip: str) -> None:
    """``n`` failed logins from ``ip`` for different users, as the auth service publishes them."""
    for i in range(n):
        event = AuthEvent(user_id=f"victim-{i}", ip_address=ip, success=False, timestamp=utc_now(),
                          method="password", reason="invalid_credentials")
        await bus.publish(topics.security_auth("login"), event.to_wire(), qos=1)
    await bus.flush(5)


async def first_refusal(caller: ServiceClient, service: str, user: UserContext, timeout: float) -> dict[str, Any]:
    """Call ``ping`` until the service answers with an error (its enforcement has the ban)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        doc = await caller.call_raw(service, "ping", {}, user_context=user, timeout=10)
        if "error" in doc:
            return doc
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{user.ip_address} still served {timeout}s after the ban was published")
        await asyncio.sleep(0.05)


async def test_infrastructure_and_security_messages_from_real_producers(broker_url: str, tmp_path: Path) -> None:
    """operate checks a real Redis (stopped, then started again on its port) and analyses failed
    logins published through ``protocol.security.AuthEvent``: every message it publishes on
    ``system/{cluster}/#`` — infrastructure_error/recovered, the security alert, incident, enforcement
    action, active set, user notice and the audit anchor — parses with its contract model; a real
    PlatformAwareClient records the Redis outage and its end; a real service runtime's
    ``ActionsEnforcement`` refuses the blocked IP from the real retained active set."""
    key = tmp_path / "signing.key"
    ensure_key_pair(key)
    trust = SystemTrust.from_files(public_key_path(key))
    redis_servers = [start_redis()]
    port = redis_servers[0].port
    extra = {"check_redis": [redis_servers[0].url], "audit_anchor_interval": 2.0, "signing_key": str(key)}
    try:
        async with operations(broker_url, tmp_path, policies=INFRA_POLICIES, extra=extra, start_timeout=240) as ops:
            c = ops.cluster
            tape = Tape(SystemTrust.from_files(public_key_path(key)))
            await ops.bus.subscribe(f"system/{c}/#", tape, qos=1)
            client_bus = MqttBus(config=MqttConfig.from_url(broker_url))
            await client_bus.start()
            await client_bus.wait_connected(10)
            client = PlatformAwareClient(ServiceClient(client_bus), cluster=c, trust=trust)
            events: list[ClientEvent] = []
            client.on_event(events.append)
            await client.start()

            shop = Service("ContractShop")

            @shop.function("ping")
            async def ping() -> str:
                return "pong"

            enforcement = ActionsEnforcement(cluster=c, trust=SystemTrust.from_files(public_key_path(key)))
            runtime = ServiceRuntime.connect(shop, broker_url=broker_url, cluster=c, enforcement=enforcement)
            await enforcement.attach(runtime.bus)
            attacker = UserContext(user_id="shopper", ip_address=ATTACKER_IP)
            try:
                async with runtime, ServiceClient(ops.bus) as caller:
                    # -- tier 3: Redis down, then up again on the same port
                    await until(lambda: ((ops.health() or {}).get("infrastructure") or {}).get("redis", {})
                                .get("status") == "healthy", 30, "redis healthy in the health summary")
                    redis_servers[0].kill()
                    await until(lambda: of_type(tape, c, "infrastructure_error", component="redis"), 15,
                                "infrastructure_error for redis")
                    await until(lambda: any(isinstance(e, InfrastructureWarningEvent) and e.component == "redis"
                                            for e in events), 5, "the client's infrastructure warning")
                    assert client.strategy.infra_active("redis", time.time())
                    # As in the seed's client, Redis trouble is recorded and announced; only broker trouble
                    # (longer timeouts) and database trouble (writes deferred) change how calls are made.
                    plan = client.strategy.plan("ContractShop", "updateOrder", base_timeout=30.0, now=time.time())
                    assert (plan.action, plan.timeout) == ("call", 30.0)
                    redis_servers.append(start_redis(port=port))
                    await until(lambda: of_type(tape, c, "infrastructure_recovered", component="redis"), 15,
                                "infrastructure_recovered for redis")
                    await until(lambda: any(isinstance(e, InfrastructureRecoveredEvent) and e.component == "redis"
                                            for e in events), 5, "the client's infrastructure recovery")
                    assert not client.strategy.infra_active("redis", time.time())

                    # -- security: failed logins → brute-force finding → incident → block_ip → refused call
                    ok = await caller.call_raw(shop.name, "ping", {}, user_context=attacker, timeout=10)
                    assert ok.get("result") == "pong", ok
                    await failed_logins(ops.bus, 5, ATTACKER_IP)
                    await until(lambda: of_type(tape, c, "incident", event="created", alertType="brute_force_attempt",
                                                target=ATTACKER_IP), 20, "the brute_force_attempt incident")
                    await until(lambda: [d for d in tape.docs(f"system/{c}/{ACTIVE_ACTIONS_SUFFIX}")
                                         if any(a.get("target") == ATTACKER_IP for a in d.get("actions", []))],
                                10, "the retained active set blocking the attacker")
                    refused = await first_refusal(caller, shop.name, attacker, 10)
                    assert refused["error"]["code"] == -32003, refused
                    assert refused["error"]["data"]["details"]["reason"] == "ip_blocked"
                    other = UserContext(user_id="shopper", ip_address=BYSTANDER_IP)
                    assert (await caller.call_raw(shop.name, "ping", {}, user_context=other, timeout=10)
                            ).get("result") == "pong"
                    assert enforcement.counts["ip_blocked"] == 1 and enforcement.malformed == 0
                    # By the default routing the critical BruteForceAttempt goes to the critical-alerts
                    # receiver (no MQTT); its incident's level-1 escalation goes to security-team, on MQTT.
                    [incident] = [d for d in tape.docs(f"system/{c}/incidents") if d.get("event") == "created"
                                  and d.get("alertType") == "brute_force_attempt" and d.get("target") == ATTACKER_IP]
                    await until(lambda: [d for d in tape.docs(f"system/{c}/alerts")
                                         if d.get("labels", {}).get("alertname") == "SecurityIncidentEscalated"
                                         and d["labels"].get("incident") == incident["incidentId"]],
                                10, "the SecurityIncidentEscalated alert on system/{cluster}/alerts")
                    await until(lambda: tape.docs(f"system/{c}/audit/anchor"), 10, "an audit anchor")
            finally:
                await client.close()
                await client_bus.stop()
    finally:
        for svc in redis_servers:
            svc.stop()

    kinds = parse_recorded(tape, c)
    for model in ("InfrastructureError", "InfrastructureRecovered", "AlertMessage", "IncidentMessage",
                  "EnforcementAction", "ActiveActions", "SecurityNotice", "AuditAnchor"):
        assert kinds[model], f"no {model} recorded: {dict(kinds)}"
    emergency = {(d.get("type"), d.get("component") or d.get("incidentId")) for d in tape.docs(f"system/{c}/emergency")}
    assert {("infrastructure_error", "redis"), ("incident", incident["incidentId"])} <= emergency, emergency
    assert client.counts["system_malformed"] == 0 and client.counts["system_mismatched"] == 0
    # Everything operate published was signed with its key (presence is the services' own, exempt),
    # and the client believed every system message it received.
    assert set(tape.verdicts) <= {"trusted", "exempt"} and tape.verdicts["trusted"], dict(tape.verdicts)
    assert trust.counts["trusted"] and trust.refused == 0, trust.counts
