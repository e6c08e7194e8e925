"""Idle incidents end: ``policies.response.incident_expiry`` (table tests) and the response policy's TTL."""

from __future__ import annotations

from typing import Any

import pytest

from policies.response.config import load_response_policy
from policies.response.incident_expiry import incident_expired, last_event_at

T0 = 1_800_000_000.0
H = 3600.0


@pytest.mark.parametrize(("status", "data", "now", "expired"), [
    ("open", {}, T0 + H - 1, False),                                         # not idle long enough
    ("open", {}, T0 + H, True),                                              # idle exactly the TTL
    ("contained", {}, T0 + 2 * H, True),                                     # its ban done, nothing since
    ("escalated", {}, T0 + 2 * H, True),
    ("resolved", {}, T0 + 9 * H, False),                                     # already closed
    ("closed", {}, T0 + 9 * H, False),
    ("open", {"log": [{"ts": T0 + 0.5 * H, "action": "folded"}]}, T0 + H, False),  # a folded alert restarts it
    ("open", {"log": [{"ts": T0 + 0.5 * H}]}, T0 + 1.5 * H, True),
    ("open", {"awaitingApproval": ["a1"]}, T0 + 9 * H, False),               # waits for an operator
    ("open", {"awaitingApproval": []}, T0 + 9 * H, True),
    ("open", {"log": [{"ts": "soon"}, {"ts": float("inf")}, {"ts": True}, "junk", {}]}, T0 + H, True),  # bad ts
    ("open", {"log": "not a list"}, T0 + H, True),
])
def test_incident_expires_after_ttl_without_events(status: str, data: dict[str, Any], now: float,
                                                   expired: bool) -> None:
    """Open incidents with no event (creation or log entry) for the TTL expire; closed ones and
    ones awaiting approval do not; log entries without a usable time are ignored."""
    assert incident_expired(status=status, created_at=T0, data=data, now=now, ttl=H) is expired


def test_last_event_is_the_latest_log_time_or_creation() -> None:
    """The last event is the newest finite ``ts`` in the log, never earlier than creation."""
    assert last_event_at(T0, {}) == T0
    assert last_event_at(T0, {"log": [{"ts": T0 - 5}, {"ts": T0 + 7}, {"ts": T0 + 3}]}) == T0 + 7


def test_response_policy_has_an_incident_ttl(tmp_path: Any) -> None:
    """The shipped TTL is 24 h; an override file can change it, and a non-positive one is refused."""
    from policies.common.config import PolicyConfigError

    assert load_response_policy().incident_ttl == 24 * H
    (tmp_path / "response.yaml").write_text("incident_ttl: 2h\n")
    assert load_response_policy(tmp_path).incident_ttl == 2 * H
    (tmp_path / "response.yaml").write_text("incident_ttl: 0s\n")
    with pytest.raises(PolicyConfigError):
        load_response_policy(tmp_path)
