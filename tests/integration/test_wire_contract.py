"""The wire contract with its real producers and consumers: operate (real Ray, real mosquitto) and
the sample platform (one process per service) go through a crash, a breaker open/close cycle, a
cascade and a degradation. Everything sfa-ops publishes on ``system/{cluster}/#`` and every -32503
answer it sends is recorded and must parse with its ``protocol`` model (``protocol.contract``); a
real ``PlatformAwareClient`` subscribed to the same cluster acts on those real messages: it fails
fast on the real open breaker and the real ``service_unavailable`` and calls again after the real
close and recovery. Nothing is built by the test from the models."""

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

from adapters.mqtt import Message, MqttBus, MqttConfig
from drivers.sample_platform import SERVICES, FaultMode
from drivers.simulate import PlatformProcesses, Traffic
from protocol import ProtocolError
from protocol.contract import parse_published
from protocol.rpc import ErrorResponse
from sdk.client import ServiceClient
from sdk.errors import ServiceTemporarilyUnavailableException, ServiceTimeoutException
from sdk.platform_client import PlatformAwareClient
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
    """Every message on the subscribed filters, raw, in arrival order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []

    def __call__(self, msg: Message) -> None:
        self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

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


async def test_real_producers_parse_and_drive_the_platform_aware_client(broker_url: str, tmp_path: Path) -> None:
    """Crash, breaker cycle, cascade, degradation: every real message parses with its model, and a
    PlatformAwareClient fails fast on the real open breaker / service_unavailable, then recovers."""
    # The scenario itself is bounded (each wait below); only the actors' start may take long on a busy machine.
    async with operations(broker_url, tmp_path, policies=POLICIES, start_timeout=240) as ops:
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
            pending = [asyncio.create_task(client.call("UserManagement", "getUser", {"userId": f"p{i}"},
                                                       timeout=18)) for i in range(3)]
            await asyncio.sleep(0.5)  # the calls reach the service (and hang there) before it dies
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

        # Every message on system/{cluster}/# parses with its contract model.
        kinds: Counter[str] = Counter()
        bad: list[str] = []
        for topic, payload, _retained in tape.messages:
            if not topic.startswith(f"system/{c}/") or not payload:
                continue
            try:
                kinds[type(parse_published(topic, payload)).__name__] += 1
            except ProtocolError as exc:
                bad.append(f"{topic}: {exc}: {payload[:300]!r}")
        assert not bad, "\n".join(bad[:10])
        for model in ("BreakerStateChange", "BreakerState", "SystemHealth", "ServiceUnavailable", "ServiceDegraded",
                      "ServiceRecovered", "CascadingFailurePrevented", "Presence"):
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
