"""Infrastructure health (tier 3): check results, per-component hysteresis, and the wire messages.

Pure: the probes in ``adapters/probes`` produce :class:`ProbeResult`s; an actor feeds each one to a
:class:`ComponentTracker` with ``now`` and publishes what the returned :class:`Transition` asks for,
using :func:`infrastructure_error_message` / :func:`infrastructure_recovered_message`.

Tracker states and moves (N = ``failures_before_error``, M = ``successes_before_recovery``)::

    unknown/healthy --bad--> failing --(N bad in a row)--> error        emits ERROR
    error --bad, worse severity-------------------------> error        emits ESCALATED
    error --(M good in a row)---------------------------> healthy      emits RECOVERED
    any --config_error----------------------------------> misconfigured emits MISCONFIGURED (once)
    misconfigured --good--------------------------------> healthy      emits CONFIG_RESOLVED
                                                                        (and RECOVERED if an outage was open)

A check is *bad* when its result is not ``ok`` (unreachable, timed out, or a problem of warning
severity or worse). A configuration error (bad API key) is not an outage: it is reported once
as its own state and never counts towards N.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, model_validator

from policies.common.config import Duration, PolicyModel, load_policy
from policies.infrastructure.thresholds import (
    Thresholds,
)
from protocol.system import InfraComponent, InfrastructureError, InfrastructureRecovered

POLICY_FILE = "infrastructure.yaml"
Severity = Literal["info", "warning", "error", "critical", "emergency"]
Component = InfraComponent
"""A component name (bounded pattern); the registered ones are ``adapters.probes.PROBES``."""
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(get_args(Severity))}
BROKER_COMPONENTS = frozenset({"mqtt_broker", "emqx_cluster"})
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


# -- check results ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One finding of a check: a stable ``code`` (see YAML ``severities``/``recommendations``)."""

    code: str
    severity: Severity
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    """The outcome of one bounded check of one component.

    ``ok`` is False when the check failed (``error`` set) or found a problem of warning severity
    or worse; ``details`` are seed-shaped (camelCase keys). ``config_error`` marks a failure that
    is our configuration's fault (e.g. HTTP 401), not the component's.
    """

    component: str
    ok: bool
    latency_ms: float
    details: Mapping[str, Any] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    error: str | None = None
    config_error: bool = False

    @classmethod
    def build(
        cls, *, component: str, latency_ms: float, details: Mapping[str, Any] | None = None,
        problems: Sequence[Problem] = (), error: str | None = None, config_error: bool = False,
    ) -> ProbeResult:
        """A result whose ``ok`` follows from its error and problems."""
        worst = max((SEVERITY_RANK[p.severity] for p in problems), default=-1)
        ok = error is None and not config_error and worst < SEVERITY_RANK["warning"]
        return cls(component=component, ok=ok, latency_ms=latency_ms, details=dict(details or {}),
                   problems=tuple(problems), error=error, config_error=config_error)


# -- configuration ------------------------------------------------------------------------------


class ComponentSettings(PolicyModel):
    """Per-component overrides of ``defaults`` plus message texts."""

    interval: Duration | None = None
    timeout: Duration | None = None
    failures_before_error: int | None = Field(default=None, ge=1)
    successes_before_recovery: int | None = Field(default=None, ge=1)
    severities: dict[str, Severity] = Field(default_factory=dict)
    impact: str = "service_degradation"
    estimated_resolution: str = "unknown"


class Defaults(PolicyModel):
    interval: Duration = 30.0
    timeout: Duration = 5.0
    failures_before_error: int = Field(default=2, ge=1)
    successes_before_recovery: int = Field(default=1, ge=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class ComponentConfig:
    """The effective settings of one component (defaults merged with its overrides)."""

    component: str
    interval: float
    timeout: float
    failures_before_error: int
    successes_before_recovery: int
    severities: Mapping[str, Severity]
    impact: str
    estimated_resolution: str


class InfrastructurePolicy(PolicyModel):
    """``policies/infrastructure.yaml``."""

    defaults: Defaults = Field(default_factory=Defaults)
    components: dict[Component, ComponentSettings] = Field(default_factory=dict)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    recommendations: dict[str, list[str]] = Field(default_factory=dict)
    affected_topics: list[str] = Field(default_factory=list)
    service_dependencies: dict[str, list[Component]] = Field(default_factory=dict)
    """Service → the components it needs (``UserManagement: [postgresql_cluster, redis]``): a
    component's outage lists these services as affected."""

    @model_validator(mode="after")
    def _check_timing(self) -> InfrastructurePolicy:
        for name in self.thresholds.model_extra or {}:
            if not _NAME.match(name):
                raise ValueError(f"thresholds.{name}: not a component name (lower-case letters, digits, _)")
        # A component without a section runs on the defaults: checking them covers it.
        for key, cfg in (("defaults", self.component("")),
                         *((f"components.{n}", self.component(n)) for n in self.components)):
            if cfg.interval < 1.0:
                raise ValueError(f"{key}.interval = {cfg.interval:g}s: must be at least 1s")
            if not 0 < cfg.timeout <= cfg.interval:
                raise ValueError(f"{key}.timeout = {cfg.timeout:g}s: must be > 0 and at most "
                                 f"the interval ({cfg.interval:g}s), or checks would overlap")
        return self

    def thresholds_for(self, name: str) -> Any:
        """The ``thresholds.<name>`` section: its typed model, or the mapping as written (empty
        when absent) for a component the model does not name."""
        typed = type(self.thresholds).model_fields.get(name)
        if typed is not None:
            return getattr(self.thresholds, name)
        return dict((self.thresholds.model_extra or {}).get(name) or {})

    def component(self, name: str) -> ComponentConfig:
        """Effective settings for ``name`` (a component without a section gets the defaults)."""
        own = self.components.get(name, ComponentSettings())
        d = self.defaults
        return ComponentConfig(
            component=name,
            interval=own.interval if own.interval is not None else d.interval,
            timeout=own.timeout if own.timeout is not None else d.timeout,
            failures_before_error=own.failures_before_error or d.failures_before_error,
            successes_before_recovery=own.successes_before_recovery or d.successes_before_recovery,
            severities=own.severities, impact=own.impact, estimated_resolution=own.estimated_resolution,
        )


def load_infrastructure_policy(overrides_dir: Path | str | None = None) -> InfrastructurePolicy:
    """The shipped defaults merged with ``overrides_dir/infrastructure.yaml`` when given."""
    return load_policy(InfrastructurePolicy, POLICY_FILE, overrides_dir)


def effective_severity(result: ProbeResult, config: ComponentConfig) -> Severity:
    """The worst severity among the result's problems after YAML overrides (``error`` when a
    failed result carries no problem)."""
    sevs = [config.severities.get(p.code, p.severity) for p in result.problems]
    if not sevs:
        return "info" if result.ok else "error"
    return max(sevs, key=SEVERITY_RANK.__getitem__)


# -- hysteresis ---------------------------------------------------------------------------------


class Status(StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    FAILING = "failing"  # bad checks seen, fewer than N: nothing announced yet
    ERROR = "error"
    MISCONFIGURED = "misconfigured"


class TransitionKind(StrEnum):
    ERROR = "error"
    ESCALATED = "escalated"
    RECOVERED = "recovered"
    MISCONFIGURED = "misconfigured"
    CONFIG_RESOLVED = "config_resolved"


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackerState:
    status: Status = Status.UNKNOWN
    failures: int = 0
    successes: int = 0
    severity: Severity | None = None  # announced severity of the open outage
    outage_since: float | None = None  # first bad check of the announced outage
    first_bad: float | None = None  # first bad check of the current run (while failing)


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """Something to announce. ``correlation_id`` is the same for an outage's error, escalations
    and recovery (derived from component and start), so receivers can pair them."""

    component: str
    kind: TransitionKind
    previous: Status
    status: Status
    severity: Severity
    result: ProbeResult
    at: float
    outage_since: float | None = None
    downtime_s: float | None = None
    correlation_id: str | None = None


def outage_correlation_id(component: str, since: float) -> str:
    digest = hashlib.sha1(f"{component}:{since:.6f}".encode()).hexdigest()[:16]
    return f"infra-{component}-{digest}"


class ComponentTracker:
    """Hysteresis for one component: feed every result in order, act on the returned transition."""

    def __init__(self, *, config: ComponentConfig) -> None:
        self.config = config
        self.state = TrackerState()

    def observe(self, result: ProbeResult, now: float) -> Transition | None:
        s, cfg = self.state, self.config
        if result.config_error:
            new = replace(s, status=Status.MISCONFIGURED, failures=0, successes=0, first_bad=None)
            self.state = new
            if s.status is Status.MISCONFIGURED:
                return None
            return self._emit(TransitionKind.MISCONFIGURED, s.status, "warning", result, now)
        if result.ok:
            successes = s.successes + 1
            if s.status is Status.MISCONFIGURED:
                self.state = replace(s, status=Status.ERROR if s.outage_since is not None else Status.HEALTHY,
                                     failures=0, successes=successes)
                if s.outage_since is None:
                    return self._emit(TransitionKind.CONFIG_RESOLVED, s.status, "info", result, now)
                s = self.state
            if s.status is Status.ERROR:
                if successes < cfg.successes_before_recovery:
                    self.state = replace(s, failures=0, successes=successes)
                    return None
                since = s.outage_since
                self.state = TrackerState(status=Status.HEALTHY, successes=successes)
                return self._emit(TransitionKind.RECOVERED, Status.ERROR, "info", result, now, since=since,
                                  downtime=None if since is None else max(0.0, now - since))
            self.state = TrackerState(status=Status.HEALTHY, successes=successes)
            return None
        # a bad check
        severity = effective_severity(result, cfg)
        failures = s.failures + 1
        if s.status is Status.ERROR or (s.status is Status.MISCONFIGURED and s.outage_since is not None):
            self.state = replace(s, status=Status.ERROR, failures=failures, successes=0)
            if s.severity is not None and SEVERITY_RANK[severity] > SEVERITY_RANK[s.severity]:
                self.state = replace(self.state, severity=severity)
                return self._emit(TransitionKind.ESCALATED, s.status, severity, result, now, since=s.outage_since)
            return None
        since = s.first_bad if s.first_bad is not None else now
        if failures < cfg.failures_before_error:
            self.state = TrackerState(status=Status.FAILING, failures=failures, first_bad=since)
            return None
        self.state = TrackerState(status=Status.ERROR, failures=failures, severity=severity, outage_since=since)
        return self._emit(TransitionKind.ERROR, s.status, severity, result, now, since=since)

    def _emit(
        self, kind: TransitionKind, previous: Status, severity: Severity, result: ProbeResult, now: float,
        *, since: float | None = None, downtime: float | None = None,
    ) -> Transition:
        cid = outage_correlation_id(result.component, since) if since is not None else None
        return Transition(component=result.component, kind=kind, previous=previous, status=self.state.status,
                          severity=severity, result=result, at=now, outage_since=since, downtime_s=downtime,
                          correlation_id=cid)


# -- wire messages ------------------------------------------------------------------------------


def _ts(now: float | datetime) -> datetime:
    return now if isinstance(now, datetime) else datetime.fromtimestamp(now, UTC)


def describe(result: ProbeResult, config: ComponentConfig) -> str:
    """One line for humans: the worst problem's message, else the error."""
    if result.problems:
        worst = max(result.problems,
                    key=lambda p: SEVERITY_RANK[config.severities.get(p.code, p.severity)])
        more = len(result.problems) - 1
        return worst.message + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")
    return result.error or f"{result.component} check failed"


def infrastructure_error_message(
    *, cluster_id: str, result: ProbeResult, policy: InfrastructurePolicy, now: float | datetime,
    severity: Severity | None = None, correlation_id: str, affected_services: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The seed's "System-Wide Infrastructure Error Format" for ``result``, validated by
    :class:`protocol.system.InfrastructureError`. Broker components list affected topics (YAML
    ``affected_topics``, ``{cluster}`` filled in); others the ``affected_services`` given."""
    cfg = policy.component(result.component)
    sev = severity or effective_severity(result, cfg)
    recs: list[str] = []
    for p in result.problems:
        for r in policy.recommendations.get(p.code, []):
            if r not in recs:
                recs.append(r)
    details = dict(result.details)
    details["problems"] = [{"code": p.code, "severity": cfg.severities.get(p.code, p.severity),
                            "message": p.message} for p in result.problems]
    if result.error:
        details["error"] = result.error
    is_broker = result.component in BROKER_COMPONENTS
    msg = InfrastructureError(
        cluster_id=cluster_id, component=result.component, severity=sev, message=describe(result, cfg),
        impact=cfg.impact, details=details,
        affected_topics=[t.replace("{cluster}", cluster_id) for t in policy.affected_topics] if is_broker else None,
        affected_services=None if is_broker else list(affected_services or []),
        recommendations=recs, timestamp=_ts(now), correlation_id=correlation_id,
        estimated_resolution=cfg.estimated_resolution,
        escalation_required=SEVERITY_RANK[sev] >= SEVERITY_RANK["critical"],
    )
    return msg.to_wire()


def infrastructure_recovered_message(
    *, cluster_id: str, component: str, now: float | datetime, correlation_id: str,
    downtime_s: float | None = None, message: str | None = None,
) -> dict[str, Any]:
    """``infrastructure_recovered``, validated by :class:`protocol.system.InfrastructureRecovered`."""
    text = message or (f"{component} recovered" + (f" after {downtime_s:.0f}s" if downtime_s is not None else ""))
    return InfrastructureRecovered(cluster_id=cluster_id, component=component, message=text,
                                   downtime_seconds=downtime_s, timestamp=_ts(now),
                                   correlation_id=correlation_id).to_wire()


def transition_message(
    transition: Transition, *, cluster_id: str, policy: InfrastructurePolicy, correlation_id: str,
    affected_services: Sequence[str] | None = None,
) -> dict[str, Any] | None:
    """The message an actor publishes for ``transition`` (None for config transitions, which are
    logged and alerted, not broadcast as outages)."""
    cid = transition.correlation_id or correlation_id
    if transition.kind in (TransitionKind.ERROR, TransitionKind.ESCALATED):
        return infrastructure_error_message(
            cluster_id=cluster_id, result=transition.result, policy=policy, now=transition.at,
            severity=transition.severity, correlation_id=cid, affected_services=affected_services)
    if transition.kind is TransitionKind.RECOVERED:
        return infrastructure_recovered_message(
            cluster_id=cluster_id, component=transition.component, now=transition.at, correlation_id=cid,
            downtime_s=transition.downtime_s)
    return None
