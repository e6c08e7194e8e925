"""Guards on automatic enforcement: protected targets, approval before untimed or single-event
actions, the per-source incident limit, capped escalation and service-reported severity."""

from __future__ import annotations

from typing import TypeVar

import pytest
import yaml
from pydantic import BaseModel

from policies.common.config import load_policy_text, merge
from policies.response.config import ResponsePolicy, SourceLimit, load_response_policy
from policies.response.guard import (
    ProtectedTargets,
    approval_request,
    approval_steps,
    approved_action,
    capped_escalation,
    decide,
    gate_actions,
    source_over_limit,
)
from policies.response.plan import OffenderHistory, plan_response
from policies.security.analyzer import DataAccessEvent, SecurityAlert, SecurityAnalyzer
from policies.security.detection_rules import Protected, SecurityPolicy, load_security_policy, report_severity

M = TypeVar("M", bound=BaseModel)
T0 = 1_700_000_000.0
H = 3600.0
CONFIG = load_response_policy()
DEFAULT_PROTECTED = ProtectedTargets.from_policy(Protected())


def overridden(base: M, text: str) -> M:
    """``base`` with a YAML override merged over it, as an override directory's file would be."""
    return type(base).model_validate(merge(base.model_dump(), yaml.safe_load(text)))


def brute_force(ip: str, user: str = "alice") -> SecurityAlert:
    return SecurityAlert(type="brute_force_attempt", severity="critical", source=ip, target=user, user_id=user,
                         ip_address=ip, description="burst", timestamp=T0)


def exfiltration(user: str = "mallory", *, single: bool) -> SecurityAlert:
    return SecurityAlert(type="data_exfiltration_suspected", severity="critical", source=user, target=user,
                         user_id=user, description="bulk read", timestamp=T0, metadata={"single_event": single})


def verdicts(alert: SecurityAlert, config: ResponsePolicy = CONFIG, *, pending: int = 0,
             protected: ProtectedTargets = DEFAULT_PROTECTED) -> dict[str, tuple[str, str]]:
    plan = plan_response(alert, OffenderHistory(), T0, config)
    return {g.action.action: (g.verdict, g.reason) for g in gate_actions(plan, alert, protected, config,
                                                                          pending=pending)}


# --- protected targets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "protected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),  # all of 127.0.0.0/8
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped loopback
        ("10.20.3.4", True),  # configured network
        ("192.0.2.55", True),  # own host (the broker's address)
        ("fe80::1%eth0", False),  # scoped address outside every protected network
        ("203.0.113.7", False),
        ("svc-gateway", True),  # configured user
        ("broker.internal", True),  # own host name
        ("alice", False),
        ("not an ip", False),
    ],
)
def test_protected_targets(target: str, protected: bool) -> None:
    """Loopback (v4, v6, v4-mapped), configured networks and users, and sfa-ops' own hosts."""
    cfg = Protected(ips=("10.20.0.0/16",), users=frozenset({"svc-gateway"}))
    guard = ProtectedTargets.from_policy(cfg, ["192.0.2.55", "broker.internal"])
    assert guard.protects(target) is protected


def test_protection_switches() -> None:
    """``loopback: false`` and ``own_hosts: false`` drop those defaults."""
    guard = ProtectedTargets.from_policy(Protected(loopback=False, own_hosts=False), ["192.0.2.55"])
    assert not guard.protects("127.0.0.1") and not guard.protects("192.0.2.55")


def test_protected_is_validated() -> None:
    """A protected entry that is no address or network is refused when the policy loads."""
    with pytest.raises(ValueError, match="not an IP address"):
        load_policy_text(SecurityPolicy, "protected: {ips: ['10.0.0.0/33']}")


def test_brute_force_from_loopback_refuses_only_the_block() -> None:
    """A burst "from" 127.0.0.1: block_ip is refused (protected target); the notification and the
    monitoring step still run, so the incident keeps the finding."""
    got = verdicts(brute_force("127.0.0.1"))
    assert got == {"block_ip": ("refused", "protected target"), "notify_user": ("carry_out", ""),
                   "increase_monitoring": ("carry_out", "")}
    assert verdicts(brute_force("203.0.113.7"))["block_ip"] == ("carry_out", "")


def test_protected_user_is_never_rate_limited() -> None:
    """A protected user id is refused for user actions too."""
    alert = SecurityAlert(type="unusual_api_volume", severity="warning", source="svc-gateway",
                          target="svc-gateway", user_id="svc-gateway", description="busy", timestamp=T0)
    guard = ProtectedTargets.from_policy(Protected(users=frozenset({"svc-gateway"})))
    assert verdicts(alert, protected=guard)["rate_limit_user"] == ("refused", "protected target")


# --- approval ---------------------------------------------------------------------------------------


def test_untimed_enforcement_waits_for_approval() -> None:
    """The default exfiltration playbook: suspend_user and block_data_access (no expiry) wait;
    notification and evidence preservation run at once."""
    got = verdicts(exfiltration(single=False))
    assert got["suspend_user"] == ("approval", "no expiry")
    assert got["block_data_access"] == ("approval", "no expiry")
    assert got["emergency_notification"][0] == got["preserve_evidence"][0] == "carry_out"


TIMED_SUSPEND = """
playbooks:
  data_exfiltration_suspected:
    - {action: suspend_user, target: source, duration: 1h}
"""


@pytest.mark.parametrize(("single", "verdict"), [(True, "approval"), (False, "carry_out")])
def test_timed_suspend_waits_only_when_one_event_raised_it(single: bool, verdict: str) -> None:
    """Even a timed suspend_user waits when a single (forgeable) event raised the alert."""
    config = overridden(CONFIG, TIMED_SUSPEND)
    assert verdicts(exfiltration(single=single), config)["suspend_user"][0] == verdict


def test_full_approval_queue_refuses() -> None:
    """Beyond ``max_pending`` waiting requests, new ones are refused (and so counted)."""
    got = verdicts(exfiltration(single=False), pending=CONFIG.approval.max_pending - 1)
    assert got["suspend_user"] == ("approval", "no expiry")
    assert got["block_data_access"] == ("refused", "approval queue full")


def test_approval_request_round_trip_restarts_the_duration() -> None:
    """A stored request gives back the same action; once approved, a timed one runs its whole
    duration from the approval."""
    config = overridden(CONFIG, TIMED_SUSPEND)
    alert = exfiltration(single=True)
    action = plan_response(alert, OffenderHistory(), T0, config).actions[0]
    doc = approval_request(action, T0, "raised by a single event")
    back = approved_action(doc, T0 + 600)
    assert (back.action, back.target, back.action_id, back.undo_action) == (
        action.action, action.target, action.action_id, action.undo_action)
    assert back.duration_s == H and back.until == T0 + 600 + H


def test_approval_steps() -> None:
    """Decided requests close as decided, undecided ones lapse after ``expire_after``, others
    wait, and a malformed document is dropped."""
    plan = plan_response(exfiltration(single=False), OffenderHistory(), T0, CONFIG)
    req = approval_request(plan.actions[0], T0, "no expiry")
    docs = {
        "a": decide(req, "approved", by="ops", now=T0 + 1, note="confirmed"),
        "r": decide(req, "rejected", by="ops", now=T0 + 1),
        "w": req,
        "old": {**req, "requestedAt": T0 - CONFIG.approval.expire_after},
        "bad": {"action": "nonsense"},
    }
    steps = {s.action_id: s for s in approval_steps(docs, T0 + 2, CONFIG)}
    assert set(steps) == {"a", "r", "old", "bad"}
    assert steps["a"].decision == "approved" and steps["a"].action is not None and steps["a"].by == "ops"
    assert steps["a"].note == "confirmed" and steps["a"].incident_id == plan.incident.id
    assert steps["r"].decision == "rejected" and steps["old"].decision == "expired"
    assert steps["r"].action == steps["old"].action == steps["a"].action  # the responder records which
    assert steps["bad"].decision == "malformed" and steps["bad"].action is None


def test_a_decision_is_final() -> None:
    """Deciding twice is refused."""
    plan = plan_response(exfiltration(single=False), OffenderHistory(), T0, CONFIG)
    once = decide(approval_request(plan.actions[0], T0, "x"), "rejected", by="a", now=T0)
    with pytest.raises(ValueError, match="already rejected"):
        decide(once, "approved", by="b", now=T0)


@pytest.mark.parametrize(("single", "level", "notify"), [(True, 1, ("security-team",)),
                                                         (False, 2, ("security-oncall",))])
def test_single_event_escalates_no_higher_than_the_cap(single: bool, level: int, notify: tuple[str, ...]) -> None:
    """One forged data-access event reaches the security team, not on-call and management."""
    alert = exfiltration(single=single)
    got = capped_escalation(plan_response(alert, OffenderHistory(), T0, CONFIG).escalation, alert, CONFIG)
    assert got is not None and got.level == level and got.notify == notify


# --- per-source limit -----------------------------------------------------------------------------


def test_source_limit_counts_incidents_within_the_window() -> None:
    """The (N+1)-th incident of one source within the window is over the limit; after the window
    it is not, and other sources are unaffected."""
    limit = SourceLimit(max_incidents=3, window=H)
    history = OffenderHistory()
    for i in range(3):
        assert not source_over_limit(history, "203.0.113.7", T0 + i, limit)
        history = history.recorded(["203.0.113.7"], T0 + i)
    assert source_over_limit(history, "203.0.113.7", T0 + 10, limit)
    assert not source_over_limit(history, "198.51.100.1", T0 + 10, limit)
    assert not source_over_limit(history, "203.0.113.7", T0 + H + 3, limit)


# --- service-reported severity ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "claimed", "expected"),
    [
        ("Orders", "emergency", "warning"),
        ("Orders", "info", "info"),
        ("Orders", "warning", "warning"),
        ("Auth", "emergency", "critical"),
        ("Auth", "error", "error"),
    ],
)
def test_service_reports_are_capped_unless_trusted(service: str, claimed: str, expected: str) -> None:
    """A service's own security report is capped at warning unless ``trusted_reporters`` allows more."""
    policy = overridden(load_security_policy(), "trusted_reporters: {Auth: critical}")
    assert report_severity(policy, service, claimed) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("reads", "single"), [((20_000,), True), ((6_000, 6_000), False)])
def test_exfiltration_says_whether_one_event_raised_it(reads: tuple[int, ...], single: bool) -> None:
    """The exfiltration alert marks ``single_event`` when one event crossed both thresholds alone."""
    a = SecurityAnalyzer(config=load_policy_text(SecurityPolicy, "excessive_data_access: {enabled: false}"))
    got = []
    for n in reads:
        got += a.on_data_access(DataAccessEvent(user_id="u", service="S", collection="c", operation="export",
                                                record_count=n, timestamp=T0), T0)
    (alert,) = got
    assert alert.metadata["single_event"] is single


# --- resolve timeouts -------------------------------------------------------------------------------


def test_security_alerts_end_after_the_resolve_timeout() -> None:
    """Detections and service reports, which nothing resolves, end ``resolve_after`` after they
    start; an explicitly resolved alert ends at once."""
    from actors.security_common import plain_alert, security_alert_dict

    wire = brute_force("203.0.113.7").to_wire()
    assert security_alert_dict(wire, "c", T0, resolve_after=H)["endsAt"] == T0 + H
    assert plain_alert("ServiceSecurityEvent", "warning", "c", T0, "x", resolve_after=H)["endsAt"] == T0 + H
    assert plain_alert("X", "warning", "c", T0, "x", resolved=True, resolve_after=H)["endsAt"] == T0
    assert load_security_policy().alert_resolve_after == 4 * H


def test_an_alert_with_a_resolve_timeout_is_firing_for_the_supervisor() -> None:
    """The supervisor's FiringSet passes an alert whose ``endsAt`` lies ahead as firing (it is
    not a resolution of something that never fired); one whose ``endsAt`` has passed is one."""
    from actors.security_common import plain_alert
    from policies.alerting.rules import FiringSet

    fs = FiringSet()
    timed = plain_alert("ServiceSecurityEvent", "warning", "c", T0, "x", {"service": "S"}, resolve_after=H)
    assert fs.filter([timed], T0) == [timed]
    late = plain_alert("Other", "warning", "c", T0, "x", resolve_after=H)
    assert fs.filter([late], T0 + 2 * H) == []  # a resolution of an alert that never fired
