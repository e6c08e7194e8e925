"""The security analyst's handlers (``AnalystBody`` without Ray or a broker: its bus is never
started, its store never opened) under arbitrary bytes and JSON: nothing raises, every message is
counted exactly once (an analyzer event, a service report or malformed), and floods of distinct
users, IPs and services stay within the per-key caps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.clock import FakeClock
from actors.security_analyst import MAX_PENDING_ALERTS, AnalystBody
from actors.security_common import SecurityOptions
from actors.settings import OperateSettings
from adapters.mqtt.bus import Message
from policies.security.analyzer import SecurityAnalyzer
from policies.security.detection_rules import StateLimits

ANALYST_TOPICS = ["security/auth/login", "security/auth/x", "security/authz/decision", "service/Users/security",
                  "service/-bad/security", "service/" + "n" * 70 + "/security", "audit/Users/data-access",
                  "audit/-bad/data-access", "audit/" + "n" * 70 + "/data-access"]
SERVICE_FIELDS = ["Users", "Orders", "", "x" * 70, 5, None]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10)
times = st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.123456789+02:00", "0001-01-01T00:00:00Z",
                         "9999-12-31T23:59:59Z", "nope", ""]) | st.integers() | st.floats(allow_nan=False)
roles = st.lists(st.text(max_size=12) | json_values, max_size=4) | json_values
events = st.fixed_dictionaries({}, optional={
    "userId": st.text(max_size=12) | json_values | st.just("u" * 300),
    "ipAddress": st.sampled_from(["10.0.0.1", "::1", "not-an-ip", "x" * 70]) | json_values,
    "userAgent": st.sampled_from(["Mozilla/5.0", "", " ", "u" * 600]) | json_values,
    "success": st.booleans() | json_values, "allowed": st.booleans() | json_values,
    "timestamp": times | json_values,
    "service": st.sampled_from(SERVICE_FIELDS), "method": st.sampled_from(["admin.delete", "get", ""]) | json_values,
    "roles": roles, "collection": st.text(max_size=10) | json_values,
    "operation": st.sampled_from(["read", "READ", "write", "x" * 40]) | json_values,
    "recordCount": st.integers() | json_values, "recordIds": st.lists(st.text(max_size=4), max_size=5) | json_values,
    "eventType": st.sampled_from(["role_change", "tamper", "x" * 200]) | json_values,
    "severity": st.sampled_from(["info", "warning", "emergency", "bogus"]) | json_values,
    "description": st.text(max_size=30) | json_values,
    "details": st.fixed_dictionaries({}, optional={"oldRoles": roles, "newRoles": roles,
                                                   "changedBy": json_values}) | json_values,
}).map(lambda d: json.dumps(d).encode())
messages = st.builds(Message, topic=st.sampled_from(ANALYST_TOPICS),
                     payload=st.binary(max_size=120) | events | json_values.map(lambda v: json.dumps(v).encode()))


def analyst(tmp: Path, options: SecurityOptions | None = None) -> AnalystBody:
    s = OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id="c", store_url=f"sqlite:///{tmp}/a.db")
    return AnalystBody(s, options or SecurityOptions(), clock=FakeClock())


def handle(a: AnalystBody, m: Message) -> None:
    """Dispatch as the bus does (by subscription filter)."""
    head = m.topic.split("/")[0]
    if m.topic.startswith("security/auth/"):
        a._on_auth(m)
    elif m.topic.startswith("security/authz/"):
        a._on_authz(m)
    elif head == "service":
        a._on_service_security(m)
    else:
        a._on_data_access(m)


def counted(a: AnalystBody) -> int:
    ev = a.analyzer.stats().events
    return ev["auth"] + ev["authz"] + ev["data_access"] + a.counts["service_events"] + a.counts["malformed"]


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(batch=st.lists(messages, max_size=30))
def test_every_security_message_counted_exactly_once(tmp_path: Path, batch: list[Message]) -> None:
    """Arbitrary bytes/JSON on each of the four inputs: no exception escapes a handler and
    analyzer events + service reports + malformed == messages handled."""
    a = analyst(tmp_path)
    for m in batch:
        handle(a, m)
    assert counted(a) == len(batch)
    assert sum(a.malformed_by_topic.values()) == a.counts["malformed"]


logins = st.builds(
    lambda user, ip, ua, ok, hour: (user, ip, ua, ok, hour),
    st.sampled_from(["u1", "u2", "u3"]),
    st.sampled_from(["10.0.0.1", "10.0.0.200", "10.9.0.1", "::1", "fe80::1%eth0", "::ffff:10.0.0.9",
                     "2001:db8::1", "01.2.3.4", "not-an-ip", ""]) | st.ip_addresses().map(str) | st.none(),
    st.sampled_from(["Mozilla/5.0", "curl/8", " ", "\x00"]) | st.text(max_size=40) | st.none(),
    st.booleans(), st.integers(0, 23))


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(batch=st.lists(logins, max_size=60))
def test_hostile_logins_keep_login_profiles_bounded(tmp_path: Path, batch: list[tuple[Any, ...]]) -> None:
    """Logins with arbitrary addresses (scoped, mapped, garbage) and user agents through the real
    auth handler, for users whose baseline is already complete: nothing raises, every message is
    counted, each profile stays within its caps, every finding names its novel aspects."""
    a = analyst(tmp_path)
    a.analyzer = SecurityAnalyzer(config=a.analyzer.config.model_copy(update={
        "unusual_login_pattern": a.analyzer.config.unusual_login_pattern.model_copy(
            update={"max_networks_per_user": 3, "max_devices_per_user": 2})}))
    for u in ("u1", "u2", "u3"):
        for _ in range(5):
            a._on_auth(Message("security/auth/login", json.dumps(
                {"userId": u, "ipAddress": "10.0.0.1", "userAgent": "Mozilla/5.0", "success": True,
                 "timestamp": "2026-01-01T00:00:00Z"}).encode()))
    clock = a.clock
    assert isinstance(clock, FakeClock)
    for user, ip, ua, ok, hour in batch:
        clock.advance(hour * 3600.0)
        doc = {"userId": user, "ipAddress": ip, "userAgent": ua, "success": ok, "timestamp": "2026-01-01T00:00:00Z"}
        a._on_auth(Message("security/auth/login", json.dumps(doc).encode()))
    assert a.analyzer.stats().events["auth"] + a.counts["malformed"] == 15 + len(batch)
    for u in ("u1", "u2", "u3"):
        prof = a.analyzer.logins.profile(u)
        assert prof is not None and len(prof["networks"]) <= 3 and len(prof["devices"]) <= 2
    for alert in a._pending_alerts:
        if alert.type == "unusual_login_pattern":
            assert alert.metadata["novel"] and set(alert.metadata["novel"]) <= {"network", "device", "hour"}


def test_bad_role_change_details_are_malformed_not_raised(tmp_path: Path) -> None:
    """A role change whose roles are not lists of strings is counted as malformed (it used to raise
    TypeError out of the handler); a well-formed one still reaches the analyzer."""
    a = analyst(tmp_path)
    base = {"eventType": "role_change", "userId": "u1", "timestamp": "2026-01-01T00:00:00Z"}
    for details in ({"oldRoles": 5, "newRoles": ["admin"]}, {"oldRoles": [], "newRoles": 7},
                    {"oldRoles": [], "newRoles": "admin"}, {"oldRoles": [], "newRoles": [["admin"]]},
                    {"newRoles": ["r"] * 10_000}):
        a._on_service_security(Message("service/Users/security", json.dumps({**base, "details": details}).encode()))
    assert a.counts["malformed"] == 5 and a.analyzer.stats().events["role_change"] == 0
    a._on_service_security(Message("service/Users/security", json.dumps(
        {**base, "details": {"oldRoles": [], "newRoles": ["admin"], "changedBy": "root"}}).encode()))
    assert a.analyzer.stats().events["role_change"] == 1 and a._pending_alerts


@pytest.mark.slow
def test_flood_of_distinct_keys_stays_within_the_caps(tmp_path: Path) -> None:
    """20 000 distinct users, IPs and services (auth failures, denials, data access, activity,
    service reports) through an analyst whose tables are capped at 500: each table holds at most
    its cap, the overflow is counted as evictions, and the pending alerts stay bounded."""
    a = analyst(tmp_path)
    cap = 500
    a.analyzer = SecurityAnalyzer(config=a.analyzer.config.model_copy(update={
        "state": StateLimits(max_users=cap, max_ips=cap, max_suppressions=cap)}))
    n = 20_000
    for i in range(n):
        ts = "2026-01-01T00:00:00Z"
        a._on_auth(Message("security/auth/login", json.dumps(
            {"userId": f"u{i}", "ipAddress": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "success": False,
             "timestamp": ts}).encode()))
        a._on_authz(Message("security/authz/d", json.dumps(
            {"userId": f"z{i}", "service": "Users", "method": "admin.delete", "allowed": False,
             "timestamp": ts}).encode()))
        a._on_data_access(Message("audit/Users/data-access", json.dumps(
            {"userId": f"d{i}", "collection": "c", "operation": "read", "recordCount": 10_000,
             "timestamp": ts}).encode()))
        a._on_service_security(Message(f"service/S{i}/security", json.dumps(
            {"eventType": "tamper", "userId": f"s{i}", "timestamp": ts}).encode()))
    st_ = a.analyzer.stats()
    assert st_.tracked["users"] <= cap and st_.tracked["ips"] <= cap and st_.tracked["suppressions"] <= cap
    assert st_.evictions["users"] > 0 and st_.evictions["ips"] >= n - cap and st_.evictions["suppressions"] > 0
    pending = len(a._pending_alerts) + len(a._other_alerts)
    assert pending <= 2 * MAX_PENDING_ALERTS
    assert pending + a.counts["alerts_dropped"] == 2 * n  # one excessive-access alert and one report each


async def test_activity_flood_is_capped(tmp_path: Path) -> None:
    """Activity batches with many users and services: at most the user cap is kept, at most the
    per-user service cap per user, the rest counted."""
    a = analyst(tmp_path)
    from actors import security_analyst as mod
    batch = {f"u{i}": {f"S{k}": 1 for k in range(mod.MAX_ACTIVITY_SERVICES + 10)} for i in range(50)}
    await a.activity(batch)
    assert all(len(per) <= mod.MAX_ACTIVITY_SERVICES for per in a._activity.values())
    assert a.malformed_by_topic["activity_overflow"] == 50 * 10
    weird: dict = {5: {"S": 1}, "": {"S": 1}, "u": {"S": "x", 7: 1, "T": True}, "v": "notamapping"}
    await a.activity(weird)
    assert a._activity["u"] == {} and "v" not in a._activity

