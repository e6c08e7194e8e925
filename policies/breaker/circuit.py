"""Circuit breaker per service: resilience4j's state machine with the seed's TopicCircuitBreaker rules.

States (one object per state; a transition replaces the object, so its counters start fresh)::

    closed ──(rates over threshold / preemptive)──► open ──(open_timeout, next call)──► half_open
      ▲                                              ▲                                     │
      └──────────────(success threshold)─────────────┼──────────(any failure)──────────────┘
    forced_open, disabled, metrics_only: entered and left only by hand (reset → closed)

Illegal moves (closed → half_open, disabled → open, …) raise :class:`IllegalTransition`. Every
transition returns exactly one :class:`BreakerEvent`; a result that changes nothing allocates
nothing (``on_result`` returns the shared empty tuple).
Rates are percentages here (fractions 0..1 on the wire). The state names, the transition table,
the errors and the events are in ``policies.breaker.transitions``; the configuration in
``policies.breaker.settings``.

Tier-1 caller errors (-32001..-32006) count as calls but never as failures; -32007, -32603 and
unanswered calls (``outcomes.UNANSWERED``) are failures (``outcomes.is_failure``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from policies.breaker.outcomes import UNANSWERED, Snapshot, is_failure
from policies.breaker.settings import BreakerSettings
from policies.breaker.transitions import (
    TRANSITIONS,
    BadBreakerSnapshot,
    BreakerEvent,
    BreakerState,
    IllegalTransition,
    Permission,
)
from policies.breaker.windows import CountWindow, TimeWindow
from policies.common.config import format_duration
from protocol.errors import spec_for

_NO_EVENTS: tuple[BreakerEvent, ...] = ()
_S = BreakerState

_ALLOWED = Permission(True)


# --- one object per state ---------------------------------------------------------------


class _State:
    __slots__ = ("since",)
    name: ClassVar[BreakerState]

    def __init__(self, since: float) -> None:
        self.since = since


class _Closed(_State):
    __slots__ = ("window",)
    name = _S.CLOSED

    def __init__(self, since: float, window: TimeWindow | CountWindow) -> None:
        super().__init__(since)
        self.window = window


class _MetricsOnly(_Closed):
    __slots__ = ()
    name = _S.METRICS_ONLY


class _Open(_State):
    __slots__ = ("attempt", "reason", "until")
    name = _S.OPEN

    def __init__(self, since: float, *, until: float, attempt: int, reason: str) -> None:
        super().__init__(since)
        self.until = until
        self.attempt = attempt
        self.reason = reason


class _HalfOpen(_State):
    __slots__ = ("admitted", "attempt", "slow", "successes")
    name = _S.HALF_OPEN

    def __init__(self, since: float, *, attempt: int) -> None:
        super().__init__(since)
        self.attempt = attempt
        self.admitted = 0
        self.successes = 0
        self.slow = 0


class _ForcedOpen(_State):
    __slots__ = ("reason",)
    name = _S.FORCED_OPEN

    def __init__(self, since: float, *, reason: str) -> None:
        super().__init__(since)
        self.reason = reason


class _Disabled(_State):
    __slots__ = ()
    name = _S.DISABLED


_ADMITTING = frozenset({_Closed, _MetricsOnly, _Disabled})


def _pct(rate: float) -> str:
    return f"{round(rate, 1):g}%"


def _describe(code: int | None) -> str:
    if code == UNANSWERED:
        return "no answer within the call timeout"
    if code is None:
        return "success"
    return f"{spec_for(code).error_type} ({code})"


class CircuitBreaker:
    """The breaker of one service. Pure: every method takes ``now`` (epoch seconds)."""

    __slots__ = ("_state", "config", "service", "topic")

    def __init__(self, *, service: str, config: BreakerSettings, now: float) -> None:
        self.service = service
        self.topic = f"service/{service}"
        self.config = config
        self._state: _State = _Closed(now, self._new_window())

    def _new_window(self) -> TimeWindow | CountWindow:
        # Counts only: the breaker decides on rates; latency quantiles are the health window's job.
        c = self.config
        if c.window_calls is not None:
            return CountWindow(size=c.window_calls, slow_call_s=c.slow_call_duration, latency=False)
        return TimeWindow(
            length_s=c.window, granularity_s=c.window_bucket, slow_call_s=c.slow_call_duration, latency=False
        )

    @property
    def state(self) -> BreakerState:
        return self._state.name

    def allows(self, target: BreakerState) -> bool:
        """Whether the transition table permits a move from the current state to ``target``."""
        return target in TRANSITIONS[self._state.name]

    def counts(self, now: float) -> Snapshot:
        """The window's counts (empty outside closed and metrics_only, which keep no window)."""
        st = self._state
        if isinstance(st, _Closed):
            return st.window.snapshot(now)
        return Snapshot(0, 0, 0, 0.0)

    def retry_after(self, now: float) -> float | None:
        """Seconds a refused caller should wait; ``None`` when calls are let through."""
        st = self._state
        if isinstance(st, _Open):
            return max(st.until - now, 1e-3)
        if isinstance(st, _HalfOpen):
            # Trials are in flight; if they fail the breaker reopens for this long.
            return self.config.open_timeout_for(st.attempt + 1)
        if isinstance(st, _ForcedOpen):
            return self.config.open_timeout
        return None

    # --- calls ---------------------------------------------------------------------------

    def try_acquire(self, now: float) -> Permission:
        """May a call go to the service now? Open moves to half_open once its timeout passed."""
        st = self._state
        if type(st) in _ADMITTING:
            return _ALLOWED
        if isinstance(st, _Open):
            if now < st.until:
                return Permission(False, st.until - now)
            event = self._transition(
                now, _HalfOpen(now, attempt=st.attempt), "Circuit transitioning to half-open for testing"
            )
            st = self._state
        else:
            event = None
        if isinstance(st, _HalfOpen):
            if st.admitted < self.config.half_open_max_calls:
                st.admitted += 1
                return Permission(True, None, True, event)
            return Permission(False, self.retry_after(now), False, event)
        return Permission(False, self.retry_after(now), False, event)

    def on_result(self, now: float, duration_s: float, code: int | None) -> tuple[BreakerEvent, ...]:
        """Record one outcome (``code`` None = success); the transitions it caused, usually none."""
        st = self._state
        if type(st) is _Closed:
            w = st.window
            w.add(now, duration_s, code)
            calls = w.calls
            c = self.config
            if calls < c.minimum_calls:
                return _NO_EVENTS
            if w.failures and w.failures * 100.0 >= c.failure_rate_threshold * calls:
                rate = w.failures * 100.0 / calls
                reason = f"Circuit opened due to {_pct(rate)} failure rate"
            elif w.slow_calls and w.slow_calls * 100.0 >= c.slow_call_rate_threshold * calls:
                rate = w.slow_calls * 100.0 / calls
                reason = f"Circuit opened due to {_pct(rate)} slow calls (>= {format_duration(c.slow_call_duration)})"
            else:
                return _NO_EVENTS
            return (self._open(now, 0, reason),)
        if type(st) is _MetricsOnly:
            st.window.add(now, duration_s, code)
            return _NO_EVENTS
        if isinstance(st, _HalfOpen):
            return self._half_open_result(st, now, duration_s, code)
        # open, forced_open, disabled: results (late answers) change nothing.
        return _NO_EVENTS

    def on_results(
        self, now: float, outcomes: Iterable[tuple[float, int | None]]
    ) -> tuple[BreakerEvent, ...]:
        """A tick's batch of ``(duration_s, code)`` outcomes from the observer."""
        events: tuple[BreakerEvent, ...] = _NO_EVENTS
        for duration_s, code in outcomes:
            ev = self.on_result(now, duration_s, code)
            if ev:
                events += ev
        return events

    def _half_open_result(
        self, st: _HalfOpen, now: float, duration_s: float, code: int | None
    ) -> tuple[BreakerEvent, ...]:
        c = self.config
        if is_failure(code):
            reason = f"Circuit reopened due to test failure: {_describe(code)}"
            failure_rate = 100.0 / (st.successes + 1)
            return (self._open(now, st.attempt + 1, reason, failure_rate=failure_rate),)
        st.successes += 1
        if duration_s >= c.slow_call_duration:
            st.slow += 1
        if st.successes < c.half_open_success_threshold:
            return _NO_EVENTS
        slow_rate = st.slow * 100.0 / st.successes
        if st.slow and slow_rate >= c.slow_call_rate_threshold:
            reason = f"Circuit reopened: {_pct(slow_rate)} of test calls were slow"
            return (self._open(now, st.attempt + 1, reason, failure_rate=0.0, slow_rate=slow_rate),)
        return (
            self._transition(
                now, _Closed(now, self._new_window()), "Circuit closed - service recovered", 0.0, slow_rate
            ),
        )

    # --- manual and cascade moves --------------------------------------------------------

    def preemptive_open(self, now: float, reason: str) -> tuple[BreakerEvent, ...]:
        """Open ahead of failures (a dependency is down). Already open: nothing happens."""
        st = self._state
        if isinstance(st, _Open):
            return _NO_EVENTS
        attempt = st.attempt + 1 if isinstance(st, _HalfOpen) else 0
        if not self.allows(_S.OPEN):
            raise IllegalTransition(self.service, st.name, _S.OPEN)
        return (self._open(now, attempt, reason),)

    def force_open(self, now: float, reason: str) -> tuple[BreakerEvent, ...]:
        """Refuse every call until reset (an operator's decision)."""
        if isinstance(self._state, _ForcedOpen):
            return _NO_EVENTS
        return (self._transition(now, _ForcedOpen(now, reason=reason), reason),)

    def disable(self, now: float, reason: str = "Circuit breaker disabled") -> tuple[BreakerEvent, ...]:
        """Let every call through and record nothing."""
        if isinstance(self._state, _Disabled):
            return _NO_EVENTS
        return (self._transition(now, _Disabled(now), reason),)

    def metrics_only(
        self, now: float, reason: str = "Circuit breaker in metrics-only mode"
    ) -> tuple[BreakerEvent, ...]:
        """Record outcomes but never refuse a call."""
        if type(self._state) is _MetricsOnly:
            return _NO_EVENTS
        return (self._transition(now, _MetricsOnly(now, self._new_window()), reason),)

    def reset(self, now: float, reason: str = "Circuit breaker reset") -> tuple[BreakerEvent, ...]:
        """Back to closed with an empty window, from any state."""
        return (self._transition(now, _Closed(now, self._new_window()), reason),)

    # --- transitions ---------------------------------------------------------------------

    def _open(
        self,
        now: float,
        attempt: int,
        reason: str,
        *,
        failure_rate: float | None = None,
        slow_rate: float | None = None,
    ) -> BreakerEvent:
        until = now + self.config.open_timeout_for(attempt)
        new = _Open(now, until=until, attempt=attempt, reason=reason)
        return self._transition(now, new, reason, failure_rate, slow_rate)

    def _transition(
        self,
        now: float,
        new: _State,
        reason: str,
        failure_rate: float | None = None,
        slow_rate: float | None = None,
    ) -> BreakerEvent:
        old = self._state
        if new.name not in TRANSITIONS[old.name]:
            raise IllegalTransition(self.service, old.name, new.name)
        if failure_rate is None or slow_rate is None:
            snap = old.window.snapshot(now) if isinstance(old, _Closed) else None
            if failure_rate is None:
                failure_rate = snap.failure_rate if snap else 0.0
            if slow_rate is None:
                slow_rate = snap.slow_call_rate if snap else 0.0
        self._state = new
        return BreakerEvent(
            service=self.service,
            topic=self.topic,
            from_state=old.name,
            to_state=new.name,
            reason=reason,
            failure_rate=failure_rate,
            slow_call_rate=slow_rate,
            retry_after_s=self.retry_after(now),
            timestamp=now,
        )

    # --- persistence ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state for the store. Window counts are not kept: a restored breaker
        starts a fresh window (as resilience4j does), while open deadlines and re-open counts are."""
        st = self._state
        out: dict[str, Any] = {
            "version": 1,
            "service": self.service,
            "state": st.name.value,
            "since": st.since,
        }
        if isinstance(st, _Open):
            out |= {"until": st.until, "attempt": st.attempt, "reason": st.reason}
        elif isinstance(st, _HalfOpen):
            out |= {"attempt": st.attempt}
        elif isinstance(st, _ForcedOpen):
            out |= {"reason": st.reason}
        return out

    @classmethod
    def restore(cls, data: Mapping[str, Any], *, config: BreakerSettings, now: float) -> CircuitBreaker:
        """Rebuild a breaker from ``snapshot()``. Half-open restarts its trials (those in flight
        when the process stopped are lost)."""
        try:
            if data.get("version") != 1:
                raise BadBreakerSnapshot(f"unknown breaker snapshot version {data.get('version')!r}")
            service = str(data["service"])
            name = BreakerState(data["state"])
            since = float(data["since"])
            br = cls(service=service, config=config, now=now)
            state: _State
            if name is _S.OPEN:
                state = _Open(
                    since,
                    until=float(data["until"]),
                    attempt=int(data["attempt"]),
                    reason=str(data["reason"]),
                )
            elif name is _S.HALF_OPEN:
                state = _HalfOpen(since, attempt=int(data["attempt"]))
            elif name is _S.FORCED_OPEN:
                state = _ForcedOpen(since, reason=str(data["reason"]))
            elif name is _S.DISABLED:
                state = _Disabled(since)
            elif name is _S.METRICS_ONLY:
                state = _MetricsOnly(since, br._new_window())
            else:
                state = _Closed(since, br._new_window())
        except (KeyError, TypeError, ValueError) as exc:
            raise BadBreakerSnapshot(f"cannot restore circuit breaker from {dict(data)!r}: {exc}") from exc
        br._state = state
        return br


__all__ = ["CircuitBreaker"]
