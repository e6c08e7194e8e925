"""One audit-event schema (policies.audit.schema): the live writer's events, the generator's events
and the analysis jobs' reads all agree on kinds and field names."""

from __future__ import annotations

from typing import Any

import pytest

from drivers import history_model as hm
from drivers.analysis_tasks import BASELINE_FIELDS, CALL_KIND, MESSAGE_FIELDS, REPORT_FIELDS, REPORT_KINDS
from policies.audit import schema
from policies.audit.events import auth_event, authz_event, call_event, data_access_event
from policies.compliance.classification import DataAccess, load_compliance_policy
from policies.compliance.data_subject import RequestMemo, record_request

POLICY = load_compliance_policy()
NOW = 1_800_000_000.0


def live_events() -> list[dict[str, Any]]:
    """One event of each kind as the audit writer records it."""
    access = DataAccess(user_id="alice", roles=frozenset({"clerk"}), service="UserManagement", collection="users",
                        operation="read", record_count=3, timestamp=NOW)
    return [
        call_event({"ts": NOW, "service": "Payments", "method": "charge", "userId": "alice", "sessionId": "s1",
                    "correlationId": "c1", "durationMs": 12.5, "code": -32603, "ipAddress": "10.0.0.1",
                    "userAgent": "ua", "params": {"amount": 5}, "result": {"ok": False}}, POLICY, NOW),
        data_access_event(access, ["r1", "r2", "r3"], POLICY, NOW),
        auth_event(user_id="alice", ip_address="10.0.0.1", success=False, timestamp=NOW, method="password",
                   user_agent="ua", reason="bad password", policy=POLICY, now=NOW),
        authz_event(user_id="alice", service="Payments", method="refund", allowed=False, timestamp=NOW,
                    roles=["clerk"], ip_address="10.0.0.1", policy=POLICY, now=NOW),
        record_request(RequestMemo(), service="UserManagement", request_id="dsr-1", user_id="alice",
                       request_type="erasure", status="rejected", timestamp=NOW, received_at=NOW - 86400,
                       reason="identity not verified", policy=POLICY, now=NOW),
    ]


def generated_events() -> list[dict[str, Any]]:
    m = hm.HistoryModel(events=20_000, days=2, users=40, services=8, seed=3, end=NOW - NOW % 3600, rollup_days=1)
    pop = hm.Population(m)
    hour = int(m.end // 3600) - 2
    return hm.hour_events(m, pop, hour, 2_000) + hm.planted_events(m, pop) + hm.subject_requests(m)


def test_the_live_writer_records_exactly_the_schema() -> None:
    """Each live event carries every field its kind lists in FIELDS (and nothing else)."""
    events = live_events()
    assert [e["kind"] for e in events] == [schema.CALL, schema.DATA_ACCESS, schema.AUTH, schema.AUTHZ,
                                           schema.DATA_SUBJECT_REQUEST]
    for e in events:
        assert set(e) == schema.FIELDS[e["kind"]], e["kind"]


def test_generated_history_has_the_live_shape() -> None:
    """Every generated event is of a schema kind, holds only that kind's fields and every field the
    analysis jobs read."""
    events = generated_events()
    kinds = {e["kind"] for e in events}
    assert kinds == {schema.CALL, schema.DATA_ACCESS, schema.AUTH, schema.AUTHZ, schema.DATA_SUBJECT_REQUEST}
    for e in events:
        assert set(e) <= schema.FIELDS[e["kind"]], e
        assert schema.REQUIRED[e["kind"]] <= set(e), e


@pytest.mark.parametrize(("fields", "kinds"), [
    (BASELINE_FIELDS, (schema.CALL, schema.DATA_ACCESS)),
    (MESSAGE_FIELDS, (CALL_KIND,)),
    (REPORT_FIELDS, REPORT_KINDS),
])
def test_the_readers_read_fields_the_writer_fills(fields: Any, kinds: tuple[str, ...]) -> None:
    """Every key an analysis job reads is a required field of at least one kind it reads."""
    required = set().union(*(schema.REQUIRED[k] for k in kinds))
    assert {f.key for f in fields} <= required


def test_live_call_events_measure_the_payload_and_normalise_the_code() -> None:
    """payloadBytes is the params' JSON size; code 0 is a success with a null resultCode."""
    ev = call_event({"service": "S", "method": "m", "code": 0, "params": {"a": "xyz"}}, POLICY, NOW)
    assert ev["payloadBytes"] == len(b'{"a":"xyz"}') and ev["success"] is True and ev["resultCode"] is None
    ev = call_event({"service": "S", "method": "m", "params": None}, POLICY, NOW)
    assert ev["payloadBytes"] is None


def test_auth_and_authz_events_are_cleaned_and_bounded() -> None:
    """Text from the wire is scrubbed of secrets and control characters; role lists are capped."""
    ev = auth_event(user_id="bob\r\nINJECTED", ip_address="10.0.0.1", success=False, timestamp=NOW, method=None,
                    user_agent=None, reason="password=hunter2", policy=POLICY, now=NOW)
    assert "\n" not in ev["userId"] and "hunter2" not in ev["reason"]
    assert ev["retention"] == "retention-365d"
    ev = authz_event(user_id="bob", service="UserManagement", method="get", allowed=True, timestamp=NOW,
                     roles=[f"r{i:03d}" for i in range(500)], ip_address=None, policy=POLICY, now=NOW)
    assert len(ev["roles"]) == 32 and ev["retention"] == "retention-1095d"
