"""The IncidentResponder's decisions as effects (``policies.response.incident``): admit an alert
(fold it, or plan, gate and order its effects), conclude once its actions were carried out (status,
escalation on failures, the emergency rule), and how stored incidents, undos and approvals change.
The shipped ``response.yaml`` is the configuration."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from policies.response.config import load_response_policy
from policies.response.effects import Enforce, Escalate, Fold, Hold, Persist, Publish, Remember
from policies.response.guard import ApprovalStep, ProtectedTargets
from policies.response.incident import (
    APPROVAL_COUNTS,
    LOG_CAP,
    Carried,
    Respond,
    active_refresh_due,
    admit,
    approval_outcome,
    conclude,
    disposition,
    due_undos,
    fold_summary,
    incident_topics,
    plan_undo,
    resolved_incident,
    restored_history,
    summary,
    undo_reason,
    updated_incident,
)
from policies.response.plan import OffenderHistory, PlannedAction
from policies.security.detection_rules import Protected
from policies.security.events import SecurityAlert

T0 = 1_700_000_000.0
H = 3600.0
CONFIG = load_response_policy()
PROTECTED = ProtectedTargets.from_policy(Protected())
ENFORCED = frozenset({"block_ip", "suspend_user", "rate_limit_user"})
IP = "203.0.113.7"
INCIDENTS, EMERGENCY = "system/c1/incidents", "system/c1/emergency"


def brute_force(ip: str = IP, severity: str = "critical", **metadata: object) -> SecurityAlert:
    return SecurityAlert(type="brute_force_attempt", severity=severity, source=ip, target="alice",  # type: ignore[arg-type]
                         user_id="alice", ip_address=ip, description="burst", timestamp=T0, metadata=metadata)


def respond(alert: SecurityAlert, history: OffenderHistory | None = None) -> Respond:
    decision = admit(alert, alert.to_wire(), history=history or OffenderHistory(), last_incident={}, now=T0,
                     policy=CONFIG, protected=PROTECTED, pending=0)
    assert isinstance(decision, Respond)
    return decision


def test_an_alert_is_planned_as_ordered_effects() -> None:
    """Offenders remembered, then the incident persisted open (before its actions: they reference
    it), then the actions carried out; the new history counts this offence."""
    r = respond(brute_force())
    kinds = [type(e) for e in r.effects]
    assert kinds == [Remember, Remember, Persist, Enforce, Enforce, Enforce]
    assert {e.entity for e in r.effects if isinstance(e, Remember)} == {IP, "alice"}
    [persist] = [e for e in r.effects if isinstance(e, Persist)]
    assert persist.status == "open" and persist.automated_response and persist.data["log"] == []
    assert [a.action for a in r.carried] == ["block_ip", "notify_user", "increase_monitoring"]
    assert r.history.count(IP, now=T0, lookback_s=H) == 1


def test_a_protected_target_is_held_not_enforced() -> None:
    """block_ip on loopback is refused (a Hold, listed on the incident); the rest is carried out."""
    r = respond(brute_force("127.0.0.1"))
    [hold] = [e for e in r.effects if isinstance(e, Hold)]
    assert hold.action.action == "block_ip" and not hold.waiting and hold.reason == "protected target"
    assert "block_ip" not in [a.action for a in r.carried]
    assert r.data["refused"] == [hold.action.action_id]


def test_a_source_over_its_limit_is_folded_into_its_latest_incident() -> None:
    history = OffenderHistory(incidents={IP: tuple(T0 - i for i in range(1, 6))})
    decision = admit(brute_force(), {}, history=history, last_incident={IP: "inc-latest"}, now=T0, policy=CONFIG,
                     protected=PROTECTED, pending=0)
    assert isinstance(decision, Fold) and decision.incident_id == "inc-latest"
    assert decision.entry["result"] == "folded" and decision.entry["alertType"] == "brute_force_attempt"
    assert fold_summary(decision)["status"] == "folded"


def test_applied_enforcement_contains_a_warning_incident() -> None:
    """Every action applied, no rule escalates a warning: contained, published on the incidents
    topic only."""
    r = respond(brute_force(severity="warning"))
    c = conclude(r, [Carried(action=a, error=None) for a in r.carried], now=T0, policy=CONFIG, cluster="c1",
                 enforced=ENFORCED)
    assert c.status == "contained" and c.escalation is None
    persist, publish = c.effects
    assert isinstance(persist, Persist) and persist.status == "contained"
    assert [e["result"] for e in persist.data["log"]] == ["applied"] * 3
    assert publish == Publish(event="created", topics=(INCIDENTS,))
    assert summary(r, c)["status"] == "contained"


def test_a_critical_incident_escalates_and_a_failure_raises_the_level() -> None:
    """A critical alert escalates to level 1; a failed action reaches the action_failed rule
    (level 2, severity critical) with the failure in its reason; created and escalated go to the
    emergency topic too."""
    r = respond(brute_force())
    assert r.escalation is not None and r.escalation.level == 1
    block, *rest = r.carried
    carried = [Carried(action=block, error="redis: down"), *(Carried(action=a, error=None) for a in rest)]
    c = conclude(r, carried, now=T0 + 1, policy=CONFIG, cluster="c1", enforced=ENFORCED)
    assert c.status == "escalated" and c.escalation is not None and c.escalation.level == 2
    assert "redis: down" in c.escalation.reason and c.data["escalation"]["rule"] == "action_failed"
    persist, created, escalate = c.effects
    assert isinstance(persist, Persist) and isinstance(escalate, Escalate)
    assert created == Publish(event="created", topics=(INCIDENTS, EMERGENCY))
    assert escalate.publish.topics == (INCIDENTS, EMERGENCY)
    assert escalate.alert.severity == "critical" and escalate.alert.labels["level"] == "2"
    assert [e["result"] for e in persist.data["log"]] == ["failed", "applied", "applied"]


def test_a_single_event_alert_escalates_no_further_than_level_1() -> None:
    r = respond(brute_force(severity="emergency", single_event=True))
    assert r.escalation is not None and r.escalation.level == 1 and "capped" in r.escalation.reason


@pytest.mark.parametrize(("severity", "event", "expected"), [
    ("warning", "created", (INCIDENTS,)),
    ("error", "escalated", (INCIDENTS,)),
    ("critical", "created", (INCIDENTS, EMERGENCY)),
    ("emergency", "escalated", (INCIDENTS, EMERGENCY)),
    ("critical", "updated", (INCIDENTS,)),
    ("emergency", "resolved", (INCIDENTS,)),
    ("bogus", "created", (INCIDENTS,)),
])
def test_the_emergency_rule(severity: str, event: str, expected: tuple[str, ...]) -> None:
    assert incident_topics("c1", severity, event) == expected


def test_updating_a_stored_incident() -> None:
    """A folded alert is counted, a settled approval leaves the awaiting list, an enforced action
    applied after approval contains an open incident (not an escalated one); the log is capped."""
    data = {"log": [{"ts": T0}], "awaitingApproval": ["a1", "a2"], "automatedResponse": ["notify_user"]}
    status, out = updated_incident("open", data, [{"ts": T0 + 1, "error": None}], enforced=ENFORCED, folded=True,
                                   settled="a1", applied="suspend_user")
    assert status == "contained" and out["folded"] == 1 and out["awaitingApproval"] == ["a2"]
    assert out["automatedResponse"] == ["notify_user", "suspend_user"] and out["log"][-1] == {"ts": T0 + 1}
    assert data["awaitingApproval"] == ["a1", "a2"]  # the input is left as it was
    assert updated_incident("escalated", data, [], enforced=ENFORCED, applied="suspend_user")[0] == "escalated"
    _, long = updated_incident("open", {}, [{"ts": float(i)} for i in range(LOG_CAP + 10)], enforced=ENFORCED)
    assert len(long["log"]) == LOG_CAP and long["log"][0] == {"ts": 10.0}
    resolved = resolved_incident({"log": []}, T0, {"result": "expired", "idleSeconds": 5})
    assert resolved["log"] == [{"ts": T0, "action": "resolve", "result": "expired", "idleSeconds": 5}]


def action(name: str, *, undo: str | None = None, until: float | None = None) -> PlannedAction:
    return PlannedAction(action=name, kind="enforcement", target=IP, incident_id="inc-1", action_id=f"inc-1:{name}",
                         until=until, undo_action=undo)


@pytest.mark.parametrize(("planned", "one_shot", "follow_up"), [
    (action("block_ip", undo="unblock_ip", until=T0 + H), False, None),
    (action("block_data_access", undo="restore_data_access"), False, None),
    (action("suspend_user"), False, None),  # enforced in the backends: held in the active set
    (action("notify_user"), True, "notify_user"),
    (action("notify_security_team"), True, "notify_security_team"),
    (action("preserve_evidence"), True, "preserve_evidence"),
])
def test_disposition(planned: PlannedAction, one_shot: bool, follow_up: str | None) -> None:
    d = disposition(planned, ENFORCED)
    assert (d.one_shot, d.follow_up) == (one_shot, follow_up)
    assert d.status == ("done" if one_shot else "applied")
    assert d.undo_at == (planned.until if planned.undo_action else None)


@dataclass(frozen=True)
class Held:
    id: str
    action: str
    target: str
    until: float | None


def test_an_undo_leaves_a_target_held_by_a_longer_action() -> None:
    old = Held("old", "block_ip", IP, T0)
    newer = Held("new", "block_ip", IP, T0 + 2 * H)
    plan = plan_undo(old, [newer], T0, CONFIG, "expired")
    assert plan.name == "unblock_ip" and plan.held_by == "new" and plan.params["heldBy"] == "new"
    assert plan_undo(old, [Held("gone", "block_ip", IP, T0)], T0, CONFIG, "expired").held_by is None
    assert plan_undo(Held("x", "mystery", IP, None), [], T0, CONFIG, "lifted").name == "undo_mystery"
    assert due_undos({"b": T0, "a": T0 - 5, "later": T0 + 1}, T0) == ["a", "b"]
    assert undo_reason(T0, T0) == "expired" and undo_reason(T0 + 1, T0) == "lifted" and undo_reason(None, T0) == "lifted"


def test_approval_outcomes() -> None:
    ok = action("suspend_user")
    loopback = PlannedAction(action="block_ip", kind="enforcement", target="127.0.0.1", incident_id="inc-1",
                             action_id="inc-1:0:block_ip")
    cases = [
        (ApprovalStep(action_id="1", decision="approved", action=ok, incident_id="inc-1"), "carry_out"),
        (ApprovalStep(action_id="2", decision="approved", action=loopback, incident_id="inc-1"), "refused"),
        (ApprovalStep(action_id="3", decision="rejected", action=ok, incident_id="inc-1"), "rejected"),
        (ApprovalStep(action_id="4", decision="expired", action=ok, incident_id="inc-1"), "expired"),
        (ApprovalStep(action_id="5", decision="malformed"), "malformed"),
        (ApprovalStep(action_id="6", decision="approved", action=ok), "malformed"),
    ]
    for step, expected in cases:
        assert approval_outcome(step, PROTECTED) == expected, step
    assert set(APPROVAL_COUNTS) == {"carry_out", "refused", "rejected", "expired"}


def test_restore_and_refresh() -> None:
    docs = {IP: {"incidents": [T0 - 8 * 86400, T0 - 60], "lastIncident": "inc-2"},
            "old": {"incidents": [T0 - 8 * 86400], "lastIncident": "inc-0"}}
    history, last = restored_history(docs, T0, CONFIG)
    assert history.incidents == {IP: (T0 - 60,)} and last == {IP: "inc-2"}
    assert active_refresh_due(T0 - 300, T0, 300) and not active_refresh_due(T0 - 299, T0, 300)
