"""Heightened monitoring: the responder's active set → watches, and the analyzer's thresholds for a
watched entity lowered for the watch's TTL only."""

from __future__ import annotations

from typing import Any

import pytest

from policies.response.monitoring_watch import DEFAULT_FACTOR, Watch, factor_for, lowered, watches
from policies.security.analyzer import AuthEvent, SecurityAnalyzer, load_security_policy
from protocol.security import ActiveActions

T0 = 1_700_000_000.0
IP = "203.0.113.7"


def active(*actions: dict[str, Any]) -> ActiveActions:
    """An active set as the responder publishes it (parsed from its wire shape)."""
    return ActiveActions.model_validate({"actions": list(actions), "timestamp": T0})


def act(action: str, target: str, until: float | None, **params: Any) -> dict[str, Any]:
    return {"action": action, "target": target, "until": until, "params": params}


def test_only_active_increase_monitoring_actions_are_watches() -> None:
    """Other actions, undos and expired ones give no watch; the default factor is 0.5."""
    doc = active(act("increase_monitoring", IP, T0 + 60), act("block_ip", "198.51.100.1", T0 + 60),
                 act("increase_monitoring", "bob", T0 - 1),
                 {**act("increase_monitoring", "carol", T0 + 60), "undo": True})
    assert watches(doc.actions, T0) == {IP: Watch(factor=DEFAULT_FACTOR, until=T0 + 60)}


@pytest.mark.parametrize(("factor", "expected"), [(0.25, 0.25), (0.0, 0.1), (7, 1.0), ("bad", 0.5), ("nan", 0.5)])
def test_factor_from_params_is_clamped(factor: Any, expected: float) -> None:
    """A step's ``params.factor`` is used within [0.1, 1]; junk falls back to the default."""
    [w] = watches(active(act("increase_monitoring", IP, None, factor=factor)).actions, T0).values()
    assert w.factor == expected and w.until is None


def test_two_watches_on_one_target_keep_the_strongest_and_longest() -> None:
    doc = active(act("increase_monitoring", IP, T0 + 60, factor=0.8), act("increase_monitoring", IP, T0 + 600))
    assert watches(doc.actions, T0) == {IP: Watch(factor=0.5, until=T0 + 600)}


def test_factor_for_ends_with_the_watch() -> None:
    """The factor applies until the watch's expiry, then 1.0 again."""
    w = {IP: Watch(factor=0.5, until=T0 + 60)}
    assert factor_for(w, [None, IP], T0 + 59) == 0.5
    assert factor_for(w, [None, IP], T0 + 60) == 1.0
    assert (lowered(5, 0.5), lowered(5, 1.0), lowered(1, 0.1), lowered(10, 0.1)) == (3, 5, 1, 1)


def failures(analyzer: SecurityAnalyzer, n: int, *, ip: str, now: float) -> list[str]:
    """``n`` failed logins from ``ip``, each for another user, one a second from ``now``."""
    out: list[str] = []
    for i in range(n):
        out += [a.type for a in analyzer.on_auth(AuthEvent(user_id=f"u{i}", ip_address=ip, success=False,
                                                           timestamp=now + i), now + i)]
    return out


def test_watched_ip_alerts_on_fewer_failures_for_the_watch_ttl() -> None:
    """Brute force is 5 failures: 4 from an IP raise nothing; with the IP under heightened
    monitoring (factor 0.5) the 3rd does; after the watch expired, 4 raise nothing again."""
    watch = watches(active(act("increase_monitoring", IP, T0 + 100)).actions, T0)
    plain = SecurityAnalyzer(config=load_security_policy())
    assert failures(plain, 4, ip=IP, now=T0) == []
    watched = SecurityAnalyzer(config=load_security_policy())
    watched.set_watched(watch)
    assert failures(watched, 2, ip=IP, now=T0) == []
    assert failures(watched, 1, ip=IP, now=T0 + 2) == ["brute_force_attempt"]
    assert failures(watched, 4, ip="198.51.100.9", now=T0) == []  # another address: unchanged
    expired = SecurityAnalyzer(config=load_security_policy())
    expired.set_watched(watch)
    assert failures(expired, 4, ip=IP, now=T0 + 100) == []


def test_watched_ip_credential_stuffing_needs_half_the_distinct_users() -> None:
    """Credential stuffing is 10 distinct users from one IP; 5 when the IP is watched."""
    analyzer = SecurityAnalyzer(config=load_security_policy())
    analyzer.set_watched({IP: Watch(factor=0.5)})
    got: list[str] = []
    for i in range(5):
        got += [a.type for a in analyzer.on_auth(AuthEvent(user_id=f"u{i}", ip_address=IP, success=False,
                                                           timestamp=T0), T0 + i)]
    assert "credential_stuffing" in got
