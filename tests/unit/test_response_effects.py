"""What the notification response actions produce: the security-team alert (routed by the shipped
tree to the ``security-team`` receiver) and the user notice (parsed back with its contract model)."""

from __future__ import annotations

import pytest

from policies.alerting.config import load_alerting_policy
from policies.response.config import load_response_policy
from policies.response.effects import SECURITY_TEAM, security_team_alert, user_notice
from policies.response.plan import OffenderHistory, PlannedAction, plan_response
from policies.security.analyzer import SecurityAlert
from protocol import topics
from protocol.contract import parse_published
from protocol.security import SecurityNotice

T0 = 1_700_000_000.0
IP = "203.0.113.7"
CONFIG = load_response_policy()


def alert(type_: str, **kw: object) -> SecurityAlert:
    fields: dict[str, object] = {"type": type_, "severity": "critical", "source": IP, "target": "alice",
                                 "user_id": "alice", "ip_address": IP, "description": "6 failed logins",
                                 "timestamp": T0}
    fields.update(kw)
    return SecurityAlert(**fields)  # type: ignore[arg-type]


def planned(a: SecurityAlert, name: str) -> PlannedAction:
    [action] = [x for x in plan_response(a, OffenderHistory(), T0, CONFIG).actions if x.action == name]
    return action


def test_security_team_alert_goes_to_the_security_team_receiver() -> None:
    """credential_stuffing's notify_security_team: an alert labelled notify=security-team, with the
    incident and target, ending after resolve_after; the shipped tree routes it to security-team only."""
    a = alert("credential_stuffing")
    action = planned(a, "notify_security_team")
    doc = security_team_alert(action, a, "c1", T0 + 1, resolve_after=600)
    assert doc["labels"]["notify"] == SECURITY_TEAM
    assert doc["labels"]["incident"] == action.incident_id and doc["labels"]["target"] == IP
    assert doc["labels"]["severity"] == "critical" and doc["labels"]["cluster"] == "c1"
    assert (doc["startsAt"], doc["endsAt"]) == (T0 + 1, T0 + 601)
    routes = [r.opts.receiver for r in load_alerting_policy().root.match(doc["labels"]) if r.opts.receiver]
    assert routes == ["security-team"]


def test_security_team_alert_bounds_what_the_alert_carried() -> None:
    """A huge description or user id cannot make an unbounded label or annotation."""
    a = alert("unusual_service_access", description="x" * 100_000, user_id="u" * 5000)
    action = planned(a, "notify_security_team")
    doc = security_team_alert(action, a, "c1", T0, resolve_after=None)
    assert doc["endsAt"] is None
    assert max(len(v) for v in doc["labels"].values()) <= 256
    assert max(len(v) for v in doc["annotations"].values()) <= 1024


def test_user_notice_for_brute_force_parses_on_its_topic() -> None:
    """brute_force_attempt's notify_user: a SecurityNotice for the user, fixed text naming the
    source address, id = action id; the published dict parses with the contract's model."""
    a = alert("brute_force_attempt", description="attacker-controlled <script>")
    action = planned(a, "notify_user")
    notice = user_notice(action, a, "c1", T0 + 2)
    parsed = parse_published(topics.security_notices("c1"), notice.to_wire())
    assert isinstance(parsed, SecurityNotice)
    assert (parsed.user_id, parsed.notice_id, parsed.incident_id) == ("alice", action.action_id, action.incident_id)
    assert parsed.reason == "brute_force_attempt" and parsed.ip_address == IP
    assert f"from {IP}" in parsed.message and "<script>" not in parsed.message
    assert parsed.occurred_at.timestamp() == T0 and parsed.timestamp.timestamp() == T0 + 2


@pytest.mark.parametrize("ip", [None, "not-an-ip", "1" * 100])
def test_user_notice_drops_an_address_that_is_not_one(ip: str | None) -> None:
    """Only a valid IP address reaches the user's text; otherwise the notice names none."""
    a = alert("brute_force_attempt", ip_address=ip)
    action = planned(a, "notify_user")
    notice = user_notice(action, a, "c1", T0)
    assert notice.ip_address is None and " from " not in notice.message
