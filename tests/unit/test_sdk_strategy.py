"""The platform-aware client's pure decisions: fail fast, timeouts, writes, cache — time injected."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdk.cache import ResultCache, cache_key
from sdk.strategy import AdaptiveStrategy, StrategyConfig, recovery_seconds

T0 = 1_700_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2-5 minutes", 120.0),
        ("30s", 30.0),
        ("1 hour", 3600.0),
        ("PT5M", 300.0),
        ("2023-11-14T22:13:40Z", 7.0),
        ("soon", None),
        (None, None),
    ],
)
def test_recovery_seconds(text: str | None, expected: float | None) -> None:
    """estimatedRecovery is read as RFC 3339 or a duration (lower bound); junk gives None."""
    assert recovery_seconds(text, T0 + 13.0) == expected


def test_service_unavailable_until_retry_then_recovered() -> None:
    """A service_unavailable notice fails fast until its time, and recovery clears it at once."""
    s = AdaptiveStrategy()
    assert s.service_unavailable("Users", reason="pods down", estimated_recovery="2-5 minutes", now=T0)
    plan = s.plan("Users", "getUser", base_timeout=30, now=T0 + 60)
    assert (plan.action, plan.retry_after, plan.reason) == ("fail_fast", 60.0, "pods down")
    assert s.plan("Users", "getUser", base_timeout=30, now=T0 + 121).action == "call"
    s.service_unavailable("Users", reason="pods down", retry_after=300, now=T0)
    assert s.service_recovered("Users", now=T0 + 1)
    assert s.plan("Users", "getUser", base_timeout=30, now=T0 + 1).action == "call"
    assert not s.service_recovered("Users", now=T0 + 2)


@pytest.mark.parametrize(
    ("state", "retry_after", "open_until", "at", "fails"),
    [
        ("open", 30.0, None, T0 + 29, True),
        ("open", 30.0, None, T0 + 31, False),
        ("forced_open", None, None, T0 + 10, True),
        ("open", 30.0, T0 - 5, T0, False),  # a stale retained state
        ("half_open", 30.0, None, T0, False),
        ("closed", None, None, T0, False),
    ],
)
def test_breaker_states(
    state: str, retry_after: float | None, open_until: float | None, at: float, fails: bool
) -> None:
    """Open breakers fail fast until retryAfter/openUntil; other states let calls through."""
    s = AdaptiveStrategy()
    s.breaker("Users", state, retry_after=retry_after, open_until=open_until, now=T0)
    plan = s.plan("Users", "createUser", base_timeout=30, now=at)
    assert (plan.action == "fail_fast") is fails
    if fails:
        assert plan.circuit_open


@pytest.mark.parametrize("open_until", [None, T0 + 10 * 365 * 86400.0])
def test_far_future_retry_after_is_capped(open_until: float | None) -> None:
    """A retryAfter (or openUntil) decades away fails calls fast for max_breaker_open_s at most."""
    s = AdaptiveStrategy(config=StrategyConfig(max_breaker_open_s=120.0))
    s.breaker("Users", "open", retry_after=10 * 365 * 86400.0, open_until=open_until, now=T0)
    plan = s.plan("Users", "x", base_timeout=30, now=T0 + 119)
    assert plan.action == "fail_fast" and plan.retry_after == pytest.approx(1.0)
    assert s.plan("Users", "x", base_timeout=30, now=T0 + 121).action == "call"
    assert AdaptiveStrategy().config.max_breaker_open_s == 300.0


def test_closed_state_clears_open_breaker() -> None:
    """A closed state received while open ends the fast-fail at once."""
    s = AdaptiveStrategy()
    assert s.breaker("Users", "open", retry_after=60, now=T0)
    assert s.breaker("Users", "closed", now=T0 + 1)
    assert s.plan("Users", "x", base_timeout=30, now=T0 + 1).action == "call"


def test_three_timeouts_make_unavailable_for_two_minutes() -> None:
    """3 consecutive unanswered calls mark the service unavailable for 2 minutes; an answer resets."""
    s = AdaptiveStrategy()
    assert not s.record_timeout("Users", now=T0)
    s.record_answer("Users")
    assert not s.record_timeout("Users", now=T0)
    assert not s.record_timeout("Users", now=T0)
    assert s.record_timeout("Users", now=T0)
    assert s.plan("Users", "getUser", base_timeout=30, now=T0 + 119).action == "fail_fast"
    assert s.plan("Users", "getUser", base_timeout=30, now=T0 + 121).action == "call"


def test_broker_trouble_doubles_timeouts_until_recovered() -> None:
    """infrastructure_error on the broker doubles timeouts (30→60 s); recovery restores them."""
    s = AdaptiveStrategy()
    assert not s.infrastructure_error("mqtt_broker", severity="info", message="fyi", now=T0)
    assert s.plan("A", "getX", base_timeout=30, now=T0).timeout == 30
    assert s.infrastructure_error("emqx_cluster", severity="critical", message="node down", now=T0)
    plan = s.plan("A", "getX", base_timeout=30, now=T0 + 1)
    assert plan.timeout == 60 and plan.warnings
    assert s.infrastructure_recovered("emqx_cluster", now=T0 + 2)
    assert s.plan("A", "getX", base_timeout=30, now=T0 + 2).timeout == 30


def test_database_trouble_defers_writes_not_reads() -> None:
    """During postgresql trouble writes are deferred and reads still go; the issue expires."""
    s = AdaptiveStrategy()
    s.infrastructure_error("postgresql_cluster", severity="error", message="replication lag", now=T0)
    assert s.plan("Users", "createUser", base_timeout=30, now=T0).action == "defer_write"
    assert s.plan("Users", "getUser", base_timeout=30, now=T0).action == "call"
    assert s.plan("Users", "getUser", base_timeout=30, now=T0, write=True).action == "defer_write"
    assert s.plan("Users", "createUser", base_timeout=30, now=T0 + 601).action == "call"


def test_offline_prefers_cache() -> None:
    """Offline, a call is still planned but stale cached data may be served instead."""
    plan = AdaptiveStrategy().plan("Users", "getUser", base_timeout=30, now=T0, offline=True)
    assert plan.action == "call" and plan.serve_stale


def test_cache_ttl_and_lru() -> None:
    """The cache serves entries up to max_age and evicts the least recently used."""
    c = ResultCache(max_entries=2)
    a, b, d = (
        cache_key("S", "m", {"x": 1, "y": 2}),
        cache_key("S", "m", {"x": 2}),
        cache_key("S", "m", {"x": 3}),
    )
    assert a == cache_key("S", "m", {"y": 2, "x": 1})
    c.put(a, "A", now=T0)
    c.put(b, "B", now=T0)
    assert c.get(a, now=T0 + 5, max_age=10) == ("A", 5.0)
    c.put(d, "D", now=T0)  # evicts b, the least recently used
    assert c.get(b, now=T0, max_age=10) is None
    assert c.get(a, now=T0 + 11, max_age=10) is None


@given(st.lists(st.sampled_from(["timeout", "answer", "recovered"]), max_size=30))
def test_timeouts_match_a_simple_model(events: list[str]) -> None:
    """Unavailable iff 3 consecutive timeouts happened since the last recovery (answers reset the run)."""
    s = AdaptiveStrategy()
    unavailable, run = False, 0
    for e in events:
        if e == "timeout":
            s.record_timeout("S", now=T0)
            run += 1
            unavailable = unavailable or run >= 3
        elif e == "answer":
            s.record_answer("S")
            run = 0
        else:
            s.service_recovered("S", now=T0)
            unavailable, run = False, 0
    assert (s.plan("S", "getX", base_timeout=30, now=T0).action == "fail_fast") is unavailable
