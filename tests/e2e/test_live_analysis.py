"""Live data feeds the analysis jobs: operate (in this session's Ray, real mosquitto, SQLite) watches
the sample platform (one OS process per instance) under traffic and scripted faults, while the
platform's auth service and services report logins, authorization decisions and data accesses on
their topics; then ``drivers.baselines``, ``drivers.recommend`` and ``drivers.report security|gdpr``
run on the very store operate wrote. Nothing in the store comes from ``drivers.generate``.

Faults (kept under the breaker's thresholds so the calls keep reaching the services): 40 % of
Payments' calls fail with -32603 for 20 s; half of UserManagement's calls take 6 s for 20 s.
About two minutes on a quiet machine.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from adapters.mqtt.bus import MqttBus
from adapters.store import MetricRollup, open_store
from drivers import baselines, recommend, report
from drivers.sample_platform import SERVICES, FaultMode
from drivers.scenarios import Action, Scenario, Step
from drivers.simulate import Simulation
from drivers.simulate_platform import INSTANCES
from policies.audit import schema
from policies.breaker.outcomes import UNANSWERED
from protocol import topics
from protocol.base import rfc3339_from_epoch
from protocol.security import AuthEvent, AuthzEvent, DataAccessEvent, DataSubjectRequest
from tests.support.broker import SessionBroker
from tests.support.operations import operations

pytestmark = pytest.mark.usefixtures("ray_session")

BRUTE_FORCE_IP = "203.0.113.77"
POLICIES = {"observation.yaml": "call_timeout: 10s\ntick: 100ms\n"}  # above the 6 s slow answers
SCENARIO = Scenario(name="live-analysis", description="partial error spike on Payments, slow UserManagement",
                    length=35.0, steps=(
    Step(at=5.0, action=Action(kind="mode", service="Payments", mode=FaultMode(mode="internal_errors", rate=0.4))),
    Step(at=5.0, action=Action(kind="mode", service="UserManagement", mode=FaultMode(mode="slow", rate=0.5,
                                                                                    delay=6.0))),
    Step(at=25.0, action=Action(kind="mode", service="Payments", mode=FaultMode())),
    Step(at=25.0, action=Action(kind="mode", service="UserManagement", mode=FaultMode())),
))


async def report_security_events(bus: MqttBus) -> None:
    """What the auth service and the services publish: logins (a brute-force burst from one
    address among them), authorization decisions, data accesses (one excessive, one without the
    role PCI data needs), data-subject requests (one received then completed, one still open, one
    rejected 40 days after its receipt, which happened before this run)."""
    now = time.time()
    ts = rfc3339_from_epoch(now)
    msgs: list[tuple[str, Any]] = []
    for i in range(10):
        msgs.append((topics.security_auth("login"), AuthEvent(user_id=f"u{i + 1}", ip_address=f"10.0.0.{i + 1}",
                                                              success=True, timestamp=ts, method="password")))
    for i in range(6):
        msgs.append((topics.security_auth("login"), AuthEvent(user_id=f"u{i + 1}", ip_address=BRUTE_FORCE_IP,
                                                              success=False, timestamp=ts, method="password",
                                                              reason="bad password")))
    for i, allowed in enumerate((True, True, False, False, False)):
        msgs.append((topics.security_authz("decision"), AuthzEvent(user_id=f"u{i + 1}", service="Payments",
                                                                   method="refund", allowed=allowed,
                                                                   timestamp=ts, roles=["customer"])))
    for i in range(5):
        msgs.append((topics.data_access("UserManagement"), DataAccessEvent(
            user_id=f"u{i + 1}", collection="users", operation="read", record_ids=[f"u{i + 1}"], timestamp=ts,
            roles=["customer"])))
    msgs.append((topics.data_access("UserManagement"), DataAccessEvent(
        user_id="u9", collection="users", operation="read", record_count=1500, timestamp=ts, roles=["support"])))
    msgs.append((topics.data_access("Payments"), DataAccessEvent(
        user_id="u7", collection="payment_cards", operation="read", record_count=2, timestamp=ts,
        roles=["customer"])))
    dsr = topics.data_subject("UserManagement")
    msgs += [
        (dsr, DataSubjectRequest(request_id="dsr-1", user_id="u3", request_type="erasure", status="received",
                                 timestamp=ts)),
        (dsr, DataSubjectRequest(request_id="dsr-2", user_id="u4", request_type="access", status="received",
                                 timestamp=ts)),
        (dsr, DataSubjectRequest(request_id="dsr-1", user_id="u3", request_type="erasure", status="completed",
                                 timestamp=rfc3339_from_epoch(now + 1))),
        (dsr, DataSubjectRequest(request_id="dsr-3", user_id="u5", request_type="portability", status="rejected",
                                 timestamp=ts, received_at=rfc3339_from_epoch(now - 40 * 86400),
                                 reason="identity not verified")),
    ]
    for topic, model in msgs:
        await bus.publish(topic, model.to_json(), qos=1)


async def stored_kinds(url: str, want: dict[str, int], timeout: float) -> dict[str, int]:
    """Audit events per kind once at least ``want`` of each are stored (the writer flushes in batches)."""
    deadline = time.monotonic() + timeout
    got: dict[str, int] = {}
    async with open_store(url) as store:
        while time.monotonic() < deadline:
            got = {}
            async for r in store.audit_iter(0, 2e9, 2000):
                got[r.kind] = got.get(r.kind, 0) + 1
            if all(got.get(k, 0) >= n for k, n in want.items()):
                return got
            await asyncio.sleep(0.5)
    raise AssertionError(f"audit events per kind {got}, wanted at least {want}")


async def live_run(session_broker: SessionBroker, broker_url: str, tmp_path: Path) -> dict[str, Any]:
    """operate + the sample platform + the scenario; returns the store URL, times and traffic."""
    # Four monitors and the security actors start with operate: slow when the machine is busy.
    async with operations(broker_url, tmp_path, services=SERVICES, policies=POLICIES, start_timeout=150) as ops:
        # The simulator and each instance log in as their principals (passwords via env, not argv).
        sim = Simulation(broker=session_broker.plain_url, cluster=ops.cluster, rate=40.0, scenario=SCENARIO,
                         log_dir=tmp_path / "instances", seed=11, logins=session_broker.platform_logins(SERVICES))
        try:
            await sim.start(timeout=90)
            started = time.time()
            await report_security_events(ops.bus)
            summary = await sim.run(warmup=30.0)
        finally:
            await sim.stop()
        await stored_kinds(ops.store_url, {schema.CALL: 500, schema.AUTH: 16, schema.AUTHZ: 5,
                                           schema.DATA_ACCESS: 7, schema.DATA_SUBJECT_REQUEST: 4}, 30)
        store_url = ops.store_url
    return {"store": store_url, "started": started, "ended": time.time(), "traffic": summary["traffic"]}


def _json(directory: Path, pattern: str) -> dict[str, Any]:
    [path] = sorted(directory.glob(pattern))
    return json.loads(path.read_text())


@pytest.mark.timeout(480)
def test_operate_feeds_baselines_recommendations_and_reports(session_broker: SessionBroker, broker_url: str,
                                                             tmp_path: Path) -> None:
    """On the store a live operate run leaves: per-minute rollups exist for every service, the
    baselines learn the platform's users, the recommendations name the faulted services (and not
    the healthy Inventory), and the security and GDPR reports' sections hold the live events."""
    run = asyncio.run(live_run(session_broker, broker_url, tmp_path))
    url, out = run["store"], tmp_path / "reports"
    hour_from = math.floor(run["started"] / 3600) * 3600
    hour_to = math.ceil((run["ended"] + 1) / 3600) * 3600

    async def rollups() -> tuple[list[MetricRollup], dict[str, dict[str, Any]]]:
        async with open_store(url) as store:
            return await store.metrics_query(None, hour_from, hour_to), await store.state_list("service_resources")

    rows, resources = asyncio.run(rollups())
    assert {s: resources.get(s, {}).get("instances") for s in SERVICES} == dict.fromkeys(SERVICES, len(INSTANCES))
    by_service: dict[str, list[MetricRollup]] = {}
    for r in rows:
        by_service.setdefault(r.service, []).append(r)
    assert set(SERVICES) <= set(by_service), sorted(by_service)
    payments = by_service["Payments"]
    assert sum(r.outcomes.get("-32603", 0) for r in payments) >= 10
    assert all(sum(r.outcomes.values()) == r.calls for r in rows)
    assert all(r.timeouts == r.outcomes.get("-32007", 0) + r.outcomes.get(str(UNANSWERED), 0) for r in rows)
    assert max(r.concurrency_max for r in by_service["UserManagement"]) >= 2  # 6 s answers pile up
    assert all(r.latency_sketch for r in rows if r.calls > r.timeouts)

    until = str(hour_to)
    assert baselines.main(["--store", url, "--since", f"{int(hour_to - hour_from)}s", "--until", until,
                           "--quiet"]) == 0
    assert recommend.main(["--store", url, "--window", f"{int(hour_to - hour_from)}s", "--until", until,
                           "--out", str(out), "--quiet"]) == 0
    for kind in ("security", "gdpr"):
        assert report.main([kind, "--store", url, "--from", str(hour_from), "--to", until, "--out", str(out),
                            "--quiet"]) == 0

    rec = _json(out, "recommendations-*.json")
    flagged: dict[str, set[str]] = {}
    for r in rec["recommendations"]:
        flagged.setdefault(r["rule"], set()).add(r["target"])
    assert "Payments" in flagged.get("high_error_rate", set()), rec["recommendations"]
    assert "UserManagement" in flagged.get("high_latency", set()), rec["recommendations"]
    assert "Inventory" not in flagged.get("high_error_rate", set()) | flagged.get("high_latency", set())
    services = {s["service"]: s for s in rec["services"]}
    assert services["UserManagement"]["p95_ms"] >= 5000 and services["Payments"]["error_rate"] > 0.05
    assert {t["topic"] for t in rec["topics"]} >= {f"service/{s}" for s in SERVICES}

    sec = _json(out, "security-*.json")
    auth = sec["authenticationMetrics"]
    assert auth["attempts"] == 16 and auth["failures"] == 6 and auth["topFailingIps"] == {BRUTE_FORCE_IP: 6}
    assert sec["authorizationViolations"]["denied"] == 3 and sec["authorizationViolations"]["checked"] == 5
    assert any(a["type"] == "brute_force_attempt" for a in sec["anomalies"]), sec["anomalies"]
    assert sec["securityIncidents"], "the analyst's incident for the brute-force burst"

    gdpr = _json(out, "gdpr-*.json")
    activities = {(a["service"], a["collection"]): a for a in gdpr["processingActivities"]}
    assert activities[("UserManagement", "users")]["events"] == 6
    assert activities[("UserManagement", "users")]["classification"] == "pii"
    violations = {v["type"] for v in gdpr["accessViolations"]}
    assert "excessive_data_access" in violations and len(violations) >= 2, gdpr["accessViolations"]
    assert gdpr["retentionCompliance"]
    requests = {(r["userId"], r["type"]): r for r in gdpr["dataSubjectRequests"]}
    assert len(gdpr["dataSubjectRequests"]) == 3, gdpr["dataSubjectRequests"]  # one row per request
    done, open_, rejected = requests[("u3", "erasure")], requests[("u4", "access")], requests[("u5", "portability")]
    assert done["status"] == "completed" and done["daysToComplete"] is not None and done["daysToComplete"] < 0.01
    assert open_["status"] == "received" and open_["daysToComplete"] is None and not open_["late"]
    assert rejected["status"] == "rejected" and rejected["daysToComplete"] == 40.0 and rejected["late"]

