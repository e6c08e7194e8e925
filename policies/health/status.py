"""Service health: the seed's ``DetermineHealthStatus`` and observer rules, with flap damping.

``evaluate(inputs, state, config) -> (HealthDecision, new_state)`` is pure. Classification::

    down      no instance online (presence), no running pods, or no ready pods
    degraded  ready pods < 50 % of total, server errors > 10 % of calls, p95 > 5 s,
              or fewer than 50 % of >= 5 calls answered (< 20 %: poor_response_rate)
    healthy   otherwise

A new status is announced only once it has held for ``damping.{status}.evaluations`` evaluations
(or ``hold`` seconds, when set); by default down is announced at once, the others after two.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from pydantic import Field, field_validator

from policies.common.config import Duration, Percent, PolicyModel, load_policy


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"


class Reason(StrEnum):
    """Reason codes, as on the wire (``reason`` of ``service_unavailable``/``service_degraded``)."""

    NO_RUNNING_PODS = "no_running_pods"
    PODS_NOT_READY = "pods_not_ready"
    POD_RESTART_LOOP = "pod_restart_loop"
    CONTAINER_OOM_KILLED = "container_oom_killed"
    POOR_RESPONSE_RATE = "poor_response_rate"
    LOW_RESPONSE_RATE = "low_response_rate"
    HIGH_ERROR_RATE = "high_error_rate"
    HIGH_LATENCY = "high_latency"


class DownRules(PolicyModel):
    no_instance_online: bool = True
    no_running_pods: bool = True
    no_ready_pods: bool = True


class DegradedRules(PolicyModel):
    ready_pods_below: Percent = 50.0
    error_rate_above: Percent = 10.0
    error_rate_min_calls: int = Field(default=1, ge=1)
    p95_above: Duration = 5.0
    response_rate_below: Percent = 50.0
    poor_response_rate_below: Percent = 20.0
    response_rate_min_calls: int = Field(default=5, ge=1)
    response_window: Duration = 120.0


class Damping(PolicyModel):
    evaluations: int = Field(default=2, ge=1)
    hold: Duration | None = None


class Recovery(PolicyModel):
    estimate: str
    retry_after: Duration


def _default_damping() -> dict[HealthStatus, Damping]:
    return {
        HealthStatus.DOWN: Damping(evaluations=1),
        HealthStatus.DEGRADED: Damping(),
        HealthStatus.HEALTHY: Damping(),
    }


class HealthPolicy(PolicyModel):
    """``policies/health.yaml``."""

    down: DownRules = DownRules()
    degraded: DegradedRules = DegradedRules()
    damping: dict[HealthStatus, Damping] = Field(default_factory=_default_damping)
    recovery: dict[str, Recovery] = Field(
        default_factory=lambda: {"default": Recovery(estimate="unknown", retry_after=60.0)}
    )

    @field_validator("recovery")
    @classmethod
    def _known_reasons(cls, value: dict[str, Recovery]) -> dict[str, Recovery]:
        allowed = {r.value for r in Reason} | {"default"}
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ValueError(f"unknown reason {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
        return value

    def damping_for(self, status: HealthStatus) -> Damping:
        return self.damping.get(status) or _default_damping()[status]

    def recovery_for(self, reason: str) -> Recovery:
        return (
            self.recovery.get(reason)
            or self.recovery.get("default")
            or Recovery(estimate="unknown", retry_after=60.0)
        )


HealthConfig = HealthPolicy


def load_health_policy(overrides_dir: Path | str | None = None) -> HealthPolicy:
    """Load ``health.yaml`` (defaults, then the override directory's copy)."""
    return load_policy(HealthPolicy, "health.yaml", overrides_dir)


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthInputs:
    """What is known about one service at ``now``. ``None`` means "not known" (no pod source)."""

    now: float
    instances_online: int = 0
    """Instances whose presence is online."""
    instances_total: int = 0
    """Instances ever seen on presence (0: presence tells nothing)."""
    pods_running: int | None = None
    pods_ready: int | None = None
    pods_total: int | None = None
    pod_failure_reason: str | None = None
    """A pod-level cause from Kubernetes, e.g. ``container_oom_killed`` or ``pod_restart_loop``."""
    calls: int = 0
    """Calls in the response window."""
    responses: int = 0
    """Of those, the ones answered at all (any result or error)."""
    server_errors: int = 0
    """Of those, outcomes that count against the service (timeouts and -32603 included)."""
    p95_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthState:
    """What ``evaluate`` carries between evaluations (persistable with ``dataclasses.asdict``)."""

    announced: HealthStatus = HealthStatus.HEALTHY
    reasons: tuple[str, ...] = ()
    since: float | None = None
    candidate: HealthStatus | None = None
    candidate_since: float | None = None
    candidate_count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthDecision:
    """The result of one evaluation."""

    status: HealthStatus
    """The announced status after this evaluation."""
    reasons: tuple[str, ...]
    changed: bool
    """True when ``status`` is newly announced: publish service_unavailable/degraded/recovered."""
    previous: HealthStatus
    observed: HealthStatus
    """This evaluation's raw classification (may still be damped)."""
    observed_reasons: tuple[str, ...]
    estimated_recovery: str | None
    retry_after_s: float | None
    response_rate: float | None
    """Percentage of calls answered, ``None`` without calls."""
    error_rate: float | None
    """Percentage of calls that failed on the service's side, ``None`` without calls."""


def classify(inputs: HealthInputs, config: HealthPolicy) -> tuple[HealthStatus, tuple[str, ...]]:
    """The raw status and its reasons for one set of inputs (no damping)."""
    i, d = inputs, config.degraded
    down: list[str] = []
    if config.down.no_instance_online and i.instances_total > 0 and i.instances_online == 0:
        down.append(Reason.NO_RUNNING_PODS)
    if i.pods_total is not None:
        if config.down.no_running_pods and i.pods_running == 0:
            if Reason.NO_RUNNING_PODS not in down:
                down.append(Reason.NO_RUNNING_PODS)
        elif config.down.no_ready_pods and i.pods_ready == 0:
            down.append(Reason.PODS_NOT_READY)
    if down:
        if i.pod_failure_reason and i.pod_failure_reason not in down:
            down.append(i.pod_failure_reason)
        return HealthStatus.DOWN, tuple(down)

    degraded: list[str] = []
    if i.pods_total and i.pods_ready is not None and i.pods_ready * 100.0 < d.ready_pods_below * i.pods_total:
        degraded.append(Reason.PODS_NOT_READY)
    if i.calls >= d.error_rate_min_calls and i.server_errors * 100.0 > d.error_rate_above * i.calls:
        degraded.append(Reason.HIGH_ERROR_RATE)
    if i.p95_s is not None and i.p95_s > d.p95_above:
        degraded.append(Reason.HIGH_LATENCY)
    if i.calls >= d.response_rate_min_calls and i.responses * 100.0 < d.response_rate_below * i.calls:
        poor = i.responses * 100.0 < d.poor_response_rate_below * i.calls
        degraded.append(Reason.POOR_RESPONSE_RATE if poor else Reason.LOW_RESPONSE_RATE)
    if degraded and i.pod_failure_reason and i.pod_failure_reason not in degraded:
        degraded.append(i.pod_failure_reason)
    if degraded:
        return HealthStatus.DEGRADED, tuple(degraded)
    return HealthStatus.HEALTHY, ()


def evaluate(
    inputs: HealthInputs, state: HealthState, config: HealthPolicy
) -> tuple[HealthDecision, HealthState]:
    """Classify, damp flapping, and say whether a new status is to be announced."""
    observed, observed_reasons = classify(inputs, config)
    now = inputs.now
    previous = state.announced
    if observed is state.announced:
        new_state = replace(
            state,
            reasons=observed_reasons,
            since=now if state.since is None else state.since,
            candidate=None,
            candidate_since=None,
            candidate_count=0,
        )
    else:
        same = state.candidate is observed
        count = state.candidate_count + 1 if same else 1
        since = state.candidate_since if same and state.candidate_since is not None else now
        rule = config.damping_for(observed)
        if count >= rule.evaluations or (rule.hold is not None and now - since >= rule.hold):
            new_state = HealthState(announced=observed, reasons=observed_reasons, since=now)
        else:
            new_state = replace(state, candidate=observed, candidate_since=since, candidate_count=count)
    status = new_state.announced
    reasons = new_state.reasons
    estimate: str | None = None
    retry_after: float | None = None
    if status is not HealthStatus.HEALTHY and reasons:
        rec = config.recovery_for(reasons[0])
        estimate, retry_after = rec.estimate, rec.retry_after
    calls = inputs.calls
    decision = HealthDecision(
        status=status,
        reasons=reasons,
        changed=status is not previous,
        previous=previous,
        observed=observed,
        observed_reasons=observed_reasons,
        estimated_recovery=estimate,
        retry_after_s=retry_after,
        response_rate=inputs.responses * 100.0 / calls if calls else None,
        error_rate=inputs.server_errors * 100.0 / calls if calls else None,
    )
    return decision, new_state


__all__ = [
    "Damping",
    "HealthConfig",
    "HealthDecision",
    "HealthInputs",
    "HealthPolicy",
    "HealthState",
    "HealthStatus",
    "Reason",
    "Recovery",
    "classify",
    "evaluate",
    "load_health_policy",
]
