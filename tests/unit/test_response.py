"""Incident response planning: playbooks, escalating durations, undo schedule, escalation, YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.common.config import PolicyConfigError, load_policy_text
from policies.response.config import ResponsePolicy, load_response_policy
from policies.response.plan import (
    OffenderHistory,
    ResponsePlan,
    UndoSchedule,
    incident_id,
    on_action_failed,
    plan_response,
)
from policies.security.analyzer import SecurityAlert

T0 = 1_700_000_000.0
IP = "203.0.113.7"
H = 3600.0
CONFIG = load_response_policy()


def alert(type_: str = "brute_force_attempt", severity: str = "critical", **kw: object) -> SecurityAlert:
    fields: dict[str, object] = {
        "type": type_,
        "severity": severity,
        "source": IP,
        "target": "alice",
        "user_id": "alice",
        "ip_address": IP,
        "description": "test",
        "timestamp": T0,
    }
    fields.update(kw)
    return SecurityAlert(**fields)  # type: ignore[arg-type]


def summary(plan: ResponsePlan) -> list[tuple[str, str, float | None]]:
    return [(a.action, a.target, a.duration_s) for a in plan.actions]


@pytest.mark.parametrize(
    ("alert_", "expected"),
    [
        (
            alert(),
            [("block_ip", IP, H), ("notify_user", "alice", None), ("increase_monitoring", IP, 24 * H)],
        ),
        (
            alert(
                "unusual_api_volume", "warning", source="bob", target="bob", user_id="bob", ip_address=None
            ),
            [
                ("rate_limit_user", "bob", 1800.0),
                ("enhanced_logging", "bob", 2 * H),
                ("notify_security_team", "bob", None),
            ],
        ),
        (
            alert("data_exfiltration_suspected", source="bob", target="bob", user_id="bob", ip_address=None),
            [
                ("suspend_user", "bob", None),
                ("block_data_access", "bob", None),
                ("emergency_notification", "bob", None),
                ("preserve_evidence", "bob", None),
            ],
        ),
        (
            alert("credential_stuffing", target=IP, user_id=None),
            [("block_ip", IP, H), ("increase_monitoring", IP, 24 * H), ("notify_security_team", IP, None)],
        ),
    ],
)
def test_default_playbooks_follow_the_seed(
    alert_: SecurityAlert, expected: list[tuple[str, str, float | None]]
) -> None:
    """The default playbook is the seed's DetermineResponseActions (plus the types it left out)."""
    plan = plan_response(alert_, OffenderHistory(), T0, CONFIG)
    assert summary(plan) == expected
    assert plan.incident.automated_response == tuple(a for a, _, _ in expected)


def test_every_alert_type_has_a_playbook() -> None:
    """No alert type falls through to an empty response."""
    from policies.response.config import ALERT_TYPES

    assert set(CONFIG.playbooks) == set(ALERT_TYPES)
    assert all(CONFIG.playbooks[t] for t in ALERT_TYPES)


def test_step_without_a_target_is_skipped_and_recorded() -> None:
    """An IP-keyed brute force has no user to notify: the step is skipped, with the reason."""
    plan = plan_response(alert(target=IP, user_id=None), OffenderHistory(), T0, CONFIG)
    assert [a.action for a in plan.actions] == ["block_ip", "increase_monitoring"]
    assert [(s.action, s.reason) for s in plan.skipped] == [("notify_user", "alert has no user")]


def test_incident_record_is_deterministic() -> None:
    """The incident id depends only on the alert; the record has the seed's fields, status open."""
    a = plan_response(alert(), OffenderHistory(), T0, CONFIG)
    b = plan_response(alert(), OffenderHistory(), T0 + 5, CONFIG)
    assert a.incident.id == b.incident.id == incident_id(alert())
    assert a.incident.id != plan_response(alert(timestamp=T0 + 1), OffenderHistory(), T0, CONFIG).incident.id
    wire = a.incident.to_wire()
    assert wire["incidentType"] == "security" and wire["title"] == "brute_force_attempt"
    assert wire["status"] == "open" and wire["source"] == IP and wire["severity"] == "critical"


def test_repeat_offender_bans_double_and_cap() -> None:
    """The n-th offence of an IP within the lookback is banned 1h, 2h, 4h, … capped at 7 days."""
    history = OffenderHistory()
    durations = []
    now = T0
    for _ in range(10):
        plan = plan_response(alert(timestamp=now), history, now, CONFIG)
        (block,) = [a for a in plan.actions if a.action == "block_ip"]
        durations.append(block.duration_s)
        history = history.recorded(plan.offenders(), now)
        now += 600
    assert durations == [H * 2**i for i in range(8)] + [7 * 24 * H] * 2
    # The non-incrementing step keeps its base duration.
    assert next(a for a in plan.actions if a.action == "increase_monitoring").duration_s == 24 * H


def test_offences_outside_lookback_are_forgotten() -> None:
    """Incidents older than the 7-day lookback do not lengthen the ban."""
    history = OffenderHistory().recorded([IP], T0 - 8 * 24 * H).recorded([IP], T0 - H)
    plan = plan_response(alert(), history, T0, CONFIG)
    assert summary(plan)[0] == ("block_ip", IP, 2 * H)
    assert history.pruned(T0 - 7 * 24 * H).incidents == {IP: (T0 - H,)}


def test_undo_schedule_matches_timed_actions() -> None:
    """Each timed action has its undo at its expiry, sorted by time; untimed actions have none."""
    plan = plan_response(alert(), OffenderHistory(), T0, CONFIG)
    got = [(s.at - T0, s.action.action, s.action.target, s.undoes) for s in plan.undo_schedule]
    assert got == [
        (H, "unblock_ip", IP, ("block_ip", IP)),
        (24 * H, "restore_monitoring", IP, ("increase_monitoring", IP)),
    ]
    assert all(s.action.is_undo and s.action.until is None for s in plan.undo_schedule)
    exfil = plan_response(alert("data_exfiltration_suspected"), OffenderHistory(), T0, CONFIG)
    assert exfil.undo_schedule == ()


def test_undo_schedule_keeps_the_longest_ban() -> None:
    """A repeat ban replaces the earlier undo, so the first expiry does not lift the longer ban."""
    sched = UndoSchedule()
    first = plan_response(alert(), OffenderHistory(), T0, CONFIG)
    sched.add(first)
    second = plan_response(
        alert(timestamp=T0 + 600), OffenderHistory().recorded(first.offenders(), T0), T0 + 600, CONFIG
    )
    sched.add(second)
    assert sched.due(T0 + H + 1) == []  # first ban's expiry: nothing to undo yet
    due = sched.due(T0 + 600 + 2 * H)
    assert [(s.action.action, s.action.incident_id) for s in due] == [("unblock_ip", second.incident.id)]
    assert [s.action.action for s in sched.pending()] == ["restore_monitoring"]
    assert [s.action.action for s in sched.due(T0 + 600 + 24 * H)] == ["restore_monitoring"]
    assert len(sched) == 0


def test_enforcement_wire_shape() -> None:
    """block_ip goes on the wire as action/target/until (RFC 3339)/incidentId; its undo too."""
    plan = plan_response(alert(), OffenderHistory(), T0, CONFIG)
    block = plan.actions[0]
    assert block.to_wire() == {
        "action": "block_ip",
        "target": IP,
        "until": "2023-11-14T23:13:20Z",
        "incidentId": plan.incident.id,
        "actionId": f"{plan.incident.id}:0:block_ip",
        "undo": False,
        "params": {},
    }
    undo = plan.undo_schedule[0].action.to_wire()
    assert (undo["action"], undo["undo"], "until" in undo) == ("unblock_ip", True, False)


@pytest.mark.parametrize(
    ("alert_", "prior_offences", "level", "rule"),
    [
        (alert("unusual_api_volume", "warning"), 0, None, None),
        (alert(), 0, 1, "critical"),
        (alert("data_exfiltration_suspected"), 0, 2, "exfiltration"),
        (alert("unusual_api_volume", "warning"), 2, 2, "repeat_offender"),  # third offence
        (alert("unusual_api_volume", "warning"), 1, None, None),  # second offence: not yet
        (alert(severity="emergency"), 0, 3, "emergency"),
    ],
)
def test_escalation_rules(
    alert_: SecurityAlert, prior_offences: int, level: int | None, rule: str | None
) -> None:
    """Escalation by severity, alert type and repeat count; the highest matching level wins."""
    history = OffenderHistory()
    for i in range(prior_offences):
        history = history.recorded([alert_.source], T0 - (i + 1) * H)
    plan = plan_response(alert_, history, T0, CONFIG)
    got = plan.escalation
    assert ((got.level, got.rule) if got else (None, None)) == (level, rule)


def test_failed_action_escalates_once_above_the_plan() -> None:
    """A failed action escalates when that raises the level; a plan already there is left alone."""
    quiet = plan_response(alert("unusual_api_volume", "warning"), OffenderHistory(), T0, CONFIG)
    d = on_action_failed(quiet, quiet.actions[0], "redis unreachable", T0 + 1, CONFIG)
    assert d is not None and (d.level, d.rule) == (2, "action_failed")
    assert "rate_limit_user" in d.reason and "redis unreachable" in d.reason
    exfil = plan_response(alert("data_exfiltration_suspected"), OffenderHistory(), T0, CONFIG)
    assert on_action_failed(exfil, exfil.actions[0], "boom", T0 + 1, CONFIG) is None


# --- configuration -------------------------------------------------------------------------------

MINIMAL = """
actions:
  block_ip: {kind: enforcement, undo: unblock_ip}
  notify_user: {kind: notification}
playbooks:
  brute_force_attempt:
    - {action: block_ip, target: ip, duration: 10m, increment: true}
repeat: {factor: 3, max_duration: 1h}
"""


def test_custom_yaml_changes_durations() -> None:
    """A YAML policy sets base, factor and cap: 10m, 30m, then capped at 1h."""
    cfg = load_policy_text(ResponsePolicy, MINIMAL)
    history = OffenderHistory()
    got = []
    for i in range(3):
        plan = plan_response(alert(), history, T0 + i, cfg)
        got.append(plan.actions[0].duration_s)
        history = history.recorded([IP], T0 + i)
    assert got == [600.0, 1800.0, 3600.0]


@pytest.mark.parametrize(
    ("text", "must_mention"),
    [
        (
            MINIMAL.replace("duration: 10m", "duration: soon"),
            ["playbooks.brute_force_attempt.0.duration", "'soon'"],
        ),
        (MINIMAL.replace("target: ip", "target: everyone"), ["target", "'everyone'"]),
        (
            MINIMAL.replace("action: block_ip,", "action: launch_missiles,"),
            ["launch_missiles", "unknown action"],
        ),
        (MINIMAL.replace(", undo: unblock_ip", ""), ["block_ip", "needs an undo"]),
        (MINIMAL.replace("brute_force_attempt:", "brute_force:"), ["playbooks.brute_force", "'brute_force'"]),
        (
            MINIMAL + "escalation:\n  - {name: x, level: 1, reason: r}\n",
            ["escalation rule 'x' needs a condition"],
        ),
        (MINIMAL + "bogus: 1\n", ["bogus", "unknown key"]),
    ],
)
def test_bad_yaml_error_names_key_and_value(text: str, must_mention: list[str]) -> None:
    """A bad response policy fails to load with a message naming the key and the bad value."""
    with pytest.raises(PolicyConfigError) as err:
        load_policy_text(ResponsePolicy, text, "response.yaml")
    for part in must_mention:
        assert part in str(err.value)


def test_bad_override_file_names_the_file(tmp_path: Path) -> None:
    """An override directory's bad security.yaml is reported with its path, key and value."""
    from policies.security.analyzer import load_security_policy

    (tmp_path / "security.yaml").write_text("brute_force:\n  failures: -1\n")
    with pytest.raises(PolicyConfigError) as err:
        load_security_policy(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "security.yaml") in msg and "brute_force.failures = -1" in msg
    (tmp_path / "security.yaml").write_text("allowlist:\n  ips: ['10.0.0.0/33']\n")
    with pytest.raises(PolicyConfigError, match=r"10\.0\.0\.0/33"):
        load_security_policy(tmp_path)
