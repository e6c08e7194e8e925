"""The audit writer's intake (``AuditWriterBody`` without Ray or a broker: its bus is never started,
its store never opened) under arbitrary bytes and JSON, and the observers' call records under
arbitrary values: nothing raises, every message or record is counted exactly once (as a call,
data access, data-subject request, auth, authz or malformed), and a flood keeps the batch, the alerts and the
violation entries bounded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.audit_trail import MAX_PENDING_VIOLATIONS
from actors.audit_writer import AuditWriterBody
from actors.clock import FakeClock
from actors.security_common import SecurityOptions
from actors.settings import OperateSettings
from adapters.mqtt.bus import Message

AUDIT_TOPICS = ["security/auth/login", "security/authz/d", "audit/Users/data-access", "audit/Patients/data-access",
                "audit/-bad/data-access", "audit/" + "n" * 70 + "/data-access", "audit/Users/data-subject",
                "audit/-bad/data-subject"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10)
times = st.sampled_from(["2026-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "nope"]) \
    | st.integers() | st.floats(allow_nan=False)
events = st.fixed_dictionaries({}, optional={
    "userId": st.text(max_size=12) | json_values, "ipAddress": st.sampled_from(["10.0.0.1", "x" * 70]) | json_values,
    "success": st.booleans() | json_values, "allowed": st.booleans() | json_values, "timestamp": times | json_values,
    "service": st.sampled_from(["Users", "", "x" * 70]) | json_values, "method": st.text(max_size=10) | json_values,
    "roles": st.lists(st.text(max_size=8), max_size=4) | json_values,
    "collection": st.sampled_from(["patients", "cards", "users", "x" * 200]) | json_values,
    "operation": st.sampled_from(["read", "write", "x" * 40]) | json_values,
    "recordCount": st.integers() | json_values, "recordIds": st.lists(st.text(max_size=4), max_size=5) | json_values,
    "userAgent": st.text(max_size=20) | json_values, "reason": st.text(max_size=20) | json_values,
    "requestId": st.sampled_from(["r1", "r2", "", "x" * 300]) | json_values,
    "requestType": st.sampled_from(["access", "erasure", "objection", "delete"]) | json_values,
    "status": st.sampled_from(["received", "completed", "rejected", "pending"]) | json_values,
    "receivedAt": times | json_values,
}).map(lambda d: json.dumps(d).encode())
messages = st.builds(Message, topic=st.sampled_from(AUDIT_TOPICS),
                     payload=st.binary(max_size=120) | events | json_values.map(lambda v: json.dumps(v).encode()))
call_records = st.fixed_dictionaries({}, optional={
    "ts": json_values | st.integers(), "service": json_values, "method": json_values, "userId": json_values,
    "sessionId": json_values, "correlationId": json_values, "code": json_values | st.integers(),
    "durationMs": json_values | st.integers() | st.just(10**400), "ipAddress": json_values,
    "userAgent": json_values, "params": json_values, "payloadBytes": json_values, "result": json_values,
}) | json_values


def writer(tmp: Path, **options: Any) -> AuditWriterBody:
    s = OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id="c", store_url=f"sqlite:///{tmp}/a.db")
    return AuditWriterBody(s, SecurityOptions(**options), clock=FakeClock())


def handle(w: AuditWriterBody, m: Message) -> None:
    if m.topic.startswith("security/auth/"):
        w._on_auth(m)
    elif m.topic.startswith("security/authz/"):
        w._on_authz(m)
    elif m.topic.endswith("/data-subject"):
        w._on_data_subject(m)
    else:
        w._on_data_access(m)


def counted(w: AuditWriterBody) -> int:
    c = w.trail.counts
    return c["calls"] + c["data_access"] + c["data_subject"] + c["auth"] + c["authz"] + c["malformed"]


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(batch=st.lists(messages, max_size=30), records=st.lists(call_records, max_size=10))
async def test_every_audit_input_counted_exactly_once(tmp_path: Path, batch: list[Message],
                                                      records: list[Any]) -> None:
    """Arbitrary bytes/JSON on the three topics and arbitrary call records: no exception escapes
    and calls + data_access + data_subject + auth + authz + malformed == inputs; every accepted
    input left one event in the batch (plus one per violation); open data-subject requests stay
    within the memo's capacity."""
    w = writer(tmp_path)
    for m in batch:
        handle(w, m)
    await w.calls(records)
    assert counted(w) == len(batch) + len(records)
    c = w.trail.counts
    assert len(w.trail.pending) == (c["calls"] + c["data_access"] + c["data_subject"] + c["auth"] + c["authz"]
                                    + c["violations"])
    assert len(w.trail.requests) <= w.trail.requests.capacity
    for e in w.trail.pending:
        assert isinstance(e["ts"], float) and abs(e["ts"]) < 1e11


async def test_out_of_range_call_fields_are_recorded_or_counted(tmp_path: Path) -> None:
    """A call record whose duration does not fit a float (it used to raise OverflowError out of
    ``calls``) is still audited, without the duration; a non-mapping record is malformed."""
    w = writer(tmp_path)
    await w.calls([{"service": "Users", "method": "m", "durationMs": 10**400}, ["not", "a", "record"]])
    assert w.trail.counts["calls"] == 1 and w.trail.counts["malformed"] == 1
    assert w.trail.pending[0]["durationMs"] is None


async def test_full_batch_raises_one_loss_alert_not_one_per_event(tmp_path: Path) -> None:
    """With the batch full, 5 000 more events are counted as lost; the pending alerts hold one
    AuditEventsLost alert carrying the total, not 5 000."""
    w = writer(tmp_path, audit_max_pending=10)
    ev = json.dumps({"userId": "u", "success": False, "timestamp": "2026-01-01T00:00:00Z"}).encode()
    for _ in range(5010):
        w._on_auth(Message("security/auth/login", ev))
    assert w.trail.counts["auth"] == 5010 and w.trail.counts["lost"] == 5000
    lost = [a for a in w.trail.alerts if a["labels"]["alertname"] == "AuditEventsLost"]
    assert len(lost) == 1 and "5000" in lost[0]["annotations"]["summary"]


def test_violation_flood_is_bounded(tmp_path: Path) -> None:
    """Distinct users each over the 24 h limit: at most MAX_PENDING_VIOLATIONS alerts and state
    entries wait for the next flush; the rest are still audited (in the batch) and counted."""
    w = writer(tmp_path, audit_max_pending=10**6)
    n = MAX_PENDING_VIOLATIONS + 300
    for i in range(n):
        w._on_data_access(Message("audit/Users/data-access", json.dumps(
            {"userId": f"u{i}", "collection": "c", "operation": "read", "recordCount": 10**7,
             "timestamp": "2026-01-01T00:00:00Z"}).encode()))
    c = w.trail.counts
    assert c["data_access"] == n and c["violations"] >= n
    assert len(w.trail.alerts) <= MAX_PENDING_VIOLATIONS + 1
    assert len(w.trail.violation_entries) <= MAX_PENDING_VIOLATIONS
    assert c["violations_unalerted"] == c["violations"] - len(w.trail.violation_entries)
