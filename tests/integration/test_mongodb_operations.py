"""``--check-mongodb`` and ``--expect-replicas`` under a running operate (drivers.operate in-test, 1 s
checks, an error after 2 failed ones). MongoDB cannot run on these machines: its replica-set members
are mockupdb servers speaking MongoDB's wire protocol to the checker's real driver (pymongo) with
documents shaped like MongoDB's documented output (tests/fixtures/mongodb, see SOURCES.md); the
broker, Redis and PostgreSQL are real."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.runtime.processes import ChildService
from protocol.system import InfrastructureError
from tests.support.mongo_replay import ReplayedMember
from tests.support.operations import operations

pytestmark = pytest.mark.usefixtures("ray_session")

POLICIES = {"infrastructure.yaml": """
defaults: {interval: 1s, timeout: 1s, failures_before_error: 2, successes_before_recovery: 1}
components:
  mqtt_broker: {interval: 1s, timeout: 1s}
service_dependencies:
  Billing: [mongodb_cluster]
"""}
DETECT_S = 8.0  # 2 checks of 1 s, plus slack for a loaded 2-core machine


def infra(docs: list[dict[str, Any]], kind: str, component: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("type") == kind and d.get("component") == component]


def infrastructure(health: dict[str, Any] | None) -> dict[str, Any]:
    return dict((health or {}).get("infrastructure") or {})


async def test_mongodb_primary_loss_and_missing_replicas_under_operate(
    broker_url: str, tmp_path: Path, redis_server: ChildService, postgres_server: ChildService,
) -> None:
    """Replayed MongoDB members (m1 primary, m2, m3): healthy, then m1's server stops and the others
    report no primary → a critical infrastructure_error for mongodb_cluster on /errors and /emergency
    and an alert carrying the mongodb runbook; m1 back → infrastructure_recovered with the same
    correlation id. With --expect-replicas 2, the real Redis and PostgreSQL (no replicas) are errors
    with replicas_missing, while MongoDB's two secondaries satisfy it."""
    members = [ReplayedMember(hello="hello_primary.json", status="replSetGetStatus_healthy.json"),
               ReplayedMember(hello="hello_secondary.json", status="replSetGetStatus_healthy.json"),
               ReplayedMember(hello="hello_secondary.json", status="replSetGetStatus_healthy.json")]
    uris = [m.start() for m in members]
    try:
        extra = {"check_mongodb": uris, "check_redis": [redis_server.url], "check_postgres": [postgres_server.url],
                 "expect_replicas": 2}
        async with operations(broker_url, tmp_path, policies=POLICIES, extra=extra) as ops:
            w = ops.watcher
            await w.wait(lambda w: infrastructure(ops.health()).get("mongodb_cluster", {}).get("status")
                         == "healthy", 30, "mongodb_cluster healthy in the health summary")
            entry = infrastructure(ops.health())["mongodb_cluster"]
            assert entry["details"]["reachableTargets"] == 3 and entry["details"]["expectedReplicas"] == 2

            for component in ("redis", "postgresql_cluster"):
                [err] = await w.wait(lambda w, c=component: infra(w.on("/errors"), "infrastructure_error", c),
                                     DETECT_S, f"replicas_missing error for {component}")
                assert err["severity"] == "error"
                assert "replicas_missing" in {p["code"] for p in err["details"]["problems"]}

            members[0].stop()
            for m in members[1:]:
                m.set(hello="hello_secondary_no_primary.json", status="replSetGetStatus_primary_lost.json")
            [err] = await w.wait(lambda w: infra(w.on("/errors"), "infrastructure_error", "mongodb_cluster"),
                                 DETECT_S, "infrastructure_error for mongodb_cluster")
            msg = InfrastructureError.model_validate(err)
            assert msg.severity == "critical" and msg.escalation_required
            assert msg.affected_services == ["Billing"]
            assert {p["code"] for p in err["details"]["problems"]} >= {"no_primary", "target_unreachable",
                                                                       "member_unhealthy"}
            await w.wait(lambda w: infra(w.on("/emergency"), "infrastructure_error", "mongodb_cluster"),
                         3, "the critical mongodb_cluster error on /emergency")
            [alert, *_] = await w.wait(lambda w: [
                a for a in w.on("/alerts") if a.get("labels", {}).get("alertname") == "InfrastructureError"
                and a["labels"].get("component") == "mongodb_cluster" and a.get("status") == "firing"],
                5, "the mongodb_cluster InfrastructureError alert")
            assert alert["runbook"][0]["runbook"] == "mongodb-cluster"
            assert alert["runbook"][0]["command"][:3] == ["mongosh", "--host", "127.0.0.1"]

            members[0].start()
            for m, hello in zip(members, ("hello_primary.json", "hello_secondary.json", "hello_secondary.json"),
                                strict=True):
                m.set(hello=hello, status="replSetGetStatus_healthy.json")
            [rec] = await w.wait(lambda w: infra(w.on("/errors"), "infrastructure_recovered", "mongodb_cluster"),
                                 DETECT_S * 2, "infrastructure_recovered for mongodb_cluster")
            assert rec["correlationId"] == err["correlationId"] and rec["downtimeSeconds"] > 0
    finally:
        for m in members:
            m.stop()
