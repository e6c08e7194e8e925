"""Circuit breaker per service: resilience4j's state machine with the seed's TopicCircuitBreaker rules.

States (one object per state; a transition replaces the object, so its counters start fresh)::

    closed ──(rates over threshold / preemptive)──► open ──(open_timeout, next call)──► half_open
      ▲                                              ▲                                     │
      └──────────────(success threshold)─────────────┼──────────(any failure)──────────────┘
    forced_open, disabled, metrics_only: entered and left only by hand (reset → closed)

Illegal moves (closed → half_open, disabled → open, …) raise :class:`IllegalTransition`. Every
transition returns exactly one :class:`BreakerEvent`; a result that changes nothing allocates
nothing (``on_result`` returns the shared empty tuple).
Rates are percentages here (fractions 0..1 on the wire).

Errors::

    BreakerError
     ├── IllegalTransition   a move the transition table refuses
     └── BadBreakerSnapshot  ``restore`` got data it cannot use

Tier-1 caller errors (-32001..-32006) count as calls but never as failures; -32007, -32603 and
unanswered calls (``windows.UNANSWERED``) are failures (``windows.is_failure``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from policies.breaker.windows import UNANSWERED, CountWindow, Snapshot, TimeWindow, is_failure
from policies.common.config import Duration, Percent, PolicyModel, format_duration, load_policy
from protocol.errors import spec_for
from protocol.system import BreakerStateChange

_NO_EVENTS: tuple[BreakerEvent, ...] = ()


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"
    METRICS_ONLY = "metrics_only"


class BreakerError(Exception):
    """Base of the circuit breaker's errors."""


class IllegalTransition(BreakerError):
    """The transition table refuses this move."""

    def __init__(self, service: str, source: BreakerState, target: BreakerState) -> None:
        super().__init__(f"{service}: circuit breaker cannot go from {source} to {target}")
        self.source = source
        self.target = target


class BadBreakerSnapshot(BreakerError):
    """A stored breaker state cannot be restored."""


_S = BreakerState
_MANUAL = frozenset({_S.FORCED_OPEN, _S.DISABLED, _S.METRICS_ONLY, _S.CLOSED})
TRANSITIONS: Mapping[BreakerState, frozenset[BreakerState]] = {
    _S.CLOSED: _MANUAL | {_S.OPEN},
    _S.OPEN: _MANUAL | {_S.HALF_OPEN},
    _S.HALF_OPEN: _MANUAL | {_S.OPEN},
    _S.FORCED_OPEN: _MANUAL,
    _S.DISABLED: _MANUAL,
    _S.METRICS_ONLY: _MANUAL,
}
"""from → allowed targets. ``closed → closed`` is a reset (fresh counters)."""


class BreakerSettings(PolicyModel):
    """One service's breaker configuration (``defaults:`` merged with ``services.{Name}``)."""

    window: Duration = 300.0
    window_calls: int | None = Field(default=None, ge=1)
    window_bucket: Duration = 1.0
    minimum_calls: int = Field(default=10, ge=1)
    failure_rate_threshold: Percent = 50.0
    slow_call_duration: Duration = 5.0
    slow_call_rate_threshold: Percent = 100.0
    open_timeout: Duration = 60.0
    open_timeout_multiplier: float = Field(default=1.0, ge=1.0)
    max_open_timeout: Duration = 600.0
    half_open_max_calls: int = Field(default=3, ge=1)
    half_open_success_threshold: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> BreakerSettings:
        if self.half_open_success_threshold > self.half_open_max_calls:
            raise ValueError(
                f"half_open_success_threshold ({self.half_open_success_threshold}) cannot exceed "
                f"half_open_max_calls ({self.half_open_max_calls}): the breaker could never close"
            )
        if self.max_open_timeout < self.open_timeout:
            raise ValueError(
                f"max_open_timeout ({format_duration(self.max_open_timeout)}) must be at least "
                f"open_timeout ({format_duration(self.open_timeout)})"
            )
        if not 0 < self.window_bucket <= self.window:
            raise ValueError(f"window_bucket must be > 0 and <= window ({format_duration(self.window)})")
        if self.open_timeout <= 0:
            raise ValueError("open_timeout must be greater than 0")
        return self

    def open_timeout_for(self, attempt: int) -> float:
        """Open timeout after ``attempt`` consecutive re-opens (0 = first open), capped."""
        return min(self.open_timeout * self.open_timeout_multiplier**attempt, self.max_open_timeout)


BreakerConfig = BreakerSettings


class BreakerOverride(PolicyModel):
    """Per-service keys; anything not set comes from ``defaults``."""

    window: Duration | None = None
    window_calls: int | None = Field(default=None, ge=1)
    window_bucket: Duration | None = None
    minimum_calls: int | None = Field(default=None, ge=1)
    failure_rate_threshold: Percent | None = None
    slow_call_duration: Duration | None = None
    slow_call_rate_threshold: Percent | None = None
    open_timeout: Duration | None = None
    open_timeout_multiplier: float | None = Field(default=None, ge=1.0)
    max_open_timeout: Duration | None = None
    half_open_max_calls: int | None = Field(default=None, ge=1)
    half_open_success_threshold: int | None = Field(default=None, ge=1)


class CircuitBreakerPolicy(PolicyModel):
    """``policies/circuit_breaker.yaml``."""

    defaults: BreakerSettings = BreakerSettings()
    services: dict[str, BreakerOverride] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _services_valid(self) -> CircuitBreakerPolicy:
        for name in self.services:
            try:
                self.for_service(name)
            except ValueError as exc:
                raise ValueError(f"services.{name}: {exc}") from exc
        return self

    def for_service(self, name: str) -> BreakerSettings:
        """The merged configuration of one service."""
        override = self.services.get(name)
        if override is None:
            return self.defaults
        merged = self.defaults.model_dump() | override.model_dump(exclude_unset=True)
        return BreakerSettings.model_validate(merged)


def load_breaker_policy(overrides_dir: Path | str | None = None) -> CircuitBreakerPolicy:
    """Load ``circuit_breaker.yaml`` (defaults, then the override directory's copy)."""
    return load_policy(CircuitBreakerPolicy, "circuit_breaker.yaml", overrides_dir)


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerEvent:
    """One state change; ``to_wire()`` is the ``system/{cluster}/circuit-breaker`` message."""

    service: str
    topic: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    failure_rate: float  # percent; the wire carries it as a fraction
    slow_call_rate: float
    retry_after_s: float | None
    timestamp: float

    def to_wire(self, cluster_id: str | None = None) -> dict[str, Any]:
        """The ``protocol.system.BreakerStateChange`` message: rates as fractions 0..1,
        ``retryAfter`` the instant calls may be retried (RFC 3339, the seed's DateTime),
        ``retryAfterSeconds`` the same as a delay; both absent unless the new state refuses calls."""
        return BreakerStateChange(
            cluster_id=cluster_id,
            service=self.service,
            topic=self.topic,
            from_state=self.from_state.value,
            to_state=self.to_state.value,
            reason=self.reason,
            failure_rate=round(self.failure_rate / 100.0, 4),
            slow_call_rate=round(self.slow_call_rate / 100.0, 4),
            retry_after=None if self.retry_after_s is None else self.timestamp + self.retry_after_s,
            retry_after_seconds=self.retry_after_s,
            timestamp=self.timestamp,
        ).to_wire()


@dataclass(frozen=True, slots=True)
class Permission:
    """Answer to ``try_acquire``: may this call go through, and if not, when to retry."""

    allowed: bool
    retry_after_s: float | None = None
    half_open_trial: bool = False
    event: BreakerEvent | None = None
    """The transition this attempt caused (open → half_open), if any."""


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


__all__ = [
    "TRANSITIONS",
    "BadBreakerSnapshot",
    "BreakerConfig",
    "BreakerError",
    "BreakerEvent",
    "BreakerOverride",
    "BreakerSettings",
    "BreakerState",
    "CircuitBreaker",
    "CircuitBreakerPolicy",
    "IllegalTransition",
    "Permission",
    "load_breaker_policy",
]
