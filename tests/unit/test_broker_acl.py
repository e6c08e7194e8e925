"""The broker authorization policy (pure): who may publish/subscribe what, and how it renders for
mosquitto and EMQX 5."""

from __future__ import annotations

import base64
import hashlib

import pytest

from policies.security.broker_acl import ANY_CLUSTER, build_policy, decide, service_principal
from policies.security.broker_acl_render import (
    emqx_builtin_rules,
    mosquitto_password_line,
    render_emqx_acl,
    render_mosquitto_acl,
)

P = build_policy("prod", ["Users", "Orders"], auth_principal="auth")

CASES = [
    # principal, client id, action, topic, allowed
    ("sfa-ops", "x", "publish", "system/prod/errors", True),
    ("sfa-ops", "x", "publish", "system/prod/circuit-breaker/Users", True),
    ("sfa-ops", "x", "publish", "system/prod/security/actions/active", True),
    ("sfa-ops", "x", "publish", "system/prod/presence/Users/i1", False),
    ("sfa-ops", "x", "publish", "system/other/errors", False),
    ("sfa-ops", "x", "publish", "service/Users", False),
    ("sfa-ops", "x", "subscribe", "system/prod/presence/+/+", True),
    ("sfa-ops", "x", "subscribe", "$share/sfa-ops/service/+", True),
    ("sfa-ops", "x", "subscribe", "#", False),
    ("sfa-ops", "x", "subscribe", "$SYS/broker/#", True),
    ("service-Users", "u", "publish", "system/prod/presence/Users/i1", True),
    ("service-Users", "u", "publish", "system/prod/presence/Orders/i1", False),
    ("service-Users", "u", "publish", "audit/Users/data-access", True),
    ("service-Users", "u", "publish", "audit/Orders/data-access", False),
    ("service-Users", "u", "publish", "audit/Users/data-subject", True),
    ("service-Users", "u", "publish", "audit/Orders/data-subject", False),
    ("caller", "s1", "publish", "audit/Users/data-subject", False),
    ("sfa-ops", "x", "subscribe", "audit/+/data-subject", True),
    ("service-Users", "u", "publish", "service/Users/security", True),
    ("service-Users", "u", "publish", "service/Orders/security", False),
    ("service-Users", "u", "publish", "security/auth/failed", False),
    ("service-Users", "u", "subscribe", "$share/Users/service/Users", True),
    ("service-Users", "u", "subscribe", "service/Orders", False),
    ("service-Users", "u", "subscribe", "service/+", False),
    ("caller", "s1", "publish", "service/Users", True),
    ("caller", "s1", "publish", "service/Users/security", False),
    ("caller", "s1", "publish", "session/s1/response", False),
    ("caller", "s1", "subscribe", "session/s1/response", True),
    ("caller", "s1", "subscribe", "session/s2/response", False),
    ("caller", "s1", "subscribe", "session/+/response", False),
    ("caller", "s+", "subscribe", "session/s+/response", False),  # a wildcard client id gets nothing
    ("caller", "s1", "subscribe", "system/prod/circuit-breaker/+", True),
    ("auth", "a", "publish", "security/auth/login_failed", True),
    ("auth", "a", "publish", "security/auth/x/y", False),
    ("nobody", "n", "subscribe", "session/n/response", False),  # unknown principals get nothing
    ("caller", "s1", "publish", "service/+", False),  # no wildcards in a publish
]


@pytest.mark.parametrize(("user", "cid", "action", "topic", "allowed"), CASES)
def test_decide(user: str, cid: str, action: str, topic: str, allowed: bool) -> None:
    """Each principal gets exactly its rights."""
    assert decide(P, user, cid, action, topic) is allowed  # type: ignore[arg-type]


def test_principals_and_bad_names() -> None:
    """One principal per service plus sfa-ops, caller and the auth service; bad names refused."""
    assert [p.name for p in P.principals] == ["sfa-ops", "service-Orders", "service-Users", "caller", "auth"]
    assert service_principal("Users") == "service-Users"
    with pytest.raises(ValueError):
        build_policy("prod", ["bad/name"])
    with pytest.raises(ValueError):
        build_policy("pr#od", [])
    with pytest.raises(ValueError):
        build_policy("prod", [], auth_principal="sfa-ops")  # collides
    with pytest.raises(ValueError):
        build_policy("prod", [], auth_principal='a"b')


def test_any_cluster_grants_every_cluster_and_nothing_more() -> None:
    """A broker shared by several clusters: ``+`` stands for every cluster id, one level only."""
    shared = build_policy(ANY_CLUSTER, ["Users"])
    assert decide(shared, "sfa-ops", "x", "publish", "system/t1234abcd/errors")
    assert decide(shared, "sfa-ops", "x", "subscribe", "system/any/#")
    assert decide(shared, "service-Users", "u", "publish", "system/c2/presence/Users/i1")
    assert not decide(shared, "service-Users", "u", "publish", "system/c2/presence/Orders/i1")
    assert not decide(shared, "caller", "x", "publish", "system/c2/errors")
    assert not decide(shared, "sfa-ops", "x", "publish", "system/a/b/errors")  # one level, not '#'
    assert "topic write system/+/presence/Users/+" in render_mosquitto_acl(shared).splitlines()
    for bad in ("#", "a+", "+/x"):
        with pytest.raises(ValueError):
            build_policy(bad, [])


def test_mosquitto_acl_has_every_grant_and_the_session_pattern() -> None:
    """Each grant becomes a ``topic read|write`` line under its ``user``; the session rule a pattern."""
    text = render_mosquitto_acl(P)
    lines = text.splitlines()
    n_grants = sum(len(p.grants) for p in P.principals)
    assert sum(1 for ln in lines if ln.startswith("topic ")) == n_grants
    assert "pattern read session/%c/response" in lines
    users = lines.index("user service-Users")
    assert "topic write system/prod/presence/Users/+" in lines[users:users + 10]
    assert not any("deny" in ln for ln in lines if not ln.startswith("#"))


def test_emqx_acl_conf_is_ordered_and_closed() -> None:
    """EMQX acl.conf: one allow per principal and action, the session placeholder, then deny all."""
    text = render_emqx_acl(P)
    rules = [ln for ln in text.splitlines() if ln.startswith("{")]
    assert rules[-1] == "{deny, all}."
    assert '{allow, all, subscribe, ["session/${clientid}/response"]}.' in rules
    assert any(r.startswith('{allow, {username, "auth"}, publish, ["security/auth/+"]}') for r in rules)
    assert all(r.endswith("}.") for r in rules)


def test_emqx_builtin_rules_shape() -> None:
    """Bodies for POST …/built_in_database/rules/users and …/rules/all (EMQX 5 API shapes)."""
    body = emqx_builtin_rules(P)
    users = {u["username"]: u["rules"] for u in body["users"]}
    assert set(users) == {p.name for p in P.principals}
    assert {"topic": "security/auth/+", "permission": "allow", "action": "publish"} in users["auth"]
    assert body["all"] == {"rules": [{"topic": "session/${clientid}/response", "permission": "allow",
                                      "action": "subscribe"}]}
    for rules in users.values():
        assert len(rules) <= 100  # EMQX's default max_rules per user


def test_mosquitto_password_line_is_pbkdf2_sha512() -> None:
    """``user:$7$iterations$salt$hash`` as mosquitto_passwd writes it."""
    line = mosquitto_password_line("caller", "s3cret", b"\x01" * 12, iterations=101)
    user, rest = line.split(":", 1)
    _, kind, iterations, salt, digest = rest.split("$")
    assert (user, kind, iterations) == ("caller", "7", "101")
    assert base64.b64decode(salt) == b"\x01" * 12
    assert base64.b64decode(digest) == hashlib.pbkdf2_hmac("sha512", b"s3cret", b"\x01" * 12, 101, 64)
    assert "s3cret" not in line
    with pytest.raises(ValueError):
        mosquitto_password_line("a:b", "x", b"\x00" * 12)


def test_simulator_policy_adds_only_the_demo_rights() -> None:
    """make run's simulator drives fault modes and traffic but cannot write system state."""
    from drivers.simulate_platform import SIMULATOR, simulator_policy

    sim = simulator_policy("local")
    assert decide(sim, SIMULATOR, "c", "publish", "sim/local/control/Payments")
    assert decide(sim, SIMULATOR, "c", "publish", "service/Payments")
    assert not decide(sim, SIMULATOR, "c", "publish", "system/local/circuit-breaker/Payments")
    assert decide(sim, "service-Payments", "i", "subscribe", "sim/local/control/Payments")
    assert not decide(sim, "service-Payments", "i", "publish", "sim/local/control/Payments")
    assert decide(sim, "sfa-ops", "x", "publish", "system/local/health")


def test_emqx_rule_bodies_match_the_api_examples() -> None:
    """Our bodies have the shape of EMQX's own API examples (tests/fixtures/emqx, from its source)."""
    import json
    from pathlib import Path

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "emqx"
    users_example = json.loads((fixtures / "emqx_authz_builtin_rules_users.json").read_text())
    all_example = json.loads((fixtures / "emqx_authz_builtin_rules_all.json").read_text())
    rule_keys = {k for u in users_example for r in u["rules"] for k in r}
    body = emqx_builtin_rules(P)
    assert type(body["users"]) is type(users_example) and set(body["all"]) == set(all_example)
    for user in body["users"]:
        assert set(user) == set(users_example[0])
        for rule in [*user["rules"], *body["all"]["rules"]]:
            assert set(rule) <= rule_keys
            assert rule["permission"] in ("allow", "deny") and rule["action"] in ("publish", "subscribe", "all")
