"""The observer's correlation core: matching, timeouts, caps, dependencies, fast-fail."""

from __future__ import annotations

from policies.breaker.outcomes import UNANSWERED
from policies.observation.correlation import Correlator


def call(i: object, method: str = "m", user: str | None = None) -> dict:
    doc: dict = {"jsonrpc": "2.0", "id": i, "method": method}
    if user:
        doc["userContext"] = {"userId": user}
    return doc


def test_call_and_response_are_matched_by_reply_topic_and_id() -> None:
    """A response on the call's reply topic with its id finishes it, with latency and code."""
    c = Correlator(call_timeout_s=30)
    c.on_call("A", call(1), "session/s/response", None, now=10.0)
    c.on_call("A", call(2), "session/s/response", None, now=10.0)
    assert c.on_response("session/other/response", {"id": 1, "result": 1}, now=10.1) is None
    p = c.on_response("session/s/response", {"id": 1, "result": 1}, now=10.25)
    assert p is not None and p.service == "A"
    c.on_response("session/s/response", {"id": 2, "error": {"code": -32001}}, now=10.5)
    deltas, _ = c.drain()
    d = deltas["A"]
    assert d.calls == 2 and d.responses == 2
    assert [(round(t, 3), code) for t, code in d.outcomes] == [(0.25, None), (0.5, -32001)]
    assert c.counters.unmatched_responses == 1 and not c.pending


def test_unanswered_calls_time_out_per_service() -> None:
    """A call with no answer within its service's timeout becomes UNANSWERED, in order."""
    c = Correlator(call_timeout_s=30, per_service_timeout_s={"Fast": 1.0})
    c.on_call("Fast", call(1), "r", None, now=0.0)
    c.on_call("Slow", call(2), "r", None, now=0.0)
    assert c.expire(0.99) == 0
    assert c.expire(1.0) == 1
    assert c.expire(29.0) == 0
    assert c.expire(30.0) == 1
    deltas, _ = c.drain()
    assert deltas["Fast"].outcomes == [(1.0, UNANSWERED)]
    assert deltas["Slow"].timeouts == 1
    assert c.counters.timeouts == 2


def test_pending_cap_counts_overflow() -> None:
    """Beyond the cap a call is counted as overflow and not tracked, never silently lost."""
    c = Correlator(call_timeout_s=30, pending_cap=3)
    for i in range(5):
        c.on_call("A", call(i), "r", None, now=0.0)
    assert len(c.pending) == 3 and c.counters.pending_overflow == 2


def test_calls_without_reply_topic_are_counted_not_tracked() -> None:
    """A call nobody can be answered on is counted but not pending."""
    c = Correlator(call_timeout_s=30)
    c.on_call("A", call(1), None, None, now=0.0)
    assert not c.pending and c.drain()[0]["A"].calls == 1


def test_dependencies_learned_from_correlation_id() -> None:
    """A call to B while A's call with the same correlationId is pending teaches A -> B."""
    c = Correlator(call_timeout_s=30)
    c.on_call("OrderManagement", call(1), "r1", "corr-1", now=0.0)
    c.on_call("UserManagement", call(2), "r2", "corr-1", now=0.1)
    c.on_call("Inventory", call(3), "r3", "corr-2", now=0.1)
    c.on_response("r2", {"id": 2, "result": {}}, now=0.15)
    c.on_response("r1", {"id": 1, "result": {}}, now=0.2)
    c.on_call("Payments", call(4), "r4", "corr-1", now=0.3)  # both finished: no edge
    _, edges = c.drain()
    assert edges == {("OrderManagement", "UserManagement"): 1}


def test_open_breaker_refuses_and_half_open_lets_trials_through() -> None:
    """Open: every call answered -32503 with retryAfter; past open_until only the permits pass."""
    c = Correlator(call_timeout_s=30)
    c.set_breaker("A", "open", open_until=100.0, trial_permits=2)
    ans = c.on_call("A", call(1), "r", "c1", now=50.0)
    assert ans is not None and ans.kind == "circuit_open" and ans.retry_after_s == 50.0
    assert c.on_call("A", call(2), "r", None, now=100.0) is None
    assert c.on_call("A", call(3), "r", None, now=100.0) is None
    assert c.on_call("A", call(4), "r", None, now=100.0) is not None
    assert sum(p.trial for p in c.pending.values()) == 2
    c.set_breaker("A", "closed", 0.0, 0, epoch=1)
    assert c.on_call("A", call(5), "r", None, now=101.0) is None
    assert c.counters.fast_failed == 2


def test_take_pending_answers_unavailable_service() -> None:
    """All pending calls of one service are handed over (to be answered -32503), others stay."""
    c = Correlator(call_timeout_s=30)
    for i in range(3):
        c.on_call("A", call(i), "r", None, now=0.0)
    c.on_call("B", call(9), "r", None, now=0.0)
    taken = c.take_pending("A", 1.0)
    assert sorted(p.call_id for p in taken) == [0, 1, 2]
    assert list(c.pending) == [("r", 9)]
    assert c.expire(100.0) == 1  # only B's call is left to time out


def test_malformed_error_code_counts_as_internal() -> None:
    """An error object without an integer code counts as -32603 (a server fault)."""
    c = Correlator(call_timeout_s=30)
    c.on_call("A", call(1), "r", None, now=0.0)
    c.on_response("r", {"id": 1, "error": {"code": "x"}}, now=1.0)
    assert c.drain()[0]["A"].outcomes == [(1.0, -32603)]


def test_activity_and_audit_records() -> None:
    """Per-user calls per service are counted; each finished call becomes one audit record with
    its outcome, duration, session and client details; both are bounded and drained."""
    c = Correlator(call_timeout_s=1, audit=True, audit_cap=2)
    doc = {"jsonrpc": "2.0", "id": 1, "method": "getUser", "params": {"id": "u9"},
           "userContext": {"userId": "alice", "ipAddress": "203.0.113.7", "userAgent": "ua"}}
    c.on_call("Users", doc, "session/s1/response", "corr", now=10.0)
    c.on_call("Users", {**doc, "id": 2}, "session/s1/response", None, now=10.0)
    c.on_call("Orders", {**doc, "id": 3}, "session/s1/response", None, now=10.0)
    c.on_response("session/s1/response", {"id": 1, "result": {}}, now=10.5)
    c.expire(11.0)
    activity, audit = c.drain_security()
    assert activity == {"alice": {"Users": 2, "Orders": 1}}
    assert audit[0] == {"ts": 10.0, "service": "Users", "method": "getUser", "userId": "alice", "sessionId": "s1",
                        "correlationId": "corr", "durationMs": 500.0, "code": None, "ipAddress": "203.0.113.7",
                        "userAgent": "ua", "params": {"id": "u9"}}
    assert len(audit) == 2 and c.audit_dropped == 1
    assert c.drain_security() == ({}, [])


def test_delta_merge_keeps_everything_in_order() -> None:
    """Deltas held while a monitor starts fold together without losing outcomes or presence."""
    from policies.observation.correlation import ServiceDelta

    a = ServiceDelta("A", calls=2, responses=1, outcomes=[(0.1, None)], methods={"m": 2}, presence={"i1": True},
                     max_inflight=3, last_success=5.0)
    b = ServiceDelta("A", calls=1, outcomes=[(0.2, -32603)], trials=[(0.3, None)], methods={"m": 1, "n": 1},
                     presence={"i1": False, "i2": True}, max_inflight=1, inflight=1)
    a.merge(b)
    assert (a.calls, a.responses, a.max_inflight, a.inflight, a.last_success) == (3, 1, 3, 1, 5.0)
    assert a.outcomes == [(0.1, None), (0.2, -32603)] and a.trials == [(0.3, None)]
    assert a.methods == {"m": 3, "n": 1} and a.presence == {"i1": False, "i2": True}


def test_permits_refresh_only_on_a_new_epoch_and_lost_trials_are_reported() -> None:
    """Open past its deadline hands out the permits once per epoch (not every tick); a trial
    answered on a down service's behalf reaches the monitor as unanswered."""
    c = Correlator(call_timeout_s=30)
    c.set_breaker("A", "open", open_until=10.0, trial_permits=1, epoch=5)
    assert c.on_call("A", call(1), "r", None, now=11.0) is None  # the one trial
    c.set_breaker("A", "open", open_until=11.5, trial_permits=1, epoch=5)  # next tick, same epoch
    assert c.on_call("A", call(2), "r", None, now=12.0) is not None  # refused: no new permit
    taken = c.take_pending("A", 13.0)
    assert [p.call_id for p in taken] == [1]
    assert c.drain()[0]["A"].trials == [(2.0, UNANSWERED)]
    c.set_breaker("A", "half_open", open_until=0.0, trial_permits=1, epoch=6)
    assert c.on_call("A", call(3), "r", None, now=14.0) is None
