"""One service's monitor, as pure code: breaker + health applied to the observers' deltas.

The ``ServiceMonitor`` actor is a shell around :class:`MonitorCore`: it feeds each tick's
:class:`~policies.observation.correlation.ServiceDelta` (merged from all observers) and returns the
:class:`MonitorResult` — breaker events, a health announcement with its wire message, the view
observers need to fast-fail, and the summary line for the health topic. No clock reads, no I/O.

Down means unavailable: the breaker is opened with the health reason (so new calls are refused
at once) and observers answer every pending call with -32503 "Service Temporarily Unavailable".
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from policies.breaker.circuit import CircuitBreaker
from policies.breaker.outcomes import UNANSWERED, is_failure
from policies.breaker.settings import BreakerSettings
from policies.breaker.transitions import BadBreakerSnapshot, BreakerState
from policies.breaker.windows import TimeWindow
from policies.health.status import (
    HealthDecision,
    HealthInputs,
    HealthPolicy,
    HealthState,
    HealthStatus,
    evaluate,
)
from policies.health.window_state import SegmentCache, dump_window, restore_window
from policies.observation.correlation import ServiceDelta
from protocol.system import (
    DegradedDetails,
    ServiceDegraded,
    ServiceHealthEntry,
    ServiceRecovered,
    ServiceUnavailable,
    UnavailableDetails,
)

_REFUSING = frozenset({BreakerState.OPEN, BreakerState.FORCED_OPEN})
MAX_INSTANCES = 256
"""Presence instances kept per service; a new instance beyond it is counted in ``instancesDropped``."""
MAX_AFFECTED_OPERATIONS = 20
"""Methods listed in ``affectedOperations``; the rest are counted in ``affectedOperationsOmitted``."""
MAX_METHODS = 200
"""Methods whose call counts are kept (and restored: the first 100)."""
MAX_REASONS = 16
WINDOW_SAVE_INTERVAL_S = 5.0
"""While the health window matters (a status other than healthy observed or announced), new calls
in it are saved at most this often; a restart loses at most this many seconds of them."""


@dataclass(frozen=True, slots=True)
class BreakerView:
    """What observers need to fast-fail calls: state, open deadline, trial permits."""

    state: str
    open_until: float
    trial_permits: int
    epoch: int = 0
    """Bumped when observers must hand out fresh trial permits: on every breaker transition, and
    when a half-open breaker has waited too long for its trials' outcomes."""


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Pending calls of this service are to be answered -32503 with these data."""

    reason: str
    estimated_recovery: str | None
    retry_after_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorResult:
    service: str
    breaker_events: tuple[dict[str, Any], ...] = ()
    health_message: dict[str, Any] | None = None
    """service_unavailable / service_degraded / service_recovered when the status changed."""
    health: HealthDecision | None = None
    view: BreakerView
    unavailable: Unavailable | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    snapshot: dict[str, Any] | None = None
    """State to persist (only when something worth restoring changed)."""
    calls: dict[str, Any] | None = None
    """Cumulative call counts and duration histogram (``policies.metrics.calls.CallTotals.snapshot``)."""
    health_published: bool = False
    """``health_message`` was already published by the observer, as the event of the service's last
    instance going offline (``policies.health.outage``): the supervisor does not publish it again."""


class MonitorCore:
    """Breaker, health and presence of one service."""

    def __init__(self, *, service: str, cluster_id: str, breaker: BreakerSettings, health: HealthPolicy,
                 now: float, restored: dict[str, Any] | None = None) -> None:
        self.service = service
        self.cluster_id = cluster_id
        self.health_policy = health
        self.breaker_settings = breaker
        self.breaker = CircuitBreaker(service=service, config=breaker, now=now)
        self.health_state = HealthState()
        self.instances: dict[str, bool] = {}
        self.pods: dict[str, Any] | None = None
        self.window = TimeWindow(length_s=health.degraded.response_window, slow_call_s=breaker.slow_call_duration)
        self.methods: dict[str, int] = {}
        self.last_success: float | None = None
        self.down_since: float | None = None
        self.started = now
        self.instances_dropped = 0
        self._epoch = 0
        self._last_trial = now
        self._trial_stall_s = max(10.0, 2.0 * breaker.open_timeout)
        self._now = now
        self._window_dirty = False
        """Calls went into the window since the last snapshot."""
        self._window_saved_at = now
        self._window_segments: SegmentCache = {}
        self._window_mattered = False
        """The last snapshot's window said something other than healthy."""
        self.restore_refused = 0
        """Parts of the saved snapshot refused as invalid (a corrupt or hostile document)."""
        if restored:
            self._restore(restored, now)

    # -- persistence ----------------------------------------------------------------------

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The state to persist: breaker, health (with its damping), presence, and the health
        window's recent calls with their times (``policies.health.window_state``)."""
        at = self._now if now is None else now
        h = self.health_state
        return {
            "version": 1,
            "breaker": self.breaker.snapshot(),
            "health": {"announced": h.announced.value, "reasons": list(h.reasons), "since": h.since,
                       "candidate": None if h.candidate is None else h.candidate.value,
                       "candidateSince": h.candidate_since, "candidateCount": h.candidate_count},
            "instances": dict(self.instances),
            "downSince": self.down_since,
            "methods": sorted(self.methods)[:100],
            "lastSuccess": self.last_success,
            "started": self.started,
            "window": dump_window(self.window, at, self._window_segments),
        }

    def _restore(self, data: dict[str, Any], now: float) -> None:
        """Rebuild from ``snapshot()``; an older snapshot (no window) restores what it has, and
        anything invalid is left at its default and counted in ``restore_refused``."""
        b = data.get("breaker")
        if isinstance(b, dict):
            try:
                self.breaker = CircuitBreaker.restore(b, config=self.breaker_settings, now=now)
            except BadBreakerSnapshot:
                self.restore_refused += 1
        self.health_state = self._restore_health(data.get("health"))
        instances = data.get("instances")
        items = list(instances.items())[:MAX_INSTANCES] if isinstance(instances, dict) else []
        self.instances = {str(k): bool(v) for k, v in items}
        self.down_since = self._time(data.get("downSince"), now)
        self.last_success = self._time(data.get("lastSuccess"), now)
        self.started = self._time(data.get("started"), now) or now
        methods = data.get("methods")
        self.methods = dict.fromkeys((str(m) for m in methods[:100]), 0) if isinstance(methods, list) else {}
        if "window" in data:
            report = restore_window(self.window, data["window"], now)
            self.restore_refused += report.refused
            self._window_mattered = True  # saved again at the next change, whatever it holds

    def _restore_health(self, h: object) -> HealthState:
        if not isinstance(h, dict):
            return HealthState()
        try:
            reasons = h.get("reasons") or ()
            if not isinstance(reasons, list | tuple):
                raise ValueError("reasons")
            candidate = h.get("candidate")
            count = h.get("candidateCount", 0)
            return HealthState(
                announced=HealthStatus(h.get("announced", "healthy")),
                reasons=tuple(str(r) for r in reasons[:MAX_REASONS]),
                since=self._time(h.get("since"), math.inf),
                candidate=None if candidate is None else HealthStatus(candidate),
                candidate_since=self._time(h.get("candidateSince"), math.inf),
                candidate_count=count if type(count) is int and 0 <= count <= 1_000_000 else 0,
            )
        except ValueError:
            self.restore_refused += 1
            return HealthState()

    def _time(self, value: object, latest: float) -> float | None:
        """A saved time: a finite number not after ``latest``, else None (counted when present)."""
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
                and value <= latest:
            return float(value)
        self.restore_refused += 1
        return None

    # -- the tick -------------------------------------------------------------------------

    def view(self, now: float) -> BreakerView:
        b = self.breaker
        retry = b.retry_after(now)
        state = b.state
        open_until = now + retry if state is BreakerState.OPEN and retry is not None else 0.0
        permits = self.breaker_settings.half_open_max_calls if state in (BreakerState.OPEN,
                                                                          BreakerState.HALF_OPEN) else 0
        if state is BreakerState.HALF_OPEN and now - self._last_trial > self._trial_stall_s:
            self._epoch += 1  # trials lost on the way (e.g. answered for a down service): try again
            self._last_trial = now
        return BreakerView(state.value, open_until, permits, self._epoch)

    def apply(self, deltas: Iterable[ServiceDelta], now: float, pods: dict[str, Any] | None = None) -> MonitorResult:
        """Feed one tick's deltas (from one or more observers) and decide."""
        events: list[dict[str, Any]] = []
        calls = 0
        persist = False
        for d in deltas:
            calls += d.calls
            for m, n in d.methods.items():
                if len(self.methods) < MAX_METHODS or m in self.methods:
                    self.methods[m] = self.methods.get(m, 0) + n
            if d.last_success is not None:
                self.last_success = max(self.last_success or 0.0, d.last_success)
            if d.presence:
                self._presence(d.presence)
                persist = True
            for dur, code in d.outcomes:
                self.window.add(now, dur, code)
            self._window_dirty |= bool(d.outcomes or d.trials)
            events.extend(e.to_wire(self.cluster_id) for e in self.breaker.on_results(now, d.outcomes))
            for dur, code in d.trials:
                self._last_trial = now
                self.window.add(now, dur, code)
                if self.breaker.state is BreakerState.OPEN:
                    perm = self.breaker.try_acquire(now)
                    if perm.event is not None:
                        events.append(perm.event.to_wire(self.cluster_id))
                events.extend(e.to_wire(self.cluster_id) for e in self.breaker.on_result(now, dur, code))
        if pods is not None:
            self.pods = pods
        decision, self.health_state = evaluate(self._inputs(now), self.health_state, self.health_policy)
        message = None
        unavailable = None
        if decision.changed:
            persist = True
            message = self._health_message(decision, now)
            if decision.status is HealthStatus.DOWN:
                self.down_since = now
                reason = decision.reasons[0] if decision.reasons else "service_unavailable"
                if self.breaker.allows(BreakerState.OPEN) and self.breaker.state not in _REFUSING:
                    events.extend(e.to_wire(self.cluster_id) for e in self.breaker.preemptive_open(
                        now, f"Circuit opened: service unavailable ({reason})"))
            elif decision.previous is HealthStatus.DOWN:
                self.down_since = None
        if decision.status is HealthStatus.DOWN:
            reason = decision.reasons[0] if decision.reasons else "service_unavailable"
            unavailable = Unavailable(reason, decision.estimated_recovery, decision.retry_after_s or 60.0)
        if events:
            persist = True
            self._epoch += 1
            self._last_trial = now
        self._now = max(self._now, now)
        matters = decision.status is not HealthStatus.HEALTHY or decision.observed is not HealthStatus.HEALTHY
        if persist or self._window_worth_saving(matters, now):
            persist = True
            self._window_mattered = matters
            self._window_dirty = False
            self._window_saved_at = now
        return MonitorResult(
            service=self.service,
            breaker_events=tuple(events),
            health_message=message,
            health=decision if decision.changed else None,
            view=self.view(now),
            unavailable=unavailable,
            summary=self._summary(now, decision),
            snapshot=self.snapshot(now) if persist else None,
        )

    def _window_worth_saving(self, matters: bool, now: float) -> bool:
        """Whether the window alone calls for a snapshot: what it says changed since the last one
        (healthy or not), or it holds new calls, says something other than healthy, and the last
        save is ``WINDOW_SAVE_INTERVAL_S`` old."""
        due = self._window_dirty and now - self._window_saved_at >= WINDOW_SAVE_INTERVAL_S
        return matters != self._window_mattered or (matters and due)

    def _presence(self, changes: dict[str, bool]) -> None:
        for instance, online in changes.items():
            if instance in self.instances or len(self.instances) < MAX_INSTANCES:
                self.instances[instance] = online
            else:
                self.instances_dropped += 1

    def preemptive_open(self, now: float, reason: str) -> tuple[dict[str, Any], ...]:
        self._now = max(self._now, now)
        if not self.breaker.allows(BreakerState.OPEN) or self.breaker.state in _REFUSING:
            return ()
        self._epoch += 1
        return tuple(e.to_wire(self.cluster_id) for e in self.breaker.preemptive_open(now, reason))

    def _inputs(self, now: float) -> HealthInputs:
        m = self.window.metrics(now)
        snap = m.snapshot
        unanswered = m.outcomes.get(UNANSWERED, 0)
        server_errors = sum(n for code, n in m.outcomes.items() if is_failure(code))
        online = sum(1 for v in self.instances.values() if v)
        pods = self.pods or {}
        return HealthInputs(
            now=now,
            instances_online=online,
            instances_total=len(self.instances),
            pods_running=pods.get("running"),
            pods_ready=pods.get("ready"),
            pods_total=pods.get("total"),
            pod_failure_reason=pods.get("failureReason"),
            calls=snap.calls,
            responses=snap.calls - unanswered,
            server_errors=server_errors,
            p95_s=m.p95,
        )

    def _summary(self, now: float, decision: HealthDecision) -> dict[str, Any]:
        """This service's entry in the health summary (``protocol.system.ServiceHealthEntry``)."""
        m = self.window.metrics(now)
        span = min(self.window.length_s, max(now - self.started, 1.0))
        p95 = m.p95
        return ServiceHealthEntry(
            status=decision.status.value,
            breaker=self.breaker.state.value,
            error_rate=_fraction(decision.error_rate) or 0.0,
            p95_ms=None if p95 is None else round(p95 * 1000.0, 2),
            calls_per_second=round(m.snapshot.calls / span, 3),
            instances_dropped=self.instances_dropped or None,
        ).to_wire()

    def _health_message(self, decision: HealthDecision, now: float) -> dict[str, Any]:
        """The tier-2 message of a health change, built through its ``protocol.system`` model."""
        correlation = f"incident-{uuid.uuid4()}"
        reason = decision.reasons[0] if decision.reasons else "unknown"
        if decision.status is HealthStatus.DOWN:
            online = sum(1 for v in self.instances.values() if v)
            pods = self.pods or {}
            return ServiceUnavailable(
                cluster_id=self.cluster_id, service=self.service, timestamp=now, correlation_id=correlation,
                reason=reason,
                details=UnavailableDetails(
                    running_pods=pods.get("running", online),
                    total_pods=pods.get("total", len(self.instances)),
                    last_successful_response=self.last_success,
                    error_rate=_fraction(decision.error_rate) or 0.0,
                    failure_reason=pods.get("failureReason") or reason,
                ),
                estimated_recovery=decision.estimated_recovery,
                affected_operations=sorted(self.methods)[:MAX_AFFECTED_OPERATIONS],
                affected_operations_omitted=max(0, len(self.methods) - MAX_AFFECTED_OPERATIONS) or None,
                impact="high",
            ).to_wire()
        if decision.status is HealthStatus.DEGRADED:
            return ServiceDegraded(
                cluster_id=self.cluster_id, service=self.service, timestamp=now, correlation_id=correlation,
                reason=reason,
                reasons=list(decision.reasons),
                details=DegradedDetails(error_rate=_fraction(decision.error_rate),
                                        response_rate=_fraction(decision.response_rate)),
                estimated_recovery=decision.estimated_recovery,
                impact="medium",
            ).to_wire()
        downtime = None if self.down_since is None else round(now - self.down_since, 3)
        return ServiceRecovered(
            cluster_id=self.cluster_id, service=self.service, timestamp=now, correlation_id=correlation,
            previous_status=decision.previous.value, downtime_seconds=downtime,
        ).to_wire()


def _fraction(percent: float | None) -> float | None:
    """The health policy's percentages → the wire's fractions 0..1."""
    return None if percent is None else round(min(max(percent / 100.0, 0.0), 1.0), 4)
