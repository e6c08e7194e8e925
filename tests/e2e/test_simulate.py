"""The sample platform and the simulator against the real broker, and ``make run``'s main job end to end.

The platform tests start one process per sample service (``drivers.sample_platform``) against the
session's mosquitto, without sfa-ops; the last test runs ``python -m drivers.main_job`` as a
subprocess (its own mosquitto, sfa-ops with its own Ray, the default scenario: ~2 minutes).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.mqtt.bus import MqttBus, MqttConfig
from adapters.runtime.processes import free_port
from drivers.sample_platform import SERVICES, FaultMode
from drivers.scenarios import SCENARIOS, Expect, Observed, judge
from drivers.simulate_platform import PlatformProcesses
from drivers.simulate_recorder import Recorder
from drivers.simulate_traffic import Traffic
from sdk.client import ServiceClient
from tests.support.broker import SessionBroker
from tests.support.mqtt import Collector

REPO = Path(__file__).resolve().parents[2]
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "UserManagement": ("getUser", {"userId": "u1"}),
    "OrderManagement": ("createOrder", {"userId": "u2", "items": [{"sku": "sku-1", "qty": 1}]}),
    "Inventory": ("getStock", {"sku": "sku-1"}),
    "Payments": ("charge", {"userId": "u3", "amount": 5.0}),
}


class Platform:
    """The four services (one instance each) plus a client, a recorder and the processes' control."""

    def __init__(self, procs: PlatformProcesses, client: ServiceClient, recorder: Recorder, bus: MqttBus) -> None:
        self.procs = procs
        self.client = client
        self.recorder = recorder
        self.bus = bus

    async def outcome(self, service: str, timeout: float = 3.0) -> tuple[str, float]:
        """Call the service's sample function: ("ok" | error code | "no_answer", seconds)."""
        method, params = CALLS[service]
        t0 = time.monotonic()
        try:
            doc = await self.client.call_raw(service, method, params, timeout=timeout,
                                             user_context={"userId": "u1", "roles": ["customer"]})
        except Exception:
            return "no_answer", time.monotonic() - t0
        err = doc.get("error")
        return (str(err["code"]) if isinstance(err, dict) else "ok"), time.monotonic() - t0

    async def until(self, service: str, want: str, *, timeout: float = 8.0, call_timeout: float = 3.0) -> float:
        """Call until the outcome is ``want`` (the control message may take a moment); its latency."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            got, took = await self.outcome(service, call_timeout)
            if got == want:
                return took
            seen.append(got)
            await asyncio.sleep(0.1)
        raise AssertionError(f"{service}: never {want} within {timeout}s; saw {seen}")


@pytest.fixture(scope="module")
async def platform(session_broker: SessionBroker, broker_url: str,
                   tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    """One instance of each sample service as a real process, on a cluster id of its own; each logs
    in as its service's principal."""
    cluster = f"sim{uuid.uuid4().hex[:8]}"
    bus = MqttBus(config=MqttConfig.from_url(broker_url), client_id=f"test-sim-{cluster}")
    await bus.start()
    await bus.wait_connected(5)
    recorder = Recorder(cluster=cluster)
    await recorder.start(bus)
    procs = PlatformProcesses(broker=session_broker.plain_url, cluster=cluster,
                              log_dir=tmp_path_factory.mktemp("instances"), bus=bus, instances=("i1",),
                              logins=session_broker.platform_logins(SERVICES))
    for s in SERVICES:
        await procs.set_mode(s, FaultMode())
    procs.start_all()
    client = ServiceClient(bus)
    await client.start()
    try:
        await recorder.wait_presence([(s, "i1") for s in SERVICES], "online", 30)
        yield Platform(procs, client, recorder, bus)
    finally:
        await asyncio.to_thread(procs.stop_all)
        await client.close()
        await bus.stop()


async def test_every_sample_function_answers(platform: Platform) -> None:
    """Each of the 11 sample functions answers a well-formed call with a result."""
    traffic = Traffic(client=platform.client, rate=1.0, seed=1)
    for service, calls in traffic.by_service.items():
        for _svc, method, params in calls:
            result = await platform.client.call(service, method, params(traffic.rng), timeout=5,
                                                user_context={"userId": "u1", "roles": ["customer"]})
            assert result is not None, f"{service}.{method}"


async def test_create_order_calls_get_user_with_the_same_correlation_id(platform: Platform) -> None:
    """createOrder calls UserManagement.getUser carrying the caller's correlationId (the learnable edge)."""
    seen = Collector()
    await platform.bus.subscribe("service/UserManagement", seen, qos=0)
    corr = f"corr-{uuid.uuid4().hex}"
    try:
        result = await platform.client.call("OrderManagement", "createOrder",
                                            {"userId": "u4", "items": [{"sku": "sku-2", "qty": 2}]},
                                            timeout=5, correlation_id=corr)
        assert result["userId"] == "u4"
        docs = [orjson.loads(m.payload) for m in await seen.wait_for(1)]
        assert any(d.get("method") == "getUser" and d.get("correlationId") == corr for d in docs), docs
    finally:
        await platform.bus.unsubscribe("service/UserManagement")


@pytest.mark.parametrize(
    ("service", "mode", "want"),
    [
        ("Payments", FaultMode(mode="internal_errors", rate=1.0), "-32603"),
        ("Inventory", FaultMode(mode="validation_errors", rate=1.0), "-32001"),
        ("OrderManagement", FaultMode(mode="hang", rate=1.0), "no_answer"),
    ],
)
async def test_control_topic_switches_outcomes_at_runtime(platform: Platform, service: str, mode: FaultMode,
                                                          want: str) -> None:
    """A control message changes a running service's outcomes, and normal mode restores them."""
    assert (await platform.outcome(service))[0] == "ok"
    await platform.procs.set_mode(service, mode)
    await platform.until(service, want, call_timeout=1.0)
    assert [(await platform.outcome(service, 1.0))[0] for _ in range(5)] == [want] * 5
    await platform.procs.set_mode(service, FaultMode())
    await platform.until(service, "ok")


async def test_slow_mode_delays_answers(platform: Platform) -> None:
    """mode slow with delay 1 s makes answers take at least 1 s; normal makes them fast again."""
    await platform.procs.set_mode("UserManagement", FaultMode(mode="slow", rate=1.0, delay=1.0))
    deadline = time.monotonic() + 8
    took = 0.0
    while took < 1.0 and time.monotonic() < deadline:
        _, took = await platform.outcome("UserManagement")
    assert took >= 1.0
    await platform.procs.set_mode("UserManagement", FaultMode())
    while took >= 0.5 and time.monotonic() < deadline + 4:
        _, took = await platform.outcome("UserManagement")
    assert took < 0.5


async def test_malformed_payloads_do_not_stop_a_service(platform: Platform) -> None:
    """Garbage, deep nesting and oversized payloads on service/Inventory leave it answering."""
    sent = await platform.procs.send_malformed("Inventory")
    assert sent >= 10
    await platform.until("Inventory", "ok")


async def test_traffic_spreads_calls_and_counts_outcomes(platform: Platform) -> None:
    """The traffic generator reaches every service at about its rate and counts each outcome."""
    traffic = Traffic(client=platform.client, rate=40.0, seed=7)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(2.0, stop.set)
    await traffic.run(stop)
    await traffic.drain(5)
    s = traffic.summary()
    assert 60 <= s["sent"] <= 90
    assert set(s["byService"]) == set(SERVICES)
    assert all(c.get("ok", 0) > 0 for c in s["byService"].values()), s
    assert sum(sum(c.values()) for c in s["byService"].values()) == s["sent"]


async def test_sigkill_fires_the_last_will_and_restart_is_online_again(platform: Platform) -> None:
    """A SIGKILLed instance's retained presence goes offline within a second; a restart brings it back."""
    key = ("Inventory", "i1")
    t0 = time.monotonic()
    await platform.procs.crash("Inventory")
    await platform.recorder.wait_presence([key], "offline", 5)
    assert time.monotonic() - t0 < 1.5
    # A fresh subscriber sees the retained offline state.
    fresh = Collector()
    topic = f"{platform.recorder.prefix}presence/Inventory/i1"
    await platform.bus.subscribe(topic, fresh, qos=1)
    [msg] = await fresh.wait_for(1)
    assert msg.retain and orjson.loads(msg.payload)["status"] == "offline"
    await platform.bus.unsubscribe(topic)
    await platform.procs.restart("Inventory")
    await platform.recorder.wait_presence([key], "online", 20)
    await platform.until("Inventory", "ok")


@pytest.mark.parametrize(
    ("expect", "payloads", "met", "latency"),
    [
        (Expect(label="open", topic="circuit-breaker", within=5, match=({"service": "P", "to": "open"},)),
         [(1.0, "circuit-breaker", {"service": "P", "to": "half_open"}),
          (2.5, "circuit-breaker", {"service": "P", "to": "open"})], True, 1.5),
        (Expect(label="late", topic="errors", within=1, match=({"type": "service_unavailable"},)),
         [(3.0, "errors", {"type": "service_unavailable"})], False, None),
        (Expect(label="list contains", topic="errors", within=5,
                match=({"type": "cascading_failure_prevented", "affectedServices": "O"},)),
         [(1.2, "errors", {"type": "cascading_failure_prevented", "affectedServices": ["X", "O"]})], True, 0.2),
        (Expect(label="absent", topic="circuit-breaker", within=5, absent=True, match=({"to": "open"},)),
         [(1.5, "circuit-breaker", {"to": "closed"}), (7.0, "circuit-breaker", {"to": "open"})], True, None),
        (Expect(label="rises", topic="health", within=5, rises="observed.malformed"),
         [(0.5, "health", {"observed": {"malformed": 3}}), (1.5, "health", {"observed": {"malformed": 3}}),
          (2.0, "health", {"observed": {"malformed": 9}})], True, 1.0),
    ],
)
def test_judge_finds_the_first_matching_message(expect: Expect, payloads: list[tuple[float, str, dict[str, Any]]],
                                                 met: bool, latency: float | None) -> None:
    """Expectations match alternatives, list containment, absence and rises within their window only."""
    observed = [Observed(at, topic, p) for at, topic, p in payloads]
    v = judge(expect, 1.0, observed, end=100.0)
    assert (v.met, v.latency_s) == (met, latency)


def test_default_scenario_fits_the_run() -> None:
    """The default scenario injects every fault kind within ~90 s, each expectation window inside the run."""
    s = SCENARIOS["default"]
    assert s.length <= 95
    assert {st.action.kind for st in s.steps} == {"crash", "restart", "mode", "malformed"}
    assert {st.action.mode.mode for st in s.steps if st.action.mode} == {
        "normal", "internal_errors", "slow", "hang", "validation_errors"}
    assert all(st.at + e.within <= s.length for st in s.steps for e in st.expect)


@pytest.mark.timeout(420)  # ~2 min on a quiet machine; Ray's start alone took 60 s under load here
def test_main_job_runs_end_to_end(tmp_path: Path) -> None:
    """``python -m drivers.main_job`` (what make run calls) runs operate + the default scenario, exits 0,
    saves its summary, and sfa-ops detected the Inventory crash and opened the Payments breaker."""
    http = f"127.0.0.1:{free_port()}"
    proc = subprocess.run([sys.executable, "-m", "drivers.main_job", "--var", str(tmp_path), "--http", http],
                          cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"live status page http://{http}/" in proc.stdout
    assert f"status page at http://{http}/" in (tmp_path / "run" / "operate.log").read_text()
    summary = json.loads((tmp_path / "run-summary.json").read_text())
    assert (tmp_path / "run-summary.md").exists()
    verdicts = {v["label"]: v for f in summary["faults"] for v in f["verdicts"]}
    assert verdicts["service_unavailable for Inventory"]["met"], proc.stdout[-3000:]
    assert verdicts["breaker open for Payments"]["met"], proc.stdout[-3000:]
    assert summary["published"].get("system_health", 0) > 0
    # It ran with broker logins and ACLs (the default), and no password reached its output.
    passwords = [p.read_text().strip() for p in (tmp_path / "broker-auth" / "credentials").iterdir()]
    assert len(passwords) >= 6 and (tmp_path / "keys" / "system-signing.key.pub").exists()
    output = proc.stdout + proc.stderr + (tmp_path / "run" / "operate.log").read_text()
    assert not any(pw in output for pw in passwords)
