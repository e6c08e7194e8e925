"""What a platform-aware client knows about services and infrastructure, and what it decides from
it (seed: ``ResilientServiceClient``, ``PlatformAwareClient``, ``AdaptiveClientBehavior``).

Pure: no I/O, no clock — every method takes ``now`` (epoch seconds) and decisions come back as a
frozen ``CallPlan``. ``sdk.platform_client`` feeds it system messages and call outcomes.

Rules:

- a ``service_unavailable`` notice fails calls fast until its ``retryAfter`` or the lower bound of
  ``estimatedRecovery`` (default 60 s, at most 10 min); ``service_recovered`` clears it;
- an open (or forced-open) breaker fails calls fast until ``retryAfter``/``openUntil``, but never
  longer than ``max_breaker_open_s`` (300 s) from when the client heard of it: a forged or wrong
  far-future ``retryAfter`` cannot make a client refuse calls for long; a closed/half-open state
  clears it;
- 3 consecutive calls without an answer mark a service unavailable for 2 minutes (seed);
- broker trouble (``mqtt_broker``/``emqx_cluster``) doubles call timeouts (30 s → 60 s, seed);
- database trouble (``postgresql_cluster``, ``mongodb_cluster``) refuses writes while reads still go through;
- an infrastructure issue without a recovery notice expires after 10 minutes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

from protocol.base import epoch_from_rfc3339

BROKER_COMPONENTS = frozenset({"mqtt_broker", "emqx_cluster"})
DATABASE_COMPONENTS = frozenset({"postgresql_cluster", "mongodb_cluster"})
_IGNORED_SEVERITIES = frozenset({"info"})
_OPEN_STATES = frozenset({"open", "forced_open"})
_DURATION_RE = re.compile(
    r"^\s*(?:PT)?(\d+(?:\.\d+)?)\s*(?:-\s*\d+(?:\.\d+)?\s*)?"
    r"(s|sec|secs|seconds?|m|min|mins|minutes?|h|hr|hrs|hours?)\s*$",
    re.IGNORECASE,
)
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, kw_only=True)
class StrategyConfig:
    """Knobs of the client's policy; the defaults are the seed's numbers."""

    timeouts_to_unavailable: int = 3
    timeout_unavailable_s: float = 120.0
    default_unavailable_s: float = 60.0
    max_unavailable_s: float = 600.0
    default_breaker_open_s: float = 30.0
    max_breaker_open_s: float = 300.0
    broker_trouble_timeout_factor: float = 2.0
    max_timeout_s: float = 300.0
    infra_issue_ttl_s: float = 600.0
    read_prefixes: tuple[str, ...] = (
        "get",
        "list",
        "find",
        "search",
        "query",
        "count",
        "read",
        "fetch",
        "check",
        "describe",
        "lookup",
    )


@dataclass(frozen=True, slots=True)
class ServiceView:
    """The client's view of one service; replaced (never mutated) on every change."""

    unavailable_until: float | None = None
    reason: str | None = None
    estimated_recovery: str | None = None
    breaker_state: str = "closed"
    breaker_open_until: float | None = None
    consecutive_timeouts: int = 0


@dataclass(frozen=True, slots=True)
class InfraIssue:
    component: str
    severity: str
    message: str
    until: float


@dataclass(frozen=True, slots=True)
class CallPlan:
    """What to do with one call. ``retry_after`` is seconds from now."""

    action: Literal["call", "fail_fast", "defer_write"]
    timeout: float
    reason: str | None = None
    retry_after: float | None = None
    circuit_open: bool = False
    serve_stale: bool = False
    warnings: tuple[str, ...] = field(default=())


def recovery_seconds(text: str | None, now: float) -> float | None:
    """Seconds until an ``estimatedRecovery``: an RFC 3339 time, or a duration such as ``"2-5
    minutes"`` (its lower bound: better to try a little early than to refuse too long)."""
    if not text:
        return None
    match = _DURATION_RE.match(text)
    if match:
        return float(match.group(1)) * _UNIT_S[match.group(2)[0].lower()]
    try:
        when = epoch_from_rfc3339(text)
    except ValueError:
        return None
    return max(0.0, when - now)


class AdaptiveStrategy:
    """Per-service views and infrastructure issues, and the call plan they imply."""

    def __init__(self, *, config: StrategyConfig | None = None) -> None:
        self.config = config or StrategyConfig()
        self.services: dict[str, ServiceView] = {}
        self.infra: dict[str, InfraIssue] = {}

    def view(self, service: str) -> ServiceView:
        return self.services.get(service, ServiceView())

    def _set(self, service: str, view: ServiceView) -> bool:
        changed = view != self.view(service)
        self.services[service] = view
        return changed

    # ------------------------------------------------------------ inputs

    def service_unavailable(
        self,
        service: str,
        *,
        reason: str,
        now: float,
        estimated_recovery: str | None = None,
        retry_after: float | None = None,
    ) -> bool:
        """A ``service_unavailable`` notice (or a -32503 answer). True if the view changed."""
        cfg = self.config
        seconds = retry_after if retry_after is not None else recovery_seconds(estimated_recovery, now)
        if seconds is None:
            seconds = cfg.default_unavailable_s
        until = now + min(max(seconds, 0.0), cfg.max_unavailable_s)
        was = self.view(service)
        return self._set(
            service,
            replace(was, unavailable_until=until, reason=reason, estimated_recovery=estimated_recovery),
        ) and not self.is_unavailable(was, now)

    def service_recovered(self, service: str, *, now: float) -> bool:
        was = self.view(service)
        self._set(
            service,
            replace(
                was, unavailable_until=None, reason=None, estimated_recovery=None, consecutive_timeouts=0
            ),
        )
        return self.is_unavailable(was, now)

    def breaker(
        self,
        service: str,
        state: str,
        *,
        now: float,
        retry_after: float | None = None,
        open_until: float | None = None,
    ) -> bool:
        """A breaker state (live change or retained). True if the state the client acts on changed."""
        was = self.view(service)
        if state in _OPEN_STATES:
            cfg = self.config
            wait = retry_after if retry_after is not None else cfg.default_breaker_open_s
            limit = now + min(max(wait, 0.0), cfg.max_breaker_open_s)
            # A retained state may be old: its openUntil, when past, means it is no longer open.
            until = min(limit, open_until) if open_until is not None else limit
            new = replace(was, breaker_state=state, breaker_open_until=until if until > now else None)
        else:
            new = replace(was, breaker_state=state, breaker_open_until=None)
        self._set(service, new)
        return (was.breaker_state, self.breaker_open(was, now)) != (
            new.breaker_state,
            self.breaker_open(new, now),
        )

    def record_timeout(self, service: str, *, now: float) -> bool:
        """A call got no answer in time. True when this one made the service unavailable."""
        cfg = self.config
        was = self.view(service)
        count = was.consecutive_timeouts + 1
        new = replace(was, consecutive_timeouts=count)
        became = count >= cfg.timeouts_to_unavailable and not self.is_unavailable(was, now)
        if became:
            new = replace(
                new,
                unavailable_until=now + cfg.timeout_unavailable_s,
                reason=f"{count} consecutive calls without an answer",
            )
        self._set(service, new)
        return became

    def record_answer(self, service: str) -> None:
        """The service answered (a result or any error): it is reachable."""
        was = self.view(service)
        if was.consecutive_timeouts:
            self._set(service, replace(was, consecutive_timeouts=0))

    def infrastructure_error(
        self,
        component: str,
        *,
        severity: str,
        message: str,
        now: float,
        estimated_resolution: str | None = None,
    ) -> bool:
        """A tier-3 notice. True if this component was not already in trouble."""
        if severity in _IGNORED_SEVERITIES:
            return False
        seconds = recovery_seconds(estimated_resolution, now)
        ttl = max(self.config.infra_issue_ttl_s, seconds or 0.0)
        fresh = not self.infra_active(component, now)
        self.infra[component] = InfraIssue(component, severity, message, now + ttl)
        return fresh

    def infrastructure_recovered(self, component: str, *, now: float) -> bool:
        active = self.infra_active(component, now)
        self.infra.pop(component, None)
        return active

    # ------------------------------------------------------------ questions

    def is_unavailable(self, view: ServiceView, now: float) -> bool:
        return view.unavailable_until is not None and now < view.unavailable_until

    def breaker_open(self, view: ServiceView, now: float) -> bool:
        return view.breaker_open_until is not None and now < view.breaker_open_until

    def infra_active(self, component: str, now: float) -> bool:
        issue = self.infra.get(component)
        return issue is not None and now < issue.until

    def any_infra(self, components: frozenset[str], now: float) -> bool:
        return any(self.infra_active(c, now) for c in components)

    def is_read(self, method: str) -> bool:
        lowered = method.lower()
        return lowered.startswith(self.config.read_prefixes)

    def plan(
        self,
        service: str,
        method: str,
        *,
        base_timeout: float,
        now: float,
        offline: bool = False,
        write: bool | None = None,
    ) -> CallPlan:
        """Decide how to make (or not make) a call. ``write`` overrides the name-based guess."""
        cfg = self.config
        view = self.view(service)
        warnings: list[str] = []
        timeout = base_timeout
        if self.any_infra(BROKER_COMPONENTS, now):
            timeout = min(
                max(base_timeout, base_timeout * cfg.broker_trouble_timeout_factor), cfg.max_timeout_s
            )
            warnings.append("messaging is degraded: some features may be slower than usual")
        if offline:
            warnings.append("offline: not connected to the platform")
        if self.breaker_open(view, now):
            assert view.breaker_open_until is not None
            return CallPlan(
                "fail_fast",
                timeout,
                reason="circuit breaker open",
                circuit_open=True,
                retry_after=view.breaker_open_until - now,
                serve_stale=True,
                warnings=tuple(warnings),
            )
        if self.is_unavailable(view, now):
            assert view.unavailable_until is not None
            return CallPlan(
                "fail_fast",
                timeout,
                reason=view.reason or "service unavailable",
                retry_after=view.unavailable_until - now,
                serve_stale=True,
                warnings=tuple(warnings),
            )
        is_write = (not self.is_read(method)) if write is None else write
        if is_write and self.any_infra(DATABASE_COMPONENTS, now):
            issue = next(self.infra[c] for c in DATABASE_COMPONENTS if self.infra_active(c, now))
            return CallPlan(
                "defer_write",
                timeout,
                reason=f"writes deferred: {issue.message}",
                retry_after=issue.until - now,
                warnings=(*warnings, "data changes are paused"),
            )
        return CallPlan("call", timeout, serve_stale=offline, warnings=tuple(warnings))
