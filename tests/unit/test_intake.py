"""The observer's intake checks: reply topics, ids, methods, one verdict per payload, bounded
service discovery, the caps on what callers choose, and the cascade guard's base."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.breaker.cascade import DependencyGraph, DependencyPolicy, plan_cascade
from policies.breaker.settings import load_breaker_policy
from policies.health.monitor import MAX_AFFECTED_OPERATIONS, MAX_INSTANCES, MonitorCore
from policies.health.status import load_health_policy
from policies.observation.correlation import (
    MAX_METHODS_PER_DELTA,
    MAX_UNKNOWN_CODES,
    Correlator,
    ServiceDelta,
)
from policies.observation.intake import IntakeCall, Refused, read_call
from policies.supervision.discovery import ServiceAdmission
from protocol import parse_model
from protocol.intake import REPLY_TOPIC_MAX, is_call_id, reply_topic_problem, usable_reply_topic
from protocol.system import ServiceUnavailable

GOOD_TOPICS = ["session/abc/response", "a", "a/b/c", "replies/ü/x", "x" * REPLY_TOPIC_MAX, "session//response"]
BAD_TOPICS = [
    "", "a/+/b", "a/#", "+", "#", "a\x00b", "a\nb", "a\x7fb", "$SYS/x", "$share/g/t",
    "system/c/security/actions/active", "system/c/circuit-breaker/Users", "system", "service/Users",
    "security/auth/login", "audit/Users/data-access", "ui/change/x", "x" * (REPLY_TOPIC_MAX + 1),
    None, 5, ["session/s/response"], {"t": 1}, "a/\ud800",
]


@pytest.mark.parametrize("topic", GOOD_TOPICS)
def test_usable_reply_topics(topic: str) -> None:
    """Ordinary reply topics (any depth, non-ASCII, up to the cap) are accepted."""
    assert reply_topic_problem(topic) is None and usable_reply_topic(topic) == topic


@pytest.mark.parametrize("topic", BAD_TOPICS)
def test_unusable_reply_topics(topic: object) -> None:
    """Wildcards, NUL/control characters, $-topics, the platform's trees, empty, too long,
    non-strings and invalid UTF-8 are refused, each with a reason."""
    assert reply_topic_problem(topic) and usable_reply_topic(topic) is None


@pytest.mark.parametrize(("value", "ok"), [
    ("a", True), ("", True), ("x" * 128, True), ("x" * 129, False), (0, True), (-(2**63), True),
    (2**63 - 1, True), (2**63, False), (None, True), (True, False), (1.5, False), ([1], False),
    ({"a": 1}, False),
])
def test_call_ids(value: object, ok: bool) -> None:
    """Ids are strings up to 128 characters, 64-bit integers (not booleans) or null."""
    assert is_call_id(value) is ok


def _doc(**kw: object) -> bytes:
    base: dict[str, object] = {"jsonrpc": "2.0", "id": "1", "method": "m", "replyTo": "session/s/response"}
    base.update(kw)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


@pytest.mark.parametrize(("payload", "kind"), [
    (b"not json", "malformed"),
    (b"[1,2]", "malformed"),
    (_doc(id=[1]), "malformed"),
    (_doc(id={"a": 1}), "malformed"),
    (_doc(id=...), "malformed"),
    (_doc(id="x" * 129), "malformed"),
    (_doc(method="m" * 129), "malformed"),
    (_doc(method=""), "malformed"),
    (_doc(method=5), "malformed"),
    (_doc(replyTo="system/c/security/actions/active"), "rejected"),
    (_doc(replyTo="a/+/b"), "rejected"),
    (_doc(replyTo="a/#"), "rejected"),
    (_doc(replyTo="a\x00b"), "rejected"),
    (_doc(replyTo="$SYS/x"), "rejected"),
    (_doc(replyTo=7), "rejected"),
])
def test_refused_calls(payload: bytes, kind: str) -> None:
    """Each bad call gets one verdict: malformed (not a usable call) or rejected (reply topic)."""
    v = read_call(payload)
    assert isinstance(v, Refused) and v.kind == kind


def test_response_topic_property_wins_and_is_checked() -> None:
    """The MQTT 5 Response Topic takes precedence; an unusable one rejects the call even when the
    body's replyTo is fine; Correlation Data becomes the correlation id (capped)."""
    v = read_call(_doc(), response_topic="session/p/response", correlation_data=b"c1")
    assert isinstance(v, IntakeCall) and v.reply_to == "session/p/response" and v.correlation_id == "c1"
    assert isinstance(read_call(_doc(), response_topic="system/c/health"), Refused)
    v = read_call(_doc(correlationId="x" * 257))
    assert isinstance(v, IntakeCall) and v.correlation_id is None
    v = read_call(_doc(replyTo=""))
    assert isinstance(v, IntakeCall) and v.reply_to is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
call_like = st.fixed_dictionaries({}, optional={
    "jsonrpc": json_values, "id": json_values, "method": json_values | st.text(max_size=200),
    "replyTo": json_values | st.sampled_from(GOOD_TOPICS + [t for t in BAD_TOPICS if isinstance(t, str)]),
    "correlationId": json_values, "params": json_values})


def _json(value: object) -> bytes:
    return json.dumps(value).encode()  # stdlib: any integer, lone surrogates escaped


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200) | call_like.map(_json) | json_values.map(_json),
       st.none() | st.text(max_size=40), st.none() | st.binary(max_size=40))
def test_read_call_never_raises_and_answers_only_usable_topics(payload: bytes, response_topic: str | None,
                                                               correlation_data: bytes | None) -> None:
    """Arbitrary bytes/JSON: one verdict, never an exception; an accepted call's reply topic is usable."""
    v = read_call(payload, response_topic, correlation_data)
    assert isinstance(v, IntakeCall | Refused)
    if isinstance(v, IntakeCall):
        assert v.reply_to is None or reply_topic_problem(v.reply_to) is None
        assert is_call_id(v.call_id) and 0 < len(v.method) <= 128


def test_admission_caps_traffic_only_names_and_retires_idle_ones() -> None:
    """Configured and present services are always admitted; traffic-only names up to the cap; the
    rest refused and counted; idle traffic-only names retire and free their place."""
    a = ServiceAdmission(configured=["Users"], max_discovered=3, idle_retire_s=60)
    assert all(a.admit(f"Fake{i}", now=0.0) for i in range(3))
    assert not a.admit("Fake3", now=1.0) and not a.admit("Fake4", now=1.0)
    assert a.refused == 2
    assert a.admit("Users", now=1.0)
    assert a.announce("Orders") and a.admit("Orders", now=1.0) and not a.announce("Orders")
    a.admit("Fake0", now=50.0)
    assert sorted(a.retire_idle(now=61.0)) == ["Fake1", "Fake2"]
    assert a.admit("Fake3", now=62.0) and a.real() == {"Users", "Orders"}
    assert a.monitored() == {"Users", "Orders", "Fake0", "Fake3"}


def test_correlator_caps_methods_and_unknown_codes() -> None:
    """Distinct method names per tick and unknown error codes are capped, the overflow counted;
    unknown codes beyond the cap are recorded as -32603 (a failure, as any unknown code)."""
    c = Correlator(call_timeout_s=30)
    n = MAX_METHODS_PER_DELTA + 50
    for i in range(n):
        c.on_call("A", {"jsonrpc": "2.0", "id": i, "method": f"m{i}"}, "r", None, now=0.0)
    for i in range(n):
        c.on_response("r", {"id": i, "error": {"code": 1000 + i}}, now=0.1)
    deltas, _ = c.drain()
    assert len(deltas["A"].methods) == MAX_METHODS_PER_DELTA
    codes = {code for _, code in deltas["A"].outcomes}
    assert len(codes) == MAX_UNKNOWN_CODES + 1 and -32603 in codes
    assert c.counters.capped == 50 + (n - MAX_UNKNOWN_CODES)


def _core() -> MonitorCore:
    return MonitorCore(service="S", cluster_id="c", breaker=load_breaker_policy().for_service("S"),
                       health=load_health_policy(), now=0.0)


def test_monitor_caps_instances_and_affected_operations() -> None:
    """Presence instances beyond the cap are counted (instancesDropped in the summary), known ones
    still update; affectedOperations lists at most 20 methods and counts the rest."""
    core = _core()
    core.apply([ServiceDelta("S", presence={f"i{k}": True for k in range(MAX_INSTANCES + 10)})], 1.0)
    assert len(core.instances) == MAX_INSTANCES and core.instances_dropped == 10
    d = ServiceDelta("S", presence={f"i{k}": False for k in range(MAX_INSTANCES)},
                     methods={f"m{k:03d}": 1 for k in range(45)})
    result = None
    for t in range(2, 40):
        result = core.apply([d if t == 2 else ServiceDelta("S")], float(t))
        if result.health_message and result.health_message["type"] == "service_unavailable":
            break
    assert result is not None and result.health_message is not None
    msg = result.health_message
    assert msg["type"] == "service_unavailable"
    assert len(msg["affectedOperations"]) == MAX_AFFECTED_OPERATIONS
    assert msg["affectedOperationsOmitted"] == 45 - MAX_AFFECTED_OPERATIONS
    parsed = parse_model(ServiceUnavailable, msg)
    assert parsed.affected_operations_omitted == 25 and len(parsed.affected_operations) == 20
    assert result.summary["instancesDropped"] == 10


def test_made_up_names_do_not_lift_the_cascade_guard() -> None:
    """With 2 real services and 100 traffic-only names, 50 % allows one preemptive open, not 51."""
    policy = DependencyPolicy(dependencies={}, min_observations=1)
    graph = DependencyGraph(config=policy)
    for i in range(3):
        graph.observe_edge(f"Dep{i}", "Users", now=0.0)
    fakes = [f"Fake{i}" for i in range(100)]
    known = ["Users", "Dep0", "Dep1", "Dep2", *fakes]
    plan = plan_cascade(graph, "Users", known, [], 1.0, policy, real_services={"Users", "Dep0", "Dep1"})
    assert [p.service for p in plan.preemptive_opens] == ["Dep0"] and plan.held_back == ("Dep1", "Dep2")
    unguarded = plan_cascade(graph, "Users", known, [], 1.0, policy)
    assert len(unguarded.preemptive_opens) == 3
