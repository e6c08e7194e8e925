"""GDPR data-subject requests: the wire model, the bounded memo that measures the time to answer,
the audit events recorded, and the GDPR report's one row per request."""

from __future__ import annotations

import pandas as pd
import pytest

from drivers.report_sections import subject_requests
from policies.audit import schema
from policies.compliance.classification import load_compliance_policy
from policies.compliance.data_subject import RequestMemo, record_request
from protocol import parse_model, topics
from protocol.contract import parse_published
from protocol.exceptions import ProtocolError
from protocol.security import DataSubjectRequest

POLICY = load_compliance_policy()
DAY = 86400.0
T0 = 1_800_000_000.0


def record(memo: RequestMemo, status: str, at: float, rid: str = "r1", service: str = "Users",
           received_at: float | None = None, now: float = T0) -> dict:
    return record_request(memo, service=service, request_id=rid, user_id="alice", request_type="erasure",
                          status=status, timestamp=at, received_at=received_at, reason=None, policy=POLICY, now=now)


def test_wire_model_and_topic() -> None:
    doc = {"requestId": "r1", "userId": "alice", "requestType": "portability", "status": "received",
           "timestamp": "2026-11-30T10:00:00Z"}
    m = parse_published(topics.data_subject("Users"), doc)
    assert isinstance(m, DataSubjectRequest) and m.request_type == "portability" and m.received_at is None
    assert topics.parse("audit/Users/data-subject").kind == "data_subject"  # type: ignore[union-attr]
    assert topics.parse("audit/-x/data-subject") is None
    for bad in ({"requestType": "delete"}, {"status": "pending"}, {"requestId": ""}, {"userId": "u" * 300}):
        with pytest.raises((ProtocolError, ValueError)):
            parse_model(DataSubjectRequest, {**doc, **bad})


def test_completed_after_received_records_days_to_complete() -> None:
    memo = RequestMemo()
    first = record(memo, "received", T0)
    assert first[schema.KIND] == schema.DATA_SUBJECT_REQUEST and first[schema.DAYS_TO_COMPLETE] is None
    assert len(memo) == 1
    again = record(memo, "received", T0 + DAY)  # a repeated receipt keeps the first time
    assert again[schema.DAYS_TO_COMPLETE] is None
    done = record(memo, "completed", T0 + 12.5 * DAY)
    assert done[schema.DAYS_TO_COMPLETE] == 12.5 and done[schema.STATUS] == "completed"
    assert set(done) == schema.FIELDS[schema.DATA_SUBJECT_REQUEST] and schema.REQUIRED[schema.DATA_SUBJECT_REQUEST] <= set(done)
    assert len(memo) == 0 and memo.counts["matched"] == 1
    # the same id at another service is another request
    record(memo, "received", T0, service="Orders")
    assert record(memo, "rejected", T0 + DAY, service="Users")[schema.DAYS_TO_COMPLETE] is None
    assert memo.counts["unmatched"] == 1 and len(memo) == 1


def test_answer_without_a_seen_receipt_uses_received_at() -> None:
    memo = RequestMemo()
    ev = record(memo, "completed", T0 + 3 * DAY, received_at=T0)
    assert ev[schema.DAYS_TO_COMPLETE] == 3.0 and memo.counts["unmatched"] == 0
    # never negative, and an out-of-range instant is replaced (timestamp by now; receivedAt by nothing)
    assert record(memo, "completed", T0, received_at=T0 + DAY)[schema.DAYS_TO_COMPLETE] == 0.0
    ev = record(memo, "completed", 253402300799.0, received_at=-62135596800.0, now=T0)
    assert ev[schema.TS] == T0 and ev[schema.DAYS_TO_COMPLETE] is None


def test_memo_is_bounded_and_counts_evictions() -> None:
    memo = RequestMemo(capacity=3)
    for i in range(10):
        record(memo, "received", T0 + i, rid=f"r{i}")
    assert len(memo) == 3 and memo.counts["evicted"] == 7
    assert record(memo, "completed", T0 + DAY, rid="r0")[schema.DAYS_TO_COMPLETE] is None  # evicted
    assert record(memo, "completed", T0 + 9 + DAY, rid="r9")[schema.DAYS_TO_COMPLETE] == 1.0
    with pytest.raises(ValueError):
        RequestMemo(capacity=0)


def test_strings_are_cleaned_and_cut() -> None:
    ev = record_request(RequestMemo(), service="Users", request_id="r\x00" + "x" * 1000, user_id="alice",
                        request_type="access", status="rejected", timestamp=T0, received_at=None,
                        reason="y" * 5000, policy=POLICY, now=T0)
    assert len(ev[schema.REQUEST_ID]) <= 256 and "\x00" not in ev[schema.REQUEST_ID]
    assert len(ev[schema.REASON]) <= 512


def test_report_keeps_one_row_per_request_dated_when_received() -> None:
    """Live rows (received + final per request id) fold into one, dated at receipt with the final
    status; a request still open stays; rows of another service with the same id are separate."""
    rows = pd.DataFrame([
        {"ts": T0, "service": "Users", "request_id": "r1", "status": "received", "days_to_complete": None},
        {"ts": T0 + 1, "service": "Users", "request_id": "r2", "status": "received", "days_to_complete": None},
        {"ts": T0 + 2, "service": "Orders", "request_id": "r1", "status": "received", "days_to_complete": None},
        {"ts": T0 + 5 * DAY, "service": "Users", "request_id": "r1", "status": "completed", "days_to_complete": 5.0},
    ])
    out = subject_requests(rows).sort_values(["service", "request_id"])
    assert list(zip(out["service"], out["request_id"], out["status"], out["ts"], strict=True)) == [
        ("Orders", "r1", "received", T0 + 2), ("Users", "r1", "completed", T0), ("Users", "r2", "received", T0 + 1)]
    assert subject_requests(rows.iloc[0:0]).empty
