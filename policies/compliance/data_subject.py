"""GDPR data-subject requests reported live on ``audit/{Service}/data-subject`` → audit events of
kind ``data_subject_request`` (``policies.audit.schema``), the rows ``drivers.report gdpr`` lists.

A service reports a request when it is received and again when it is completed or rejected,
with the same ``requestId``. ``RequestMemo`` remembers when each open request was received (at
most ``capacity``, least recently received dropped first, counted) so the final event records
``daysToComplete``; a final event whose receipt was not seen (before a restart, or evicted) uses
its own ``receivedAt`` when it carries one, else records no duration (counted as ``unmatched``).
Pure: ``now`` is passed in; every string is cleaned and cut.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from policies.audit import schema
from policies.audit.events import CHAIN_PREFIX
from policies.audit.redaction import clean_text
from policies.common.config import format_duration
from policies.compliance.classification import CompliancePolicy

DAY = 86400.0
MAX_OPEN_REQUESTS = 100_000
_ID_LEN = 256
_TEXT_LEN = 512


class RequestMemo:
    """When each open request was received, keyed by (service, requestId); bounded."""

    def __init__(self, capacity: int = MAX_OPEN_REQUESTS) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._open: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.counts = dict.fromkeys(("received", "answered", "matched", "unmatched", "evicted"), 0)

    def __len__(self) -> int:
        return len(self._open)

    def received(self, service: str, request_id: str, at: float) -> None:
        """Remember the receipt (a repeated receipt keeps the first time)."""
        self.counts["received"] += 1
        key = (service, request_id)
        if key in self._open:
            return
        self._open[key] = at
        if len(self._open) > self.capacity:
            self._open.popitem(last=False)
            self.counts["evicted"] += 1

    def answered(self, service: str, request_id: str, at: float, received_at: float | None) -> float | None:
        """Days from receipt to ``at`` (never negative), forgetting the request; None if unknown."""
        self.counts["answered"] += 1
        start = self._open.pop((service, request_id), None)
        if start is None:
            start = received_at
        else:
            self.counts["matched"] += 1
        if start is None:
            self.counts["unmatched"] += 1
            return None
        return round(max(0.0, at - start) / DAY, 3)


def subject_request_event(*, service: str, request_id: str, user_id: str, request_type: str, status: str,
                          timestamp: float, days_to_complete: float | None, reason: str | None,
                          policy: CompliancePolicy) -> dict[str, Any]:
    """One data-subject request event → its audit event (default retention chain)."""
    return {
        schema.TS: timestamp,
        schema.KIND: schema.DATA_SUBJECT_REQUEST,
        schema.RETENTION: f"{CHAIN_PREFIX}{format_duration(policy.default.retention)}",
        schema.EVENT_TYPE: "DataSubjectRequest",
        schema.SERVICE: clean_text(service, _ID_LEN),
        schema.REQUEST_ID: clean_text(request_id, _ID_LEN),
        schema.USER_ID: clean_text(user_id, _ID_LEN),
        schema.REQUEST_TYPE: request_type,
        schema.STATUS: status,
        schema.DAYS_TO_COMPLETE: days_to_complete,
        schema.REASON: None if reason is None else clean_text(reason, _TEXT_LEN),
    }


def _instant(value: float | None, fallback: float | None) -> float | None:
    """An epoch instant between 1970 and the year ~5000, else ``fallback``."""
    return value if value is not None and 0 <= value < 1e11 else fallback


def record_request(memo: RequestMemo, *, service: str, request_id: str, user_id: str, request_type: str,
                   status: str, timestamp: float, received_at: float | None, reason: str | None,
                   policy: CompliancePolicy, now: float) -> dict[str, Any]:
    """Note a receipt in ``memo`` or measure an answer against it; the audit event to append. An
    instant out of range (year 1, 9999) is replaced by ``now`` (``received_at`` by nothing)."""
    timestamp = _instant(timestamp, now) or now
    received_at = _instant(received_at, None)
    days = None
    if status == "received":
        memo.received(service, request_id, timestamp)
    else:
        days = memo.answered(service, request_id, timestamp, received_at)
    return subject_request_event(service=service, request_id=request_id, user_id=user_id,
                                 request_type=request_type, status=status, timestamp=timestamp,
                                 days_to_complete=days, reason=reason, policy=policy)


__all__ = ["MAX_OPEN_REQUESTS", "RequestMemo", "record_request", "subject_request_event"]
