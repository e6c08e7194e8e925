"""Circuit breaker: opening rules, half-open trials, manual states, wire events, persistence, YAML."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from policies.breaker.circuit import CircuitBreaker
from policies.breaker.outcomes import UNANSWERED, is_failure
from policies.breaker.settings import BreakerSettings, CircuitBreakerPolicy, load_breaker_policy
from policies.breaker.transitions import TRANSITIONS, BadBreakerSnapshot, BreakerState, IllegalTransition
from policies.common.config import PolicyConfigError, load_policy_text

S = BreakerState
T0 = 1_734_258_600.0  # 2024-12-15T10:30:00Z
OK, FAIL, CALLER, TIMEOUT = None, -32603, -32001, -32007


def breaker(**cfg: object) -> CircuitBreaker:
    return CircuitBreaker(service="UserManagement", config=BreakerSettings.model_validate(cfg), now=T0)


def feed(b: CircuitBreaker, outcomes: list[tuple[float, int | None]], now: float = T0) -> list[str]:
    reasons = []
    for duration, code in outcomes:
        for ev in b.on_result(now, duration, code):
            reasons.append(ev.reason)
    return reasons


@pytest.mark.parametrize(
    ("cfg", "outcomes", "state", "reason"),
    [
        ({}, [(0.1, FAIL)] * 9, S.CLOSED, None),
        ({}, [(0.1, FAIL)] * 5 + [(0.1, OK)] * 5, S.OPEN, "Circuit opened due to 50% failure rate"),
        ({}, [(0.1, OK)] * 6 + [(0.1, FAIL)] * 4, S.CLOSED, None),
        (
            {"minimum_calls": 8},
            [(0.1, OK)] * 3 + [(0.1, FAIL)] * 5,
            S.OPEN,
            "Circuit opened due to 62.5% failure rate",
        ),
        ({}, [(0.1, CALLER)] * 50, S.CLOSED, None),
        ({}, [(0.1, -32004)] * 20 + [(0.1, -32006)] * 20, S.CLOSED, None),
        ({}, [(30.0, UNANSWERED)] * 10, S.OPEN, "Circuit opened due to 100% failure rate"),
        ({}, [(0.1, TIMEOUT)] * 10, S.OPEN, "Circuit opened due to 100% failure rate"),
        ({}, [(6.0, OK)] * 10, S.OPEN, "Circuit opened due to 100% slow calls (>= 5s)"),
        ({}, [(6.0, OK)] * 9 + [(0.1, OK)], S.CLOSED, None),
        (
            {"slow_call_rate_threshold": 50},
            [(0.1, OK)] * 5 + [(5.0, OK)] * 5,
            S.OPEN,
            "Circuit opened due to 50% slow calls (>= 5s)",
        ),
        (
            {"window_calls": 4, "minimum_calls": 4},
            [(0.1, OK)] * 4 + [(0.1, FAIL)] * 2,
            S.OPEN,
            "Circuit opened due to 50% failure rate",
        ),
    ],
)
def test_closed_to_open(
    cfg: dict[str, object], outcomes: list[tuple[float, int | None]], state: S, reason: str | None
) -> None:
    """The breaker opens exactly when calls >= minimum and a rate reaches its threshold."""
    b = breaker(**cfg)
    reasons = feed(b, outcomes)
    assert b.state is state
    assert reasons == ([reason] if reason else [])


def test_time_window_forgets_old_failures() -> None:
    """Failures older than the window no longer count toward opening."""
    b = breaker(window="60s")
    feed(b, [(0.1, FAIL)] * 9, now=T0)
    feed(b, [(0.1, OK)] * 2, now=T0 + 61)
    assert b.state is S.CLOSED and b.counts(T0 + 61).calls == 2


def test_open_refuses_then_half_open_trials_close() -> None:
    """Open refuses with a shrinking retryAfter; after the timeout trials run; enough successes close."""
    b = breaker(open_timeout="60s")
    feed(b, [(0.1, FAIL)] * 10)
    p = b.try_acquire(T0 + 20)
    assert not p.allowed and p.retry_after_s == pytest.approx(40)
    p = b.try_acquire(T0 + 60)
    assert p.allowed and p.half_open_trial and p.event is not None
    assert (p.event.from_state, p.event.to_state) == (S.OPEN, S.HALF_OPEN)
    assert b.try_acquire(T0 + 60).allowed and b.try_acquire(T0 + 60).allowed
    refused = b.try_acquire(T0 + 60)
    assert not refused.allowed and refused.retry_after_s and refused.retry_after_s > 0
    assert feed(b, [(0.1, OK), (0.1, CALLER)], now=T0 + 61) == []
    assert feed(b, [(0.1, OK)], now=T0 + 61) == ["Circuit closed - service recovered"]
    assert b.state is S.CLOSED and b.counts(T0 + 61).calls == 0


@pytest.mark.parametrize(
    ("trial", "reason"),
    [
        ((0.1, TIMEOUT), "Circuit reopened due to test failure: TimeoutError (-32007)"),
        ((0.1, FAIL), "Circuit reopened due to test failure: InternalError (-32603)"),
        ((30.0, UNANSWERED), "Circuit reopened due to test failure: no answer within the call timeout"),
    ],
)
def test_half_open_failure_reopens(trial: tuple[float, int | None], reason: str) -> None:
    """Any failing trial reopens the breaker at once."""
    b = breaker()
    feed(b, [(0.1, FAIL)] * 10)
    b.try_acquire(T0 + 60)
    assert feed(b, [(0.1, OK), trial], now=T0 + 61) == [reason]
    assert b.state is S.OPEN


def test_half_open_slow_trials_reopen() -> None:
    """Trials that succeed but are slow at the slow-call threshold reopen instead of closing."""
    b = breaker()
    feed(b, [(0.1, FAIL)] * 10)
    b.try_acquire(T0 + 60)
    assert feed(b, [(6.0, OK)] * 3, now=T0 + 70) == ["Circuit reopened: 100% of test calls were slow"]


def test_open_timeout_grows_and_is_capped() -> None:
    """Each consecutive re-open multiplies the open timeout up to the cap; closing resets it."""
    b = breaker(open_timeout="10s", open_timeout_multiplier=2, max_open_timeout="30s")
    feed(b, [(0.1, FAIL)] * 10)
    now, seen = T0, []
    for _ in range(4):
        retry = b.retry_after(now)
        assert retry is not None
        seen.append(round(retry))
        now += retry
        assert b.try_acquire(now).half_open_trial
        [ev] = b.on_result(now, 0.1, FAIL)
        assert ev.to_state is S.OPEN
    assert seen == [10, 20, 30, 30]
    now += 30
    b.try_acquire(now)
    feed(b, [(0.1, OK)] * 3, now=now)
    feed(b, [(0.1, FAIL)] * 10, now=now)
    assert b.retry_after(now) == pytest.approx(10)


def test_manual_states() -> None:
    """forced_open refuses, disabled admits and ignores, metrics_only records but never opens."""
    b = breaker()
    [ev] = b.force_open(T0, "maintenance")
    assert ev.reason == "maintenance" and ev.retry_after_s and ev.retry_after_s > 0
    assert not b.try_acquire(T0 + 10_000).allowed
    assert b.force_open(T0, "again") == ()
    b.disable(T0)
    assert b.try_acquire(T0).allowed
    assert feed(b, [(0.1, FAIL)] * 50) == [] and b.state is S.DISABLED
    b.metrics_only(T0)
    assert feed(b, [(0.1, FAIL)] * 50) == [] and b.counts(T0).failures == 50
    [ev] = b.reset(T0)
    assert (ev.from_state, ev.to_state, b.counts(T0).calls) == (S.METRICS_ONLY, S.CLOSED, 0)


@pytest.mark.parametrize("manual", ["force_open", "disable", "metrics_only"])
def test_preemptive_open_refused_in_manual_states(manual: str) -> None:
    """An operator's manual state is never overridden by a cascade: the move is illegal."""
    b = breaker()
    getattr(b, manual)(T0, "operator")
    with pytest.raises(IllegalTransition) as err:
        b.preemptive_open(T0, "Dependency UserManagement is unavailable")
    assert "UserManagement" in str(err.value)


def test_preemptive_open_from_closed_and_when_open() -> None:
    """A cascade opens a closed breaker with its reason; an open one is left alone."""
    b = breaker()
    [ev] = b.preemptive_open(T0, "Dependency Auth is unavailable")
    assert ev.to_state is S.OPEN and ev.reason == "Dependency Auth is unavailable"
    assert b.preemptive_open(T0 + 1, "again") == ()


def test_transition_table_refuses_closed_to_half_open() -> None:
    """Half-open is reachable only from open."""
    assert S.HALF_OPEN not in TRANSITIONS[S.CLOSED]
    assert {s for s, targets in TRANSITIONS.items() if S.HALF_OPEN in targets} == {S.OPEN}
    assert S.OPEN not in TRANSITIONS[S.DISABLED] | TRANSITIONS[S.METRICS_ONLY] | TRANSITIONS[S.FORCED_OPEN]


def test_wire_event() -> None:
    """The event serialises to the camelCase wire message with RFC 3339 UTC times, rates as
    fractions 0..1 and ``retryAfter`` as the instant calls may be tried again."""
    b = breaker(minimum_calls=8)
    [ev] = b.on_results(T0, [(0.1, OK)] * 3 + [(0.1, FAIL)] * 5)
    wire = orjson.loads(orjson.dumps(ev.to_wire("prod")))
    assert wire == {
        "type": "circuit_breaker_state_change",
        "clusterId": "prod",
        "service": "UserManagement",
        "topic": "service/UserManagement",
        "from": "closed",
        "to": "open",
        "reason": "Circuit opened due to 62.5% failure rate",
        "failureRate": 0.625,
        "slowCallRate": 0.0,
        "retryAfter": "2024-12-15T10:31:00Z",
        "retryAfterSeconds": 60.0,
        "timestamp": "2024-12-15T10:30:00Z",
    }


def test_batch_after_opening_ignores_the_rest() -> None:
    """A batch that opens the breaker yields one event; later outcomes in it change nothing."""
    b = breaker()
    events = b.on_results(T0, [(0.1, FAIL)] * 40)
    assert [e.to_state for e in events] == [S.OPEN]


@pytest.mark.parametrize("setup", ["closed", "open", "half_open", "forced_open", "disabled", "metrics_only"])
def test_snapshot_restore_roundtrip(setup: str) -> None:
    """A stored breaker comes back in the same state with the same deadline and reason."""
    b = breaker()
    if setup in ("open", "half_open"):
        feed(b, [(0.1, FAIL)] * 10)
    if setup == "half_open":
        b.try_acquire(T0 + 60)
    if setup == "forced_open":
        b.force_open(T0, "ops")
    if setup == "disabled":
        b.disable(T0)
    if setup == "metrics_only":
        b.metrics_only(T0)
    data = orjson.loads(orjson.dumps(b.snapshot()))
    r = CircuitBreaker.restore(data, config=b.config, now=T0 + 61)
    assert r.state.value == setup and r.snapshot() == b.snapshot()
    assert r.retry_after(T0 + 30) == b.retry_after(T0 + 30)


def test_restore_rejects_bad_data() -> None:
    """Unknown versions or states raise BadBreakerSnapshot, not a bare KeyError."""
    with pytest.raises(BadBreakerSnapshot):
        CircuitBreaker.restore(
            {"version": 1, "service": "X", "state": "ajar", "since": 0}, config=BreakerSettings(), now=T0
        )
    with pytest.raises(BadBreakerSnapshot):
        CircuitBreaker.restore({"version": 9}, config=BreakerSettings(), now=T0)


# --- YAML ----------------------------------------------------------------------------------


def test_default_file_loads_with_issue_defaults() -> None:
    """The shipped circuit_breaker.yaml has the documented defaults."""
    c = load_breaker_policy().for_service("Anything")
    assert (c.window, c.window_calls, c.minimum_calls, c.failure_rate_threshold) == (300.0, None, 10, 50.0)
    assert (c.slow_call_duration, c.slow_call_rate_threshold, c.open_timeout) == (5.0, 100.0, 60.0)
    assert (c.half_open_max_calls, c.half_open_success_threshold, c.open_timeout_multiplier) == (3, 3, 1.0)


def test_service_override_merges_over_defaults(tmp_path: Path) -> None:
    """A per-service block in an override file changes only the keys it names."""
    (tmp_path / "circuit_breaker.yaml").write_text(
        "services:\n  PaymentGateway:\n    window_calls: 50\n    open_timeout: 30s\n"
    )
    policy = load_breaker_policy(tmp_path)
    pg = policy.for_service("PaymentGateway")
    assert (pg.window_calls, pg.open_timeout, pg.minimum_calls) == (50, 30.0, 10)
    assert policy.for_service("Other").window_calls is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "defaults:\n  failure_rate_threshold: 150\n",
            ["defaults.failure_rate_threshold", "150", "between 0 and 100"],
        ),
        ("defaults:\n  open_timeout: soon\n", ["defaults.open_timeout", "'soon'", "duration"]),
        ("services:\n  Pay:\n    window_call: 5\n", ["services.Pay.window_call", "unknown key"]),
        (
            "services:\n  Pay:\n    half_open_max_calls: 1\n",
            ["services.Pay", "half_open_success_threshold (3)", "half_open_max_calls (1)"],
        ),
        ("defaults:\n  open_timeout_multiplier: 0.5\n", ["defaults.open_timeout_multiplier", "0.5"]),
    ],
)
def test_bad_file_errors_name_key_and_value(text: str, expected: list[str]) -> None:
    """A bad policy file raises PolicyConfigError naming the file, the key and the bad value."""
    with pytest.raises(PolicyConfigError) as err:
        load_policy_text(CircuitBreakerPolicy, text, "overrides/circuit_breaker.yaml")
    msg = str(err.value)
    assert "overrides/circuit_breaker.yaml" in msg
    for part in expected:
        assert part in msg


# --- state machine -------------------------------------------------------------------------

CODES = st.sampled_from([None, -32001, -32002, -32003, -32004, -32005, -32006, -32007, -32603, UNANSWERED])
MAX_TRIALS = 3


class BreakerMachine(RuleBasedStateMachine):
    """Random calls, results, clock steps and manual moves keep the breaker's invariants."""

    def __init__(self) -> None:
        super().__init__()
        cfg = BreakerSettings(
            window="30s", minimum_calls=4, open_timeout="10s", open_timeout_multiplier=2,
            max_open_timeout="40s", half_open_max_calls=MAX_TRIALS, half_open_success_threshold=2,
        )  # fmt: skip
        self.now = T0
        self.b = CircuitBreaker(service="Svc", config=cfg, now=self.now)
        self.trials = 0
        self.bad_since_closed = 0  # failures and slow calls recorded since the breaker last closed

    def _check_events(self, before: S, events: tuple, after: S, *, reset: bool = False) -> None:
        if reset:  # closed → closed is a transition too (fresh counters)
            assert len(events) == 1 and (events[0].from_state, events[0].to_state) == (before, S.CLOSED)
        elif before is after:
            assert events == ()
        else:
            assert len(events) == 1
            assert (events[0].from_state, events[0].to_state) == (before, after)
            assert after in TRANSITIONS[before]
        if after is not S.HALF_OPEN or before is not S.HALF_OPEN:
            self.trials = 0
        if after is S.CLOSED and (before is not S.CLOSED or reset):
            self.bad_since_closed = 0

    @rule(dt=st.floats(min_value=0, max_value=25))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule()
    def acquire(self) -> None:
        before = self.b.state
        p = self.b.try_acquire(self.now)
        after = self.b.state
        self._check_events(before, () if p.event is None else (p.event,), after)
        if after is S.HALF_OPEN and p.allowed:
            assert p.half_open_trial
            self.trials += 1
        if not p.allowed:
            assert p.retry_after_s is not None and p.retry_after_s > 0
        if before in (S.CLOSED, S.DISABLED, S.METRICS_ONLY):
            assert p.allowed

    @rule(duration=st.floats(min_value=0.001, max_value=8.0), code=CODES)
    def result(self, duration: float, code: int | None) -> None:
        before = self.b.state
        if before is S.CLOSED and (is_failure(code) or duration >= 5.0):
            self.bad_since_closed += 1
        events = self.b.on_result(self.now, duration, code)
        after = self.b.state
        self._check_events(before, events, after)
        if before is S.CLOSED and after is S.OPEN:
            assert self.bad_since_closed > 0  # caller errors and fast successes alone never open it
        if before in (S.FORCED_OPEN, S.DISABLED, S.OPEN, S.METRICS_ONLY):
            assert after is before and events == ()

    @rule(manual=st.sampled_from(["force_open", "disable", "metrics_only", "reset"]))
    def manual_move(self, manual: str) -> None:
        before = self.b.state
        if manual == "force_open":
            events = self.b.force_open(self.now, "ops")
        else:
            events = getattr(self.b, manual)(self.now)
        self._check_events(before, events, self.b.state, reset=manual == "reset")

    @rule()
    def cascade(self) -> None:
        before = self.b.state
        try:
            events = self.b.preemptive_open(self.now, "Dependency Db is unavailable")
        except IllegalTransition:
            assert before in (S.FORCED_OPEN, S.DISABLED, S.METRICS_ONLY)
            return
        self._check_events(before, events, self.b.state)
        assert self.b.state is S.OPEN

    @precondition(lambda self: self.b.state is not S.HALF_OPEN)
    @rule()
    def persist(self) -> None:
        snap = self.b.snapshot()
        self.b = CircuitBreaker.restore(orjson.loads(orjson.dumps(snap)), config=self.b.config, now=self.now)
        assert self.b.snapshot() == snap

    @invariant()
    def trials_bounded(self) -> None:
        assert self.trials <= MAX_TRIALS

    @invariant()
    def open_has_retry_after(self) -> None:
        if self.b.state in (S.OPEN, S.FORCED_OPEN, S.HALF_OPEN):
            r = self.b.retry_after(self.now)
            assert r is not None and r > 0
        else:
            assert self.b.retry_after(self.now) is None


BreakerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_breaker_state_machine = BreakerMachine.TestCase
