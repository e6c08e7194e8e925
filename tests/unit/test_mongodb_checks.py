"""The pure parts of the ``mongodb_cluster`` check, fed MongoDB-shaped documents (tests/fixtures/mongodb,
shapes from MongoDB's documented output; see its SOURCES.md), and the ``--check-mongodb`` /
``--expect-replicas`` options."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from adapters.probes.mongodb_probe import judge_connections, judge_replica_set, target_label
from drivers.operate import _mongodb_uri_problem
from drivers.options import OptionError, non_negative_int
from policies.infrastructure.checks import load_infrastructure_policy
from policies.infrastructure.thresholds import MongoThresholds
from tests.support.mongo_replay import fixture

T = load_infrastructure_policy().thresholds.mongodb_cluster


def codes(problems: list[Any]) -> list[str]:
    return sorted(p.code for p in problems)


def test_shipped_thresholds_are_the_seeds_database_ones() -> None:
    """The seed names MongoDB's checks without numbers: the PostgreSQL ones (30 s lag, 80 %) apply."""
    assert (T.replication_lag, T.connections) == (30.0, 80.0)


def test_healthy_replica_set_has_no_problems() -> None:
    details, problems = judge_replica_set("m1:27017", fixture("replSetGetStatus_healthy.json"),
                                          expected_replicas=2, thresholds=T)
    assert problems == []
    assert details["primary"] == "m1.example.net:27017"
    assert (details["healthyMembers"], details["healthySecondaries"], details["maxLagSeconds"]) == (3, 2, 1.0)


def test_lagging_secondary_is_measured_from_the_primarys_optime() -> None:
    details, problems = judge_replica_set("m1:27017", fixture("replSetGetStatus_lagging.json"),
                                          expected_replicas=0, thresholds=T)
    assert codes(problems) == ["replication_lag"]
    assert "m3.example.net:27017" in problems[0].message and "45.0s" in problems[0].message
    assert [m["lagSeconds"] for m in details["members"]] == [None, 0.0, 45.0]
    # below the threshold it is not a problem
    _, problems = judge_replica_set("m1:27017", fixture("replSetGetStatus_lagging.json"), expected_replicas=0,
                                    thresholds=MongoThresholds(replication_lag=60.0))
    assert problems == []


def test_primary_lost_is_critical_and_names_the_down_member() -> None:
    details, problems = judge_replica_set("m2:27017", fixture("replSetGetStatus_primary_lost.json"),
                                          expected_replicas=2, thresholds=T)
    assert codes(problems) == ["member_unhealthy", "no_primary"]
    by_code = {p.code: p for p in problems}
    assert by_code["no_primary"].severity == "critical"
    assert "m1.example.net:27017" in by_code["member_unhealthy"].message
    # the two secondaries are equally fresh: no lag between them, the DOWN member's epoch optime is ignored
    assert details["primary"] is None and details["maxLagSeconds"] == 0.0


def test_missing_secondaries_below_expected_replicas() -> None:
    status = fixture("replSetGetStatus_healthy.json")
    _, problems = judge_replica_set("m1:27017", status, expected_replicas=3, thresholds=T)
    assert codes(problems) == ["replicas_missing"]
    assert "2 of 3" in problems[0].message


def test_hostile_documents_are_bounded_and_never_raise() -> None:
    status = fixture("replSetGetStatus_healthy.json")
    many = copy.deepcopy(status)
    secondary = many["members"][1]
    many["members"] = [many["members"][0]] + [dict(secondary, name=f"s{i}:27017") for i in range(200)]
    details, problems = judge_replica_set("x", many, expected_replicas=0, thresholds=T)
    assert details["totalMembers"] == 201 and details["membersIgnored"] == 201 - T.max_members
    assert len(details["members"]) == T.max_members and problems == []
    for junk in ({"members": "nope"}, {"members": [1, None, {"state": "x", "health": True}]}, {}):
        _, problems = judge_replica_set("x", junk, expected_replicas=0, thresholds=T)
        assert "no_primary" in codes(problems)
    weird = copy.deepcopy(status)
    weird["members"][2]["optimeDate"] = "yesterday"
    weird["members"][0]["optimeDate"] = status["members"][0]["optimeDate"] + timedelta(seconds=5)
    details, problems = judge_replica_set("x", weird, expected_replicas=0, thresholds=T)
    assert problems == [] and [m["lagSeconds"] for m in details["members"]] == [None, 5.0, None]


def test_connections_from_server_status() -> None:
    details, problems = judge_connections("m1:27017", fixture("serverStatus.json"), thresholds=T)
    assert problems == [] and details["connections"]["current"] == 24 and details["version"] == "7.0.12"
    details, problems = judge_connections("m1:27017", fixture("serverStatus_busy.json"), thresholds=T)
    assert codes(problems) == ["connection_pool_high"] and problems[0].severity == "warning"
    assert details["connectionsUsagePercent"] == 87.0
    assert judge_connections("x", {"connections": "junk"}, thresholds=T) == (
        {"connections": {"current": 0, "available": 0, "active": 0, "totalCreated": 0},
         "connectionsUsagePercent": None, "version": None}, [])


def test_target_label_never_shows_credentials() -> None:
    assert target_label("mongodb://ops:s3cret@db1:27017,db2:27017/admin?replicaSet=rs0") == "db1:27017,db2:27017"
    assert "s3cret" not in target_label("mongodb+srv://ops:s3cret@cluster0.example.net/")


def test_check_mongodb_uri_validation() -> None:
    assert _mongodb_uri_problem("mongodb://db1:27017,db2:27017/?replicaSet=rs0") is None
    assert _mongodb_uri_problem("mongodb://db1:27017/?directConnection=true") is None
    assert _mongodb_uri_problem("mongodb+srv://cluster0.example.net/") is None
    assert "mongodb://" in str(_mongodb_uri_problem("http://db1:27017"))
    assert _mongodb_uri_problem("mongodb://") is not None
    problem = _mongodb_uri_problem("mongodb://ops:s3cret@db1:x/")
    assert problem is not None and "s3cret" not in problem


def test_check_mongodb_and_expect_replicas_options() -> None:
    from drivers.operate import OPTIONS, _validate_infra

    names = {o.name for o in OPTIONS}
    assert {"check-mongodb", "expect-replicas"} <= names
    _validate_infra({"check_mongodb": ["mongodb://db1:27017/?replicaSet=rs0"]})
    with pytest.raises(OptionError, match="check-mongodb") as err:
        _validate_infra({"check_mongodb": ["mongodb://ops:s3cret@db1:27017,db2:27017/?directConnection=true"]})
    assert "s3cret" not in str(err.value)
    assert non_negative_int("0") == 0
    with pytest.raises(ValueError):
        non_negative_int("-1")


def test_sdk_defers_writes_while_mongodb_has_no_primary() -> None:
    """A MongoDB without a primary refuses writes: the SDK defers them and lets reads go, as for PostgreSQL."""
    from sdk.strategy import AdaptiveStrategy

    s = AdaptiveStrategy()
    assert s.infrastructure_error("mongodb_cluster", severity="critical", message="no primary", now=0.0)
    assert s.plan("Orders", "createOrder", base_timeout=30, now=0.0).action == "defer_write"
    assert s.plan("Orders", "getOrder", base_timeout=30, now=0.0).action == "call"
    assert s.infrastructure_recovered("mongodb_cluster", now=1.0)
    assert s.plan("Orders", "createOrder", base_timeout=30, now=1.0).action == "call"


def test_recommend_reads_mongodb_lag_and_connections_from_the_checks_own_details() -> None:
    """drivers.recommend's database summaries take the worst lag and connection use from the
    mongodb_cluster details the probe produces (built here by its own judging functions)."""
    from policies.analysis.recommendation_settings import load_recommendation_policy
    from policies.analysis.recommendations import database_rules
    from policies.analysis.rollup_summary import database_summaries

    rs, _ = judge_replica_set("m1", fixture("replSetGetStatus_lagging.json"), expected_replicas=0, thresholds=T)
    conns, _ = judge_connections("m1", fixture("serverStatus_busy.json"), thresholds=T)
    finding = {"type": "infrastructure_error", "component": "mongodb_cluster",
               "details": {"targets": {"m1:27017": {"reachable": True, "replicaSet": rs, **conns},
                                       "m2:27017": {"reachable": False, "error": "refused"}}}}
    summaries = {s.name: s for s in database_summaries([finding], 3600.0)}
    summary = summaries["mongodb_cluster/m1:27017"]
    assert summary.kind == "mongodb" and summaries["mongodb_cluster/m2:27017"].replication_lag_s is None
    assert (summary.replication_lag_s, summary.connections, summary.max_connections) == (45.0, 870, 1000)
    rules = {r.rule for r in database_rules(summary, load_recommendation_policy())}
    assert {"replication_lag", "connections_near_max"} <= rules
