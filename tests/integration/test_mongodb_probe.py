"""The ``mongodb_cluster`` check's real driver (pymongo's AsyncMongoClient) against replayed replica-set
members. MongoDB cannot run on these machines: each member is a mockupdb server speaking MongoDB's
wire protocol (OP_MSG) and answering ``hello``/``ismaster``, ``replSetGetStatus`` and ``serverStatus``
with documents shaped like MongoDB's documented output (tests/fixtures/mongodb, provenance in its
SOURCES.md). What is real: the driver, its connection handling and timeouts, BSON decoding, the probe
and the policy; what is replayed: the servers' answers, including a lagging secondary and a primary loss."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from adapters.probes import ProbeResult
from adapters.probes.mongodb_probe import MongoProbe
from adapters.runtime.processes import free_port
from policies.infrastructure.checks import (
    ComponentTracker,
    TransitionKind,
    load_infrastructure_policy,
    transition_message,
)
from protocol.system import InfrastructureError, InfrastructureRecovered
from tests.support.mongo_replay import ReplayedMember

POLICY = load_infrastructure_policy()
T = POLICY.thresholds.mongodb_cluster
TIMEOUT = 1.0


async def check_member_once(member: ReplayedMember) -> ProbeResult:
    """One check of the probe against ``member`` alone; the probe closed and the member stopped."""
    probe = MongoProbe(uris=[member.start()], timeout_s=TIMEOUT, thresholds=T)
    try:
        return await probe.check()
    finally:
        await probe.close()
        member.stop()


def codes(result: object) -> set[str]:
    return {p.code for p in result.problems}  # type: ignore[attr-defined]


@pytest.fixture
def replica_set() -> Iterator[tuple[list[ReplayedMember], list[str]]]:
    """Three replayed members of rs0: m1 primary, m2 and m3 secondaries, each checked directly."""
    members = [ReplayedMember(hello="hello_primary.json", status="replSetGetStatus_healthy.json"),
               ReplayedMember(hello="hello_secondary.json", status="replSetGetStatus_healthy.json"),
               ReplayedMember(hello="hello_secondary.json", status="replSetGetStatus_healthy.json")]
    uris = [m.start() for m in members]
    yield members, uris
    for m in members:
        m.stop()


async def test_healthy_replica_set_is_ok(replica_set: tuple[list[ReplayedMember], list[str]]) -> None:
    """Replayed MongoDB members: a healthy rs0 gives an ok result with roles, lag and connections."""
    _, uris = replica_set
    probe = MongoProbe(uris=uris, timeout_s=TIMEOUT, thresholds=T, expected_replicas=2)
    try:
        result = await probe.check()
    finally:
        await probe.close()
    assert result.ok, result.problems
    assert result.details["reachableTargets"] == 3
    targets = list(result.details["targets"].values())
    assert [t["role"] for t in targets] == ["primary", "secondary", "secondary"]
    assert targets[0]["replicaSet"]["primary"] == "m1.example.net:27017"
    assert targets[0]["replicaSet"]["maxLagSeconds"] == 1.0  # from the BSON optimeDates
    assert targets[0]["connections"] == {"current": 24, "available": 51176, "active": 3, "totalCreated": 310}


async def test_lagging_secondary_and_busy_connections() -> None:
    """Replayed MongoDB primary whose status shows m3 45 s behind, and 87 % of connections in use."""
    member = ReplayedMember(hello="hello_primary.json", status="replSetGetStatus_lagging.json",
                            server_status="serverStatus_busy.json")
    result = await check_member_once(member)
    assert not result.ok
    assert codes(result) == {"replication_lag", "connection_pool_high"}
    assert {p.severity for p in result.problems} == {"error", "warning"}


async def test_primary_loss_is_announced_then_recovered(
    replica_set: tuple[list[ReplayedMember], list[str]],
) -> None:
    """Replayed MongoDB members: the primary's server stops (connections refused) and the secondaries
    report it DOWN with no primary elected; after 2 bad checks the tracker announces a critical
    outage whose message parses as the wire model; a new primary (m2) recovers it."""
    members, uris = replica_set
    policy = POLICY
    tracker = ComponentTracker(config=policy.component("mongodb_cluster"))
    probe = MongoProbe(uris=uris, timeout_s=TIMEOUT, thresholds=T, expected_replicas=2)
    try:
        assert tracker.observe(await probe.check(), 0.0) is None
        members[0].stop()
        for m in members[1:]:
            m.set(hello="hello_secondary_no_primary.json", status="replSetGetStatus_primary_lost.json")
        started = time.monotonic()
        first = await probe.check()
        assert time.monotonic() - started < TIMEOUT + 1.0  # a dead member costs at most the timeout
        assert codes(first) == {"target_unreachable", "no_primary", "member_unhealthy"}
        assert tracker.observe(first, 1.0) is None  # 1 of 2 failures
        transition = tracker.observe(await probe.check(), 2.0)
        assert transition is not None and transition.kind is TransitionKind.ERROR
        assert transition.severity == "critical"
        wire = transition_message(transition, cluster_id="c1", policy=policy, correlation_id="x",
                                  affected_services=["Billing"])
        assert wire is not None
        msg = InfrastructureError.model_validate(wire)
        assert msg.component == "mongodb_cluster" and msg.escalation_required
        assert "no primary" in msg.message and msg.affected_services == ["Billing"]
        assert any("majority of voting members" in r for r in msg.recommendations)
        # m2 is elected: the remaining members answer as a healthy set again, m1 stays down
        members[1].set(hello="hello_primary.json", status="replSetGetStatus_healthy.json")
        members[2].set(hello="hello_secondary.json", status="replSetGetStatus_healthy.json")
        probe_after = MongoProbe(uris=uris[1:], timeout_s=TIMEOUT, thresholds=T, expected_replicas=2)
        try:
            back = tracker.observe(await probe_after.check(), 3.0)
        finally:
            await probe_after.close()
        assert back is not None and back.kind is TransitionKind.RECOVERED
        recovered = transition_message(back, cluster_id="c1", policy=policy, correlation_id="x")
        assert InfrastructureRecovered.model_validate(recovered).downtime_seconds == 2.0
    finally:
        await probe.close()


async def test_nothing_listening_is_unreachable_within_the_timeout() -> None:
    """No server at all (a free port): the whole component is unreachable, critical, in time."""
    probe = MongoProbe(uris=[f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"],
                       timeout_s=TIMEOUT, thresholds=T)
    started = time.monotonic()
    try:
        result = await probe.check()
    finally:
        await probe.close()
    assert time.monotonic() - started < TIMEOUT + 1.0
    assert codes(result) == {"unreachable"} and result.problems[0].severity == "critical"


async def test_unauthorized_is_a_configuration_error() -> None:
    """Replayed MongoDB answering serverStatus with code 13 (Unauthorized), as a server does for a user
    without the clusterMonitor role: a configuration error, not an outage."""
    member = ReplayedMember(hello="hello_primary.json", status="replSetGetStatus_healthy.json")
    member.server.autoresponds("serverStatus", lambda r: r.command_err(
        code=13, errmsg="Command serverStatus requires authentication", codeName="Unauthorized"))
    result = await check_member_once(member)
    assert result.config_error and "clusterMonitor" in (result.error or "")
