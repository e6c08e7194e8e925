"""The unusual-login-pattern rule: each user's baseline of networks, devices and hours learned
from their successful logins; verdicts after the minimum baseline; bounded state; the finding
raised by SecurityAnalyzer (severity capped, suppressed per user)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from policies.common.config import load_policy_text
from policies.security.analyzer import AuthEvent, SecurityAlert, SecurityAnalyzer, SecurityPolicy
from policies.security.detection_rules import LoginPatternRule
from policies.security.login_patterns import LoginPatterns, device_of, hour_of, network_of

DAY = 86400.0
T0 = 1_700_000_000.0 - (1_700_000_000.0 % DAY) + 9 * 3600.0  # 09:00 UTC
IP = "198.51.100.7"
UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"


def rule(**kw: object) -> LoginPatternRule:
    return LoginPatternRule.model_validate(kw)


def teach(p: LoginPatterns, user: str = "alice", n: int = 5, ip: str = IP, ua: str | None = UA,
          start: float = T0) -> float:
    """``n`` successful logins, one a day at the same hour; returns the time of the last."""
    t = start
    for i in range(n):
        t = start + i * DAY
        assert p.observe(user_id=user, ip=ip, user_agent=ua, success=True, now=t) is None
    return t


def test_network_of_prefixes_and_mapped_and_garbage() -> None:
    assert network_of("198.51.100.7") == "198.51.100.0/24"
    assert network_of("198.51.100.200") == network_of("198.51.100.7")
    assert network_of("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert network_of("2001:db8:1:2:bbbb::9") == network_of("2001:db8:1:2:aaaa::1")
    assert network_of("::ffff:198.51.100.9") == "198.51.100.0/24"  # IPv4-mapped counts as IPv4
    assert network_of("10.1.2.3", ipv4_prefix=16) == "10.1.0.0/16"
    for bad in (None, "", "not-an-ip", "999.1.1.1", "x" * 64):
        assert network_of(bad) is None
    assert device_of(None) is None and device_of("   ") is None
    assert device_of(UA) == device_of(f"  {UA} ") and len(device_of("x" * 512) or "") == 16
    assert hour_of(T0) == 9 and hour_of(T0 + 15 * 3600) == 0


def test_no_verdict_before_the_minimum_baseline() -> None:
    """Four successful logins from one place: a fifth from everywhere new is only learned."""
    p = LoginPatterns(rule(min_baseline_logins=5))
    t = teach(p, n=4)
    assert p.observe(user_id="alice", ip="203.0.113.9", user_agent="curl/8", success=True, now=t + 5 * 3600) is None
    assert p.stats()["judged"] == 0 and p.profile("alice")["logins"] == 5  # type: ignore[index]


@pytest.mark.parametrize(
    ("ip", "ua", "hour_shift", "novel"),
    [
        (IP, UA, 0, None),                                   # nothing new
        (IP, UA, 5, None),                                   # new hour only: 1 < 2
        (IP, "curl/8.4", 0, None),                           # new device only
        (IP, "curl/8.4", 5, ("device", "hour")),             # two aspects
        ("203.0.113.9", UA, 0, ("network",)),                # a new network alone is enough
        ("198.51.100.250", "curl/8.4", 0, None),             # same /24: not a new network
        ("203.0.113.9", "curl/8.4", 5, ("network", "device", "hour")),
        ("garbage", "curl/8.4", 0, None),                    # unparseable address: no network aspect
    ],
)
def test_novel_aspects(ip: str, ua: str, hour_shift: int, novel: tuple[str, ...] | None) -> None:
    p = LoginPatterns(rule())
    t = teach(p)
    got = p.observe(user_id="alice", ip=ip, user_agent=ua, success=True, now=t + DAY + hour_shift * 3600)
    assert (got.novel if got else None) == novel
    if got is not None:
        assert got.baseline_logins == 5 and got.known_networks == 1 and got.known_hours == (9,)


def test_network_alone_can_be_switched_off_and_min_novel_raised() -> None:
    p = LoginPatterns(rule(new_network_alone=False, min_novel=3))
    t = teach(p)
    assert p.observe(user_id="alice", ip="203.0.113.9", user_agent=UA, success=True, now=t + DAY) is None
    got = p.observe(user_id="bob", ip=IP, user_agent=UA, success=True, now=t)  # bob unknown: learning
    assert got is None
    got = p.observe(user_id="alice", ip="192.0.2.1", user_agent="other", success=True, now=t + DAY + 3 * 3600)
    assert got is not None and got.novel == ("network", "device", "hour")


def test_failed_logins_are_judged_but_never_learned_nor_create_profiles() -> None:
    p = LoginPatterns(rule())
    t = teach(p)
    for i in range(3):
        got = p.observe(user_id="alice", ip="203.0.113.9", user_agent=UA, success=False, now=t + DAY + i)
        assert got is not None and not got.success and got.novel == ("network",)
    assert p.profile("alice")["networks"] == ["198.51.100.0/24"]  # type: ignore[index]
    for i in range(1000):
        assert p.observe(user_id=f"ghost{i}", ip=IP, user_agent=UA, success=False, now=t) is None
    assert p.stats()["users"] == 1
    off = LoginPatterns(rule(check_failed=False))
    teach(off)
    assert off.observe(user_id="alice", ip="203.0.113.9", user_agent=UA, success=False, now=t + DAY) is None


def test_a_learned_login_is_usual_afterwards() -> None:
    """A successful novel login is reported once, then learned: the user's new place is usual."""
    p = LoginPatterns(rule())
    t = teach(p)
    assert p.observe(user_id="alice", ip="203.0.113.9", user_agent=UA, success=True, now=t + DAY) is not None
    assert p.observe(user_id="alice", ip="203.0.113.10", user_agent=UA, success=True, now=t + 2 * DAY) is None


def test_state_is_bounded_users_networks_devices() -> None:
    """More users than max_users: the least recently seen profile goes (counted); more networks
    and devices than their caps: the least recently seen goes (counted); hours are 24 bits."""
    p = LoginPatterns(rule(max_users=3, max_networks_per_user=4, max_devices_per_user=2))
    for u in ("a", "b", "c", "d"):
        teach(p, user=u, n=1)
    assert p.stats()["users"] == 3 and p.stats()["user_evictions"] == 1 and p.profile("a") is None
    for i in range(50):
        p.observe(user_id="d", ip=f"10.0.{i}.1", user_agent=f"ua{i}", success=True, now=T0 + i * 3600)
    prof = p.profile("d")
    assert prof is not None
    assert prof["networks"] == [f"10.0.{i}.0/24" for i in range(46, 50)]
    assert len(prof["devices"]) == 2 and prof["devices"][-1] == device_of("ua49")
    assert sorted(prof["hours"]) == list(range(24))
    s = p.stats()
    assert s["network_overflow"] == 51 - 4 and s["device_overflow"] == 51 - 2  # teach() added one of each


def test_policy_validation() -> None:
    for bad in ({"min_novel": 0}, {"min_novel": 4}, {"ipv4_prefix": 33}, {"ipv6_prefix": 8},
                {"min_baseline_logins": 0}, {"max_users": 0}, {"severity": "loud"}, {"bogus": 1}):
        with pytest.raises(ValidationError):
            rule(**bad)
    cfg = load_policy_text(SecurityPolicy, "unusual_login_pattern: {min_novel: 3, suppress_for: 2h}\n")
    assert cfg.unusual_login_pattern.min_novel == 3 and cfg.unusual_login_pattern.suppress_for == 7200.0


# --- through SecurityAnalyzer ------------------------------------------------------------------------


def login(a: SecurityAnalyzer, now: float, ip: str = IP, ua: str | None = UA, success: bool = True,
          user: str = "alice") -> list[SecurityAlert]:
    return a.on_auth(AuthEvent(user_id=user, ip_address=ip, success=success, timestamp=now, user_agent=ua), now)


def analyzer(yaml_text: str = "") -> SecurityAnalyzer:
    return SecurityAnalyzer(config=load_policy_text(SecurityPolicy, yaml_text))


def test_analyzer_raises_one_finding_per_user_per_suppression_window() -> None:
    a = analyzer()
    for i in range(5):
        assert login(a, T0 + i * DAY) == []
    t = T0 + 5 * DAY + 5 * 3600
    [alert] = login(a, t, ip="203.0.113.9", ua="curl/8.4")
    assert alert.type == "unusual_login_pattern" and alert.severity == "warning"
    assert alert.user_id == "alice" and alert.ip_address == "203.0.113.9" and alert.target == "alice"
    assert alert.metadata["novel"] == ["network", "device", "hour"]
    assert alert.metadata["network"] == "203.0.113.0/24" and alert.metadata["hour_utc"] == 14
    assert login(a, t + 60, ip="192.0.2.1") == []  # same user inside suppress_for (1 h); now learned
    assert [x.type for x in login(a, t + 3601, ip="100.64.0.1", success=False)] == ["unusual_login_pattern"]
    assert a.stats().alerts["unusual_login_pattern"] == 2
    assert a.stats().tracked["login_users"] == 1


def test_severity_never_above_the_report_cap() -> None:
    """The rule asks for critical; the auth service is not trusted for more than the cap."""
    capped = analyzer("unusual_login_pattern: {severity: critical}\n")
    trusted = analyzer("unusual_login_pattern: {severity: critical}\ntrusted_reporters: {Auth: error}\n")
    for a, want in ((capped, "warning"), (trusted, "error")):
        for i in range(5):
            login(a, T0 + i * DAY)
        [alert] = login(a, T0 + 6 * DAY, ip="203.0.113.9")
        assert alert.severity == want


def test_allowlisted_logins_teach_nothing_and_disabled_rule_is_silent() -> None:
    a = analyzer("allowlist: {users: [alice]}\n")
    for i in range(6):
        login(a, T0 + i * DAY)
    assert a.logins.profile("alice") is None
    off = analyzer("unusual_login_pattern: {enabled: false}\n")
    for i in range(5):
        login(off, T0 + i * DAY)
    assert login(off, T0 + 6 * DAY, ip="203.0.113.9", ua="x") == []


def test_failed_novel_login_still_counts_towards_brute_force() -> None:
    """A failure judged by the login rule is still a failure for brute force."""
    a = analyzer()
    for i in range(5):
        login(a, T0 + i * DAY)
    got: list[str] = []
    for i in range(5):
        got += [x.type for x in login(a, T0 + 6 * DAY + i, ip="203.0.113.9", success=False)]
    assert got.count("unusual_login_pattern") == 1 and got.count("brute_force_attempt") == 1
