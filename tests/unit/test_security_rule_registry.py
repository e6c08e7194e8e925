"""The detection rules behind one interface: the registry names a ``security.yaml`` section per
rule, ``enabled: false`` takes a rule out, and the analyzer runs exactly the registered rules for
an event's kind (after the allowlist), in registry order."""

from __future__ import annotations

from typing import ClassVar

from policies.common.config import load_policy_text
from policies.security.analyzer import DETECTION_RULES, SecurityAnalyzer
from policies.security.detection_rules import RuleConfig, SecurityPolicy
from policies.security.events import AuthEvent, DataAccessEvent, SecurityAlert
from policies.security.rules_base import EventKind, SecurityEvent
from policies.security.state import RuleState

T0 = 1_700_000_000.0


def test_every_rule_has_its_section_and_every_section_its_rule() -> None:
    sections = {name for name, f in SecurityPolicy.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, RuleConfig)}
    assert set(DETECTION_RULES) == sections
    for name, cls in DETECTION_RULES.items():
        assert cls.name == name and cls.events


def test_a_disabled_rule_is_not_run() -> None:
    policy = load_policy_text(SecurityPolicy, "brute_force: {enabled: false}\n", "security.yaml")
    analyzer = SecurityAnalyzer(config=policy)
    assert "brute_force" not in {r.name for r in analyzer.rules}
    assert {r.name for r in analyzer.rules} == set(DETECTION_RULES) - {"brute_force"}
    alerts = [a for i in range(10) for a in analyzer.on_auth(
        AuthEvent(user_id="u", ip_address="192.0.2.1", success=False, timestamp=T0 + i), T0 + i)]
    assert "brute_force_attempt" not in {a.type for a in alerts}
    assert analyzer.stats().tracked["ips"] == 1  # a failing source is tracked whatever the rules say
    enabled = SecurityAnalyzer(config=SecurityPolicy())
    found = [a for i in range(10) for a in enabled.on_auth(
        AuthEvent(user_id="u", ip_address="192.0.2.1", success=False, timestamp=T0 + i), T0 + i)]
    assert "brute_force_attempt" in {a.type for a in found}


class Recorder:
    """A rule that reports every event it is given (its config: the brute_force section)."""

    name: ClassVar[str] = "brute_force"
    events: ClassVar[tuple[EventKind, ...]] = ("auth", "data_access")
    seen: ClassVar[list[SecurityEvent]] = []

    def __init__(self, policy: SecurityPolicy) -> None:
        self.severity = policy.brute_force.severity

    def evaluate(self, event: SecurityEvent, state: RuleState, now: float) -> list[SecurityAlert]:
        Recorder.seen.append(event)
        return [SecurityAlert(type="brute_force_attempt", severity=self.severity, source="s", target="t",
                              description="recorded", timestamp=now)]


def test_the_analyzer_runs_the_registered_rules_after_the_allowlist() -> None:
    Recorder.seen.clear()
    policy = load_policy_text(SecurityPolicy, "allowlist: {users: [probe]}\n", "security.yaml")
    analyzer = SecurityAnalyzer(config=policy, rules={"brute_force": Recorder})
    login = AuthEvent(user_id="u", ip_address="192.0.2.1", success=True, timestamp=T0)
    access = DataAccessEvent(user_id="u", service="S", collection="c", operation="read", record_count=3,
                             timestamp=T0)
    assert [a.description for a in analyzer.on_auth(login, T0)] == ["recorded"]
    assert [a.description for a in analyzer.on_data_access(access, T0)] == ["recorded"]
    assert analyzer.on_auth(AuthEvent(user_id="probe", ip_address=None, success=False, timestamp=T0), T0) == []
    assert analyzer.on_activity([], None, T0) == []
    assert Recorder.seen == [login, access]
    stats = analyzer.stats()
    assert stats.events["auth"] == 2 and stats.allowlisted == 1
