"""The supervisor's decisions (pure): what each observer tick, infrastructure report, health step
and housekeeping round leads to, returned as effects (``policies.supervision.effects``) for the
supervisor actor to carry out. :class:`Supervision` keeps the state these decisions need (breakers,
summaries, learned dependencies, firing alerts, the ops board); it does no I/O and reads no clock:
every method that decides takes ``now``.

Per observer tick the actor calls :meth:`Supervision.observe` once, :meth:`~Supervision.on_result`
for each monitor result, then :meth:`~Supervision.alerts_due`:

- a breaker event is published on ``system/{cluster}/circuit-breaker`` and as the retained
  ``…/circuit-breaker/{Service}`` state (both through the outbox), and raises or resolves an alert;
- a health change (service_unavailable/degraded/recovered) is published on the errors topic, unless
  the observer already published it (the last instance's going offline, ``policies.health.outage``): then
  it is only kept in the outbox as published, so there is never a second service_unavailable;
- a service going down plans the cascade (``policies.breaker.cascade``): its dependents' breakers are opened
  (:class:`OpenBreaker`, whose events come back through :meth:`~Supervision.on_breaker_events`)
  before ``cascading_failure_prevented`` is published.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from policies.alerting.rules import FiringSet, alerts_for_breaker, alerts_for_health
from policies.breaker.cascade import DependencyGraph, DependencyPolicy, plan_cascade
from policies.health.monitor import MonitorResult
from policies.metrics.rules import MetricRulesPolicy
from policies.metrics.rules_eval import RulesState, evaluate_rules, restore_state
from policies.metrics.series import inflight_by_service
from policies.supervision.effects import (
    Alert,
    ClearRetained,
    Effect,
    OpenBreaker,
    Persist,
    Publish,
    ReloadIncidents,
    RetireMonitor,
    SaveDependencies,
)
from policies.supervision.health import (
    HealthMemo,
    alert_message,
    health_due,
    store_alert,
    system_health,
    system_message,
)
from policies.supervision.ops_board import OpsBoard
from policies.supervision.status_view import metric_families
from protocol import topics
from protocol.system import BreakerState, BreakerStateChange, CascadingFailurePrevented

BOARD_SYNC_S = 30.0
"""How often the open incidents the status page shows are read again from the store."""
_OPEN = ("open", "forced_open")


class Supervision:
    """See the module docstring. ``configured``: the services named in the settings (never retired,
    always real); ``metric_rules``: the embedded metric rules (None: off)."""

    def __init__(self, *, cluster: str, configured: Collection[str], dependency_policy: DependencyPolicy,
                 metric_rules: MetricRulesPolicy | None = None) -> None:
        self.cluster = cluster
        self.configured = frozenset(configured)
        self.dependency_policy = dependency_policy
        self.graph = DependencyGraph(config=dependency_policy)
        self.metric_rules = metric_rules
        self.rules_state = RulesState()
        self.breakers: dict[str, str] = {}
        self.summaries: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, dict[str, Any]] = {}
        self.infrastructure: dict[str, Any] = {}
        self.counters: dict[int, dict[str, int]] = {}
        self.inflight: dict[int, dict[str, int]] = {}
        self.known_services: list[str] = []
        """Services monitored before a restart (their monitors are started again)."""
        self.real_services: set[str] = set(configured)
        """Configured or announced by an instance: only these count towards the cascade guard."""
        self.trackers: dict[str, set[int]] = {}
        """Observers tracking each service (a retired service's monitor stops when none is left)."""
        self.edges: dict[tuple[str, str], int] = {}
        """Edges learned since the last :class:`SaveDependencies`."""
        self.pending_alerts: list[dict[str, Any]] = []
        self.firing = FiringSet()
        self.board = OpsBoard()
        """Open incidents, active actions, recent alerts: what the status shows under ``ops``."""
        self.board_synced = 0.0
        self.health = HealthMemo()

    # -- restart --------------------------------------------------------------------------------

    def restore(self, *, dependencies: Iterable[tuple[str, str, float, int]],
                monitor_states: Mapping[str, Mapping[str, Any] | None], firing: Iterable[dict[str, Any]],
                incidents: Iterable[Any]) -> None:
        """After a restart, from the store: learned dependencies ``(caller, callee, last_seen, count)``,
        the monitors' saved states (their breakers guard calls from the first tick and feed the
        cascade), the firing alerts (held as sent long ago, so the first housekeeping re-sends them
        and a recovery resolves them) and the open incidents. Replaces what it restores: calling it
        again (a start retried after a failure) gives the same state."""
        self.graph = DependencyGraph(config=self.dependency_policy)
        for caller, callee, last_seen, count in dependencies:
            self.graph.observe_edge(caller, callee, last_seen, count)
        self.known_services = sorted(monitor_states)
        for name, saved in monitor_states.items():
            breaker = (saved or {}).get("breaker")
            if isinstance(breaker, Mapping) and isinstance(breaker.get("state"), str):
                self.breakers[name] = breaker["state"]
        held = list(firing)
        for alert in held:
            self.firing.hold(alert, sent_at=float("-inf"))
        if self.metric_rules is not None:  # so a breach that ends meanwhile resolves them
            self.rules_state = restore_state(self.metric_rules, [a for a, _ in self.firing.firing.values()])
        self.board.restore_incidents(incidents)

    # -- observers' ticks -----------------------------------------------------------------------

    def observe(self, index: int, counters: dict[str, int], edges: Mapping[tuple[str, str], int],
                inflight: dict[str, int] | None, now: float) -> None:
        """Observer ``index``'s counters, in-flight calls and learned edges of one tick."""
        self.counters[index] = counters
        if inflight is not None:
            self.inflight[index] = inflight
        if edges:
            self.graph.observe_edges(edges, now)
            for e, n in edges.items():
                self.edges[e] = self.edges.get(e, 0) + n

    def on_result(self, r: MonitorResult, now: float, monitored: Collection[str]) -> list[Effect]:
        """One monitor's result of a tick; ``monitored``: the services with a monitor."""
        self.summaries[r.service] = r.summary
        if r.calls is not None:
            self.calls[r.service] = r.calls
        out = self.on_breaker_events(r.breaker_events, now)
        if r.health_message is None:
            return out
        errors = topics.system_errors(self.cluster)
        message = system_message(r.health_message)
        effect = Persist(errors, message, kind="tier2") if r.health_published else Publish(errors, message, kind="tier2")
        out.append(effect)
        wire = effect.payload()
        self.pending_alerts += alerts_for_health(wire, self.cluster, now)
        if wire.get("type") == "service_unavailable":
            out += self.cascade(r.service, now, monitored)
        return out

    def on_breaker_events(self, events: Iterable[Mapping[str, Any]], now: float) -> list[Effect]:
        """Breaker transitions (``CircuitBreakerEvent.to_wire``): the event, the retained state, alerts."""
        out: list[Effect] = []
        for ev in events:
            change = BreakerStateChange.model_validate({**ev, "clusterId": self.cluster})
            self.breakers[change.service] = change.to_state
            state = BreakerState(cluster_id=self.cluster, service=change.service, state=change.to_state,
                                 since=change.timestamp, reason=change.reason, retry_after=change.retry_after,
                                 retry_after_seconds=change.retry_after_seconds, open_until=change.retry_after,
                                 timestamp=change.timestamp)
            out.append(Publish(topics.circuit_breaker_events(self.cluster), change, kind="breaker"))
            out.append(Publish(topics.circuit_breaker_state(self.cluster, change.service), state, retain=True,
                               kind="breaker"))
            self.pending_alerts += alerts_for_breaker(change.to_wire(), self.cluster, now)
        return out

    def cascade(self, service: str, now: float, monitored: Collection[str]) -> list[Effect]:
        """``service`` went down: open its dependents' breakers (within the guard), then say so."""
        open_now = [n for n, st in self.breakers.items() if st in _OPEN]
        plan = plan_cascade(self.graph, service, list(monitored), open_now, now, self.dependency_policy,
                            cluster_id=self.cluster, real_services=self.real_services)
        out: list[Effect] = [OpenBreaker(p.service, p.reason) for p in plan.preemptive_opens if p.service in monitored]
        if plan.message is not None:
            msg = CascadingFailurePrevented.model_validate(
                {**plan.message, "correlationId": f"cascade-{service}-{int(now * 1000)}"})
            out.append(Publish(topics.system_errors(self.cluster), msg, kind="cascade"))
        return out

    # -- alerts ---------------------------------------------------------------------------------

    def add_alerts(self, alerts: Iterable[dict[str, Any]]) -> None:
        self.pending_alerts += alerts

    def alerts_due(self, now: float, *, alert_manager: bool) -> list[Effect]:
        """The pending alerts that are news (``FiringSet``): to the alert manager, or without one
        published on ``system/{cluster}/alerts`` straight away."""
        if not self.pending_alerts:
            return []
        alerts, self.pending_alerts = self.firing.filter(self.pending_alerts, now), []
        if not alerts:
            return []
        self.board.alerts_sent(alerts, now)
        if alert_manager:
            return [Alert(tuple(alerts))]
        return [Publish(topics.system_alerts(self.cluster), alert_message(a, self.cluster, now)) for a in alerts]

    def store_unavailable(self, error: str, now: float) -> None:
        self.pending_alerts.append(store_alert(self.cluster, now, error=error))

    def store_recovered(self, now: float) -> None:
        self.pending_alerts.append(store_alert(self.cluster, now, error=None))

    def on_rules(self, status: Mapping[str, Any], now: float) -> None:
        """The embedded metric rules on this supervisor's own status; their alerts go the usual way."""
        if self.metric_rules is None:
            return
        ev = evaluate_rules(self.metric_rules, metric_families(status, age_s=0.0), self.rules_state, now)
        self.rules_state = ev.state
        self.pending_alerts += ev.alerts

    # -- other actors ---------------------------------------------------------------------------

    def on_infrastructure(self, component: str, health: dict[str, Any], message: Mapping[str, Any] | None,
                          alert: dict[str, Any] | None) -> list[Effect]:
        """An infrastructure checker's report: health for the summary; its message on the errors
        topic (a critical or emergency infrastructure_error also on the emergency topic)."""
        self.infrastructure[component] = health
        out: list[Effect] = []
        if message is not None:
            publish = Publish(topics.system_errors(self.cluster), system_message(message), kind="tier3")
            out.append(publish)
            wire = publish.payload()
            if wire.get("type") == "infrastructure_error" and wire.get("severity") in ("critical", "emergency"):
                out.append(Publish(topics.system_emergency(self.cluster), publish.message, kind="tier3"))
        if alert is not None:
            self.pending_alerts.append(alert)
        return out

    def relay(self, topic: str, payload: Mapping[str, Any], *, retain: bool, kind: str) -> Publish:
        """A message another actor built (incidents, enforcement actions), persisted then published."""
        self.board.published(kind, payload)
        return Publish(topic, payload, retain=retain, kind=kind)

    # -- services -------------------------------------------------------------------------------

    def track(self, services: Iterable[str], index: int | None, observers: int) -> None:
        """Observer ``index`` (None: every one of ``observers``) tracks ``services``."""
        for name in services:
            self.trackers.setdefault(name, set()).update(range(max(1, observers)) if index is None else (index,))

    def retire(self, index: int, services: Iterable[str]) -> list[Effect]:
        """Observer ``index`` stopped tracking these idle traffic-only services; once no observer
        tracks one, its monitor goes, and its retained breaker state with it."""
        out: list[Effect] = []
        for name in services:
            trackers = self.trackers.get(name, set())
            trackers.discard(index)
            if trackers or name in self.real_services or name in self.configured:
                continue
            self.trackers.pop(name, None)
            self.summaries.pop(name, None)
            self.calls.pop(name, None)
            if self.breakers.pop(name, None) is not None:
                out.append(ClearRetained(topics.circuit_breaker_state(self.cluster, name)))
            out.append(RetireMonitor(name))
        return out

    # -- periodic ---------------------------------------------------------------------------------

    def health_step(self, now: float) -> list[Effect]:
        """The retained health summary, when it changed or has been silent too long (not kept in
        the outbox: it is recomputed anyway)."""
        health = system_health(self.cluster, now, self.summaries, self.infrastructure, self.counters.values())
        self.health, due = health_due(self.health, health, now)
        return [Publish(topics.system_health(self.cluster), health, retain=True)] if due else []

    def housekeeping(self, now: float, *, security: bool, alert_manager: bool) -> list[Effect]:
        """Every few seconds: re-read the open incidents now and then (one resolved outside operate
        leaves the board), re-send the conditions still held, save the learned edges."""
        out: list[Effect] = []
        if security and now >= self.board_synced + BOARD_SYNC_S:
            self.board_synced = now
            out.append(ReloadIncidents(self.board.incident_changes))
        if alert_manager:
            held = self.firing.due(now)
            if held:
                out.append(Alert(tuple(held)))
        if self.edges:
            edges, self.edges = self.edges, {}
            out.append(SaveDependencies(tuple((a, b, n) for (a, b), n in edges.items()), now))
        return out

    def status(self, now: float, monitored: Sequence[str]) -> dict[str, Any]:
        """The policy's part of the supervisor's status (the actor adds bus, store and outbox figures)."""
        return {"health": system_health(self.cluster, now, self.summaries, self.infrastructure,
                                        self.counters.values()).to_wire(),
                "breakers": dict(self.breakers), "monitors": sorted(monitored), "ops": self.board.summary(now),
                "metricRules": self.rules_state.summary() if self.metric_rules is not None else None,
                "calls": dict(self.calls), "inflight": inflight_by_service(self.inflight.values(), monitored)}


__all__ = ["BOARD_SYNC_S", "Supervision"]
