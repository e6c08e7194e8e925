"""Detection rules of SecurityAnalyzer: thresholds, windows, baselines, suppression, allowlists."""

from __future__ import annotations

import pytest

from policies.common.config import load_policy_text
from policies.security.analyzer import (
    AuthEvent,
    AuthzEvent,
    DataAccessEvent,
    RoleChangeEvent,
    SecurityAlert,
    SecurityAnalyzer,
    SecurityPolicy,
    UserActivity,
    UserBaseline,
    load_security_policy,
)

T0 = 1_700_000_000.0
IP = "203.0.113.7"


def analyzer(yaml_text: str = "") -> SecurityAnalyzer:
    return SecurityAnalyzer(config=load_policy_text(SecurityPolicy, yaml_text))


def fail(
    a: SecurityAnalyzer, now: float, user: str | None = "alice", ip: str | None = IP
) -> list[SecurityAlert]:
    return a.on_auth(AuthEvent(user_id=user, ip_address=ip, success=False, timestamp=now), now)


def types(alerts: list[SecurityAlert]) -> list[str]:
    return [x.type for x in alerts]


# --- brute force ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyed_by", "spacing_s", "alerts_at_5th"),
    [
        ("user", 60.0, True),  # 5 failures over 4 minutes
        ("ip", 60.0, True),
        ("user", 224.0, True),  # 5th at 896 s: still inside 15 min
        ("user", 225.0, False),  # 5th at 900 s: the 1st is exactly 15 min old, out of the window
        ("ip", 240.0, False),
    ],
)
def test_brute_force_threshold_and_window(keyed_by: str, spacing_s: float, alerts_at_5th: bool) -> None:
    """Four failures never alert; the fifth alerts only if all five lie within 15 minutes."""
    per_user, per_ip = keyed_by == "user", keyed_by == "ip"
    a = analyzer(f"brute_force: {{per_user: {per_user}, per_ip: {per_ip}}}")
    # Per-IP: five different users, so the per-user windows never fill.
    users = ["alice"] * 5 if keyed_by == "user" else [f"u{i}" for i in range(5)]
    # Different IPs for the per-user case, so the per-IP window never fills either.
    ips = [f"198.51.100.{i}" for i in range(5)] if keyed_by == "user" else [IP] * 5
    got = [fail(a, T0 + i * spacing_s, u, ip) for i, (u, ip) in enumerate(zip(users, ips, strict=True))]
    assert got[:4] == [[], [], [], []]
    if alerts_at_5th:
        (alert,) = got[4]
        assert alert.type == "brute_force_attempt" and alert.severity == "critical"
        assert alert.metadata["key"] == keyed_by
        assert alert.target == ("alice" if keyed_by == "user" else IP)
        assert alert.source == ips[4]
        assert "5 failed login attempts" in alert.description
    else:
        assert got[4] == []


def test_brute_force_same_user_and_ip_alerts_once() -> None:
    """A burst that fills both the user's and the IP's window is one alert, not two."""
    a = analyzer()
    got = [x for i in range(5) for x in fail(a, T0 + i)]
    assert types(got) == ["brute_force_attempt"]
    assert got[0].user_id == "alice" and got[0].ip_address == IP


def test_successful_logins_do_not_count() -> None:
    """Successes in between neither count as failures nor reset the window."""
    a = analyzer()
    out: list[SecurityAlert] = []
    for i in range(5):
        out += fail(a, T0 + 2 * i)
        out += a.on_auth(
            AuthEvent(user_id="alice", ip_address=IP, success=True, timestamp=T0), T0 + 2 * i + 1
        )
    assert types(out) == ["brute_force_attempt"]


def test_brute_force_without_user_id_is_keyed_by_ip() -> None:
    """Auth events with no user id still count against the IP (the seed's UserId ?? IpAddress)."""
    a = analyzer()
    got = [x for i in range(5) for x in fail(a, T0 + i, user=None)]
    assert [(x.type, x.target, x.user_id) for x in got] == [("brute_force_attempt", IP, None)]


# --- suppression ---------------------------------------------------------------------------------


def test_suppression_inside_window_then_alert_again_after() -> None:
    """A second burst inside the 15-minute suppression raises nothing; one after it alerts again."""
    a = analyzer()
    first = [x for i in range(5) for x in fail(a, T0 + i)]
    second = [x for i in range(5) for x in fail(a, T0 + 300 + i)]
    third = [x for i in range(5) for x in fail(a, T0 + 901 + i)]
    assert (len(first), len(second), len(third)) == (1, 0, 1)
    assert a.stats().suppressed == 1


def test_suppression_is_per_entity() -> None:
    """Suppression of one user's alert does not hide another user's burst."""
    a = analyzer("brute_force: {per_ip: false}")
    assert len([x for i in range(5) for x in fail(a, T0 + i, "alice")]) == 1
    assert len([x for i in range(5) for x in fail(a, T0 + 10 + i, "bob")]) == 1


# --- credential stuffing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_users", "spacing_s", "expected"),
    [(9, 1.0, 0), (10, 1.0, 1), (10, 66.0, 1), (10, 67.0, 0), (25, 1.0, 2)],
)
def test_credential_stuffing(n_users: int, spacing_s: float, expected: int) -> None:
    """One failure each for >= 10 distinct users from one IP within 10 minutes alerts (once per
    10 distinct users, bounded by suppression — here set to 0 to count bursts)."""
    a = analyzer("credential_stuffing: {suppress_for: 0}\nbrute_force: {enabled: false}")
    got = [x for i in range(n_users) for x in fail(a, T0 + i * spacing_s, f"user{i}")]
    assert types(got) == ["credential_stuffing"] * expected
    if expected:
        assert got[0].target == IP and got[0].metadata["distinct_users"] == 10
        assert got[0].metadata["users"] == sorted(f"user{i}" for i in range(10))


def test_credential_stuffing_repeats_of_one_user_do_not_count() -> None:
    """Many failures for the same few users are not 10 distinct users."""
    a = analyzer("brute_force: {enabled: false}")
    got = [x for i in range(50) for x in fail(a, T0 + i, f"user{i % 3}")]
    assert got == []


# --- allowlists ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allow", "ip", "user", "alerts"),
    [
        ("ips: ['203.0.113.7']", IP, "alice", 0),
        ("ips: ['203.0.113.0/24']", IP, "alice", 0),
        ("ips: ['203.0.113.0/24']", "198.51.100.1", "alice", 1),
        ("ips: ['2001:db8::/32']", "2001:db8::5", "alice", 0),
        ("ips: ['10.0.0.0/8']", "not-an-ip", "alice", 1),
        ("users: [probe]", IP, "probe", 0),
        ("users: [probe]", IP, "alice", 1),
    ],
)
def test_allowlist(allow: str, ip: str, user: str, alerts: int) -> None:
    """Allowlisted IPs (exact or CIDR, v4 and v6) and users never alert; others still do."""
    a = analyzer(f"allowlist: {{{allow}}}")
    got = [x for i in range(5) for x in fail(a, T0 + i, user, ip)]
    assert len(got) == alerts
    assert a.stats().allowlisted == (5 if alerts == 0 else 0)


# --- unusual API volume and service access -------------------------------------------------------


def activity(user: str, calls: dict[str, int]) -> UserActivity:
    return UserActivity(user_id=user, calls=calls, window_s=300.0)


@pytest.mark.parametrize(
    ("baseline_rph", "calls", "alerts"),
    [
        (100.0, 300, False),  # exactly 3x: not "more than"
        (100.0, 301, True),
        (None, 300, False),  # no baseline: the default 100/h applies
        (None, 301, True),
        (1.0, 30, False),  # 3x a tiny baseline is below the 30/h floor
        (1.0, 31, True),
    ],
)
def test_unusual_api_volume(baseline_rph: float | None, calls: int, alerts: bool) -> None:
    """More than 3x the user's baseline requests in the hour alerts; the default baseline applies
    when the user has none, and the floor keeps tiny baselines quiet."""
    a = analyzer()
    baselines = (
        {}
        if baseline_rph is None
        else {"u": UserBaseline(requests_per_hour=baseline_rph, services=frozenset(), records_per_day=0)}
    )
    # Spread the calls over several ticks in the hour: the analyzer sums the deltas.
    got: list[SecurityAlert] = []
    for tick in range(3):
        share = calls // 3 + (calls % 3 if tick == 2 else 0)
        got += a.on_activity([activity("u", {"Orders": share})], baselines, T0 + tick * 300)
    assert types(got) == (["unusual_api_volume"] if alerts else [])
    if alerts:
        assert got[0].metadata["request_count"] == calls
        assert got[0].metadata["baseline_source"] == ("default" if baseline_rph is None else "user")


def test_api_volume_window_slides() -> None:
    """Calls older than the hour no longer count toward the volume."""
    a = analyzer()
    assert a.on_activity([activity("u", {"A": 200})], {}, T0) == []
    assert a.on_activity([activity("u", {"A": 200})], {}, T0 + 3600 + 1) == []


@pytest.mark.parametrize(
    ("seen", "alerts"),
    [(["A", "B", "X", "Y"], False), (["A", "X", "Y", "Z"], True), (["X", "Y", "Z", "W"], True)],
)
def test_unusual_service_access(seen: list[str], alerts: bool) -> None:
    """Three or more services outside the baseline set alert; two do not."""
    a = analyzer()
    base = {"u": UserBaseline(requests_per_hour=1000, services=frozenset({"A", "B"}), records_per_day=0)}
    got = a.on_activity([activity("u", dict.fromkeys(seen, 1))], base, T0)
    assert types(got) == (["unusual_service_access"] if alerts else [])
    if alerts:
        assert got[0].metadata["new_services"] == sorted(set(seen) - {"A", "B"})


def test_service_access_accumulates_over_ticks_and_needs_a_baseline() -> None:
    """New services seen over several ticks add up; a user without a baseline is not judged."""
    a = analyzer()
    base = {"u": UserBaseline(requests_per_hour=1000, services=frozenset({"A"}), records_per_day=0)}
    assert a.on_activity([activity("u", {"X": 1}), activity("v", {"X": 1, "Y": 1, "Z": 1})], base, T0) == []
    assert a.on_activity([activity("u", {"Y": 1})], base, T0 + 300) == []
    assert types(a.on_activity([activity("u", {"Z": 1})], base, T0 + 600)) == ["unusual_service_access"]


# --- data access ---------------------------------------------------------------------------------


def read(user: str, n: int, op: str = "find") -> DataAccessEvent:
    return DataAccessEvent(
        user_id=user, service="Customers", collection="customers", operation=op, record_count=n, timestamp=T0
    )


@pytest.mark.parametrize(
    ("records_per_day", "n", "alerts"),
    [
        (1000.0, 10_000, False),  # not above the absolute cap
        (1000.0, 10_001, True),  # above the cap and above 5x baseline (208/h)
        (1_000_000.0, 20_000, False),  # above the cap but within 5x this user's baseline (208k/h)
        (1_000_000.0, 210_000, True),
    ],
)
def test_exfiltration_needs_both_conditions(records_per_day: float, n: int, alerts: bool) -> None:
    """Exfiltration alerts only when reads exceed both the absolute cap and k x baseline."""
    a = analyzer("excessive_data_access: {enabled: false}")
    base = {"u": UserBaseline(requests_per_hour=1, services=frozenset(), records_per_day=records_per_day)}
    got = a.on_data_access(read("u", n), T0, base)
    assert types(got) == (["data_exfiltration_suspected"] if alerts else [])


def test_exfiltration_counts_reads_only() -> None:
    """Writes do not count toward exfiltration."""
    a = analyzer("excessive_data_access: {enabled: false}")
    assert a.on_data_access(read("u", 50_000, op="update"), T0) == []
    assert types(a.on_data_access(read("u", 20_000, op="Export"), T0)) == ["data_exfiltration_suspected"]


def test_excessive_data_access_gdpr() -> None:
    """More than 1000 records in 24 hours is excessive (GDPR Art. 5(1)(c)); old access expires."""
    a = analyzer("data_exfiltration: {enabled: false}")
    assert a.on_data_access(read("u", 600), T0) == []
    assert a.on_data_access(read("u", 400), T0 + 3600) == []  # exactly 1000: not more
    (alert,) = a.on_data_access(read("u", 1), T0 + 7200)
    assert alert.type == "excessive_data_access" and alert.severity == "warning"
    assert alert.metadata["regulation"] == "GDPR Article 5(1)(c) - Data Minimization"
    assert alert.metadata["record_count"] == 1001
    b = analyzer("data_exfiltration: {enabled: false}")
    assert b.on_data_access(read("u", 1000), T0) == []
    assert b.on_data_access(read("u", 10), T0 + 86400 + 3600) == []  # the first 1000 fell out


# --- privilege escalation ------------------------------------------------------------------------


def authz(method: str, allowed: bool, user: str = "mallory") -> AuthzEvent:
    return AuthzEvent(user_id=user, service="Users", method=method, allowed=allowed, timestamp=T0)


@pytest.mark.parametrize(
    ("sequence", "gap_s", "alerts"),
    [
        ([("adminResetPassword", False), ("adminResetPassword", True)], 60.0, True),
        ([("deleteUser", False), ("grantRole", True)], 60.0, True),
        ([("DeleteUser", False), ("deleteUser", True)], 60.0, True),  # patterns ignore case
        ([("deleteUser", False), ("deleteUser", True)], 600.0, False),  # success after the window
        ([("adminX", True)], 60.0, False),  # success without a denial
        ([("getUser", False), ("getUser", True)], 60.0, False),  # not a privileged method
    ],
)
def test_privilege_escalation_denial_then_success(
    sequence: list[tuple[str, bool]], gap_s: float, alerts: bool
) -> None:
    """A denied privileged call followed by an allowed one within 10 minutes alerts."""
    a = analyzer()
    got = [x for i, (m, ok) in enumerate(sequence) for x in a.on_authz(authz(m, ok), T0 + i * gap_s)]
    assert types(got) == (["privilege_escalation"] if alerts else [])
    if alerts:
        assert got[0].metadata["trigger"] == "denied_then_allowed"


@pytest.mark.parametrize(
    ("old", "new", "by", "severity"),
    [
        ({"viewer"}, {"viewer", "admin"}, "root-ops", "error"),
        ({"viewer"}, {"viewer", "billing_admin"}, "mallory", "critical"),  # self-granted
        ({"viewer"}, {"viewer", "editor"}, "root-ops", None),  # not a privileged role
        ({"admin"}, {"admin"}, "root-ops", None),  # nothing granted
    ],
)
def test_privilege_escalation_role_change(
    old: set[str], new: set[str], by: str, severity: str | None
) -> None:
    """Granting a privileged role alerts, critically when users grant it to themselves."""
    a = analyzer()
    ev = RoleChangeEvent(
        user_id="mallory", old_roles=frozenset(old), new_roles=frozenset(new), changed_by=by, timestamp=T0
    )
    got = a.on_role_change(ev, T0)
    assert [x.severity for x in got] == ([severity] if severity else [])


# --- state bounds and stats ----------------------------------------------------------------------


def test_lru_cap_evictions_counted() -> None:
    """Per-entity state never exceeds its cap; every eviction is counted in stats()."""
    a = analyzer("state: {max_users: 10, max_ips: 4}")
    for i in range(25):
        fail(a, T0 + i, f"user{i}", f"198.51.100.{i}")
    s = a.stats()
    assert s.tracked["users"] == 10 and s.evictions["users"] == 15
    assert s.tracked["ips"] == 4 and s.evictions["ips"] == 21
    assert s.events["auth"] == 25


def test_evicted_user_starts_afresh() -> None:
    """An evicted user's failures are forgotten (the cost of the bound, visible as an eviction)."""
    a = analyzer("state: {max_users: 1}\nbrute_force: {per_ip: false}")
    for i in range(4):
        fail(a, T0 + i, "alice")
    fail(a, T0 + 5, "bob")  # evicts alice
    assert fail(a, T0 + 6, "alice") == []
    assert a.stats().evictions["users"] >= 1


def test_shipped_yaml_matches_model_defaults() -> None:
    """policies/security.yaml states the same numbers the model defaults to (seed's numbers)."""
    cfg = load_security_policy()
    assert cfg == SecurityPolicy()
    assert (cfg.brute_force.failures, cfg.brute_force.window) == (5, 900.0)
    assert cfg.excessive_data_access.max_records == 1000


def test_alert_wire_shape() -> None:
    """Alerts serialise camelCase with an RFC 3339 timestamp and a stable fingerprint."""
    a = analyzer()
    (alert,) = [x for i in range(5) for x in fail(a, T0 + i)]
    wire = alert.to_wire()
    assert wire["type"] == "brute_force_attempt" and wire["ipAddress"] == IP and wire["userId"] == "alice"
    assert wire["timestamp"] == "2023-11-14T22:13:24Z"
    assert (
        alert.fingerprint
        == SecurityAlert(**{f: getattr(alert, f) for f in alert.__dataclass_fields__}).fingerprint
    )
