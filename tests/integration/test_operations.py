"""The operations job end to end: real mosquitto, real local Ray, SQLite; observed only on the
broker, as the platform's clients see it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from protocol import parse_model
from protocol.rpc import ErrorResponse
from protocol.security import IncidentMessage
from protocol.system import CascadingFailurePrevented, ServiceRecovered, ServiceUnavailable
from sdk import ServiceClient, ServiceTemporarilyUnavailableException, ValidationException
from sdk.errors import ServiceException
from tests.support.mqtt import Collector
from tests.support.operations import ServiceProcess, operations

pytestmark = pytest.mark.usefixtures("ray_session")


def breaker_states(ops, service: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [e["to"] for e in ops.watcher.on("/circuit-breaker") if e.get("service") == service]


async def test_instance_crash_answers_pending_and_recovers(broker_url: str, tmp_path: Path, client: ServiceClient,
                                                           procs: list[ServiceProcess]) -> None:
    """Crash with pending calls: service_unavailable, every pending call -32503 with retryAfter, new
    calls fast-failed; restart: service_recovered and the breaker half_open -> closed."""
    async with operations(broker_url, tmp_path, policies={
            "observation.yaml": "call_timeout: 30s\ntick: 100ms\n"}) as ops:
        svc = ServiceProcess(broker_url, ops.cluster, "Inventory")
        procs.append(svc.start())
        assert await client.call("Inventory", "ok", {}, timeout=5) == {"ok": True, "service": "Inventory"}
        await ops.watcher.wait(lambda w: any("Inventory" in h.get("services", {}) for h in w.on("/health")), 10,
                               "Inventory in the health summary")
        calls = Collector()
        await ops.bus.subscribe("service/Inventory", calls, qos=1)
        pending = [asyncio.create_task(client.call_raw("Inventory", "hang", {}, timeout=20)) for _ in range(5)]
        await calls.wait_for(5)  # the broker has routed the five calls (to the service and the observer too)
        svc.kill()
        answers = await asyncio.wait_for(asyncio.gather(*pending), 5)
        for doc in answers:
            err = parse_model(ErrorResponse, doc).error
            assert err.code == -32503 and err.message == "Service Temporarily Unavailable"
            assert err.data is not None and err.data.error_type == "ServiceUnavailable"
            assert err.data.retry_after is not None and err.data.timestamp is not None
            assert err.data.retry_after > err.data.timestamp  # an instant after the answer
            assert err.data.retry_after_seconds and err.data.retry_after_seconds > 0
        found = await ops.watcher.wait(lambda w: w.of_type("service_unavailable"), 5, "service_unavailable")
        down = parse_model(ServiceUnavailable, found[-1])
        assert down.service == "Inventory" and down.reason == "no_running_pods"
        assert down.details.running_pods == 0 and down.details.total_pods == 1
        with pytest.raises(ServiceTemporarilyUnavailableException) as info:
            await client.call("Inventory", "ok", {}, timeout=5)
        assert info.value.retry_after is not None
        svc = ServiceProcess(broker_url, ops.cluster, "Inventory")
        procs.append(svc.start())
        rec = await ops.watcher.wait(lambda w: w.of_type("service_recovered"), 10, "service_recovered")
        assert parse_model(ServiceRecovered, rec[-1]).previous_status == "down"
        await asyncio.sleep(2.2)  # open_timeout 2 s
        for _ in range(6):
            try:
                await client.call("Inventory", "ok", {}, timeout=5)
            except ServiceTemporarilyUnavailableException:
                await asyncio.sleep(0.3)
        await ops.watcher.wait(lambda w: breaker_states(ops, "Inventory")[-2:] == ["half_open", "closed"], 10,
                               "half_open then closed")


async def test_caller_errors_never_open_breaker(broker_url: str, tmp_path: Path, client: ServiceClient,
                                                procs: list[ServiceProcess]) -> None:
    """100 % validation errors: no breaker opening, no service_unavailable, status stays healthy."""
    async with operations(broker_url, tmp_path) as ops:
        procs.append(ServiceProcess(broker_url, ops.cluster, "Users").start())
        for _ in range(30):
            with pytest.raises(ValidationException):
                await client.call("Users", "invalid", {}, timeout=5)
        h = await ops.watcher.wait(
            lambda w: [x for x in w.on("/health") if x["observed"]["responses"] >= 30 and "Users" in x["services"]],
            10, "30 responses counted")
        assert h[-1]["services"]["Users"]["breaker"] == "closed"
        assert h[-1]["services"]["Users"]["status"] == "healthy"
        assert breaker_states(ops, "Users") == []
        assert ops.watcher.of_type("service_unavailable") == []


async def test_internal_errors_open_then_half_open_then_close(broker_url: str, tmp_path: Path,
                                                              client: ServiceClient,
                                                              procs: list[ServiceProcess]) -> None:
    """Internal errors over the threshold: open event + retained state, fast-fail, half_open after
    open_timeout, closed after the success threshold; callers never see the exception text."""
    async with operations(broker_url, tmp_path) as ops:
        procs.append(ServiceProcess(broker_url, ops.cluster, "Payments").start())
        for _ in range(6):
            with pytest.raises(ServiceException) as info:
                await client.call("Payments", "fail", {}, timeout=5)
            assert "hunter2" not in str(info.value.__dict__) and "exploded" not in str(info.value)
        await ops.watcher.wait(lambda w: "open" in breaker_states(ops, "Payments"), 5, "breaker open")
        # The retained state is a message of its own, published just after the change event.
        retained = await ops.watcher.wait(lambda w: w.on("/circuit-breaker/Payments"), 5, "retained breaker state")
        assert retained[-1]["state"] == "open"
        # sfa-ops observes, it does not sit in the path: the live service still gets the call and
        # may answer too. What is proven: sfa-ops answers it at once with -32503 on the reply topic.
        answers = Collector()
        await ops.bus.subscribe("session/probe-cb/response", answers, qos=1)
        ops.bus.publish_nowait("service/Payments", {"jsonrpc": "2.0", "id": "p1", "method": "ok",
                                                    "replyTo": "session/probe-cb/response"}, qos=1)
        await answers.wait_for(1)
        await asyncio.sleep(0.3)
        fast = [d for d in answers.json() if "error" in d]
        assert fast and fast[0]["error"]["message"] == "Circuit Breaker Open"
        assert fast[0]["error"]["data"]["errorType"] == "CircuitBreakerOpen"
        cb = parse_model(ErrorResponse, fast[0]).error.data
        assert cb is not None and cb.retry_after is not None and cb.timestamp is not None
        assert cb.retry_after > cb.timestamp and (cb.retry_after_seconds or 0) > 0
        await asyncio.sleep(2.1)  # open_timeout 2 s: the breaker lets a probe through only after it
        assert await client.call("Payments", "ok", {}, timeout=5) == {"ok": True, "service": "Payments"}
        assert await client.call("Payments", "ok", {}, timeout=5) == {"ok": True, "service": "Payments"}
        await ops.watcher.wait(lambda w: breaker_states(ops, "Payments") == ["open", "half_open", "closed"], 5,
                               "open, half_open, closed")


async def test_hung_service_times_out_and_opens(broker_url: str, tmp_path: Path, client: ServiceClient,
                                                procs: list[ServiceProcess]) -> None:
    """A service that is alive but never answers: timeouts count as failures, the breaker opens and
    health says degraded with poor_response_rate."""
    async with operations(broker_url, tmp_path) as ops:
        procs.append(ServiceProcess(broker_url, ops.cluster, "Reports").start())
        calls = [asyncio.create_task(client.call_raw("Reports", "hang", {}, timeout=4)) for _ in range(6)]
        await ops.watcher.wait(lambda w: "open" in breaker_states(ops, "Reports"), 6, "breaker open on timeouts")
        degraded = await ops.watcher.wait(lambda w: w.of_type("service_degraded"), 6, "service_degraded")
        assert "poor_response_rate" in degraded[-1]["reasons"]
        for t in calls:
            t.cancel()


async def test_dependency_failure_opens_dependents(broker_url: str, tmp_path: Path, client: ServiceClient,
                                                   procs: list[ServiceProcess]) -> None:
    """A dependency goes down: its dependents' breakers open preemptively and
    cascading_failure_prevented names them."""
    deps = "dependencies:\n  Orders: [Users]\nmax_preemptive_open_percent: 100\n"
    async with operations(broker_url, tmp_path, policies={"dependencies.yaml": deps}) as ops:
        users = ServiceProcess(broker_url, ops.cluster, "Users").start()
        procs += [users, ServiceProcess(broker_url, ops.cluster, "Orders").start()]
        assert (await client.call("Orders", "call", {"service": "Users"}, timeout=5))["service"] == "Users"
        await ops.watcher.wait(lambda w: any(len(h.get("services", {})) >= 2 for h in w.on("/health")), 10,
                               "both services known")
        users.kill()
        found = await ops.watcher.wait(lambda w: w.of_type("cascading_failure_prevented"), 5, "cascade message")
        msg = parse_model(CascadingFailurePrevented, found[-1])
        assert msg.origin_service == "Users" and msg.affected_services == ["Orders"]
        assert "open" in breaker_states(ops, "Orders")


async def test_malformed_flood_beside_valid_traffic(broker_url: str, tmp_path: Path, client: ServiceClient,
                                                    procs: list[ServiceProcess]) -> None:
    """Non-JSON, wrong types, huge and deeply nested payloads are counted and dropped; valid calls
    beside them are still correlated and nothing restarts."""
    async with operations(broker_url, tmp_path) as ops:
        procs.append(ServiceProcess(broker_url, ops.cluster, "Echo").start())
        junk = [b"not json", b"[1,2,3]", b'{"jsonrpc":"2.0","id":1,"method":5}', b"{" * 5000,
                b'{"id":1}', b"x" * 400_000, b'{"jsonrpc":"2.0","id":2,"method":"ok","params":' + b"[" * 2000 + b"]" * 2000 + b"}"]
        for _ in range(10):
            for j in junk:
                ops.bus.publish_nowait("service/Echo", j, qos=1)
            assert (await client.call("Echo", "ok", {}, timeout=5))["ok"] is True
        h = await ops.watcher.wait(
            lambda w: [x for x in w.on("/health") if x["observed"]["responses"] >= 10 and "Echo" in x["services"]
                       and x["observed"]["malformed"] + x["observed"]["dropped"] >= 60], 10, "counters")
        observed = h[-1]["observed"]
        assert observed["malformed"] >= 50 and observed["dropped"] >= 10
        assert h[-1]["services"]["Echo"]["status"] == "healthy"


async def test_security_loop_through_operate(broker_url: str, tmp_path: Path, client: ServiceClient,
                                             procs: list[ServiceProcess]) -> None:
    """operate runs the security analyst and incident responder: five failed logins from one IP
    become an incident and a block_ip action on the broker; observed calls reach the audit trail."""
    async with operations(broker_url, tmp_path) as ops:
        procs.append(ServiceProcess(broker_url, ops.cluster, "Users").start())
        await client.call("Users", "ok", {}, timeout=5, user_context={"userId": "alice"})
        for i in range(5):
            ops.bus.publish_nowait("security/auth/login", {"userId": f"u{i}", "ipAddress": "203.0.113.9",
                                                           "success": False, "timestamp": "2026-01-01T00:00:00Z"},
                                   qos=1)
        incidents = await ops.watcher.wait(lambda w: w.on("/incidents"), 15, "an incident")
        incident = parse_model(IncidentMessage, incidents[0])
        assert incident.event == "created" and incident.severity in ("error", "critical", "emergency")
        actions = await ops.watcher.wait(
            lambda w: [a for a in w.on("/security/actions") if a.get("action") == "block_ip"], 10, "block_ip")
        assert actions[0]["target"] == "203.0.113.9"
        from adapters.store import open_store

        store = open_store(ops.store_url)
        await store.open()
        try:
            for _ in range(50):
                rows = [e async for e in store.audit_iter(0, 2e9, 100)]
                if any(r.payload.get("service") == "Users" for r in rows):
                    break
                await asyncio.sleep(0.2)
            assert any(r.payload.get("service") == "Users" and r.payload.get("userId") == "alice" for r in rows)
        finally:
            await store.close()


async def test_supervisor_crash_restarts_its_actors(broker_url: str, tmp_path: Path, client: ServiceClient,
                                                    procs: list[ServiceProcess]) -> None:
    """The supervisor dies (as when its node is lost): Ray restarts it, it starts itself again, finds
    the monitors it created (still alive, their open breakers kept), and health carries on."""
    import time

    import ray

    async with operations(broker_url, tmp_path, policies={"circuit_breaker.yaml": (
            "defaults:\n  minimum_calls: 5\n  window: 30s\n  open_timeout: 120s\n")}) as ops:
        procs.append(ServiceProcess(broker_url, ops.cluster, "Payments").start())
        for _ in range(6):
            with pytest.raises((ServiceException, ServiceTemporarilyUnavailableException)):
                await client.call("Payments", "fail", {}, timeout=5)
        await ops.watcher.wait(lambda w: "open" in breaker_states(ops, "Payments"), 5, "breaker open")
        monitor = ray.get_actor(f"sfa-monitor-{ops.cluster}-Payments", namespace="sfa-ops")
        ray.kill(ray.get_actor(f"sfa-supervisor-{ops.cluster}", namespace="sfa-ops"), no_restart=False)
        killed = time.time()
        after = await ops.watcher.wait(
            lambda w: [d for t, topic, d in w.messages if t > killed + 1 and topic.endswith("/health")
                       and "Payments" in d.get("services", {})], 60, "health from the restarted supervisor")
        assert after[-1]["services"]["Payments"]["breaker"] == "open"
        # The monitor is detached: it outlived its owner's crash, and the restarted supervisor found it.
        assert (await monitor.state.remote())["breaker"]["state"] == "open"
        assert ray.get_actor(f"sfa-monitor-{ops.cluster}-Payments", namespace="sfa-ops")._actor_id == monitor._actor_id
