"""The supervisor's decisions (``policies.supervision.core``), fed what the real producers emit: monitor
results from ``MonitorCore``, the observer's outage event through ``OutageWatch``, infrastructure
messages from ``policies.infrastructure.checks``. Each test checks the effects returned, not I/O."""

from __future__ import annotations

from typing import Any

import pytest

from policies.alerting.rules import alerts_for_breaker
from policies.breaker.cascade import DependencyPolicy
from policies.breaker.settings import load_breaker_policy
from policies.common.config import load_policy_text
from policies.health.monitor import BreakerView, MonitorCore, MonitorResult
from policies.health.outage import OutageWatch
from policies.health.status import HealthPolicy, load_health_policy
from policies.infrastructure.checks import (
    ProbeResult,
    infrastructure_error_message,
    load_infrastructure_policy,
)
from policies.observation.correlation import ServiceDelta
from policies.supervision.core import BOARD_SYNC_S, Supervision
from policies.supervision.effects import (
    Alert,
    ClearRetained,
    OpenBreaker,
    Persist,
    Publish,
    ReloadIncidents,
    RetireMonitor,
    SaveDependencies,
)
from policies.supervision.health import HEALTH_MAX_SILENCE_S, HealthMemo, health_due, roll_up, system_health
from protocol import parse_model
from protocol.security import AlertMessage
from protocol.system import BreakerState, BreakerStateChange, CascadingFailurePrevented, ServiceUnavailable

T0 = 1_734_258_600.0
SHOP = "dependencies:\n  Orders: [Payments]\n  Shipping: [Orders]\ncascade_depth: 2\nmax_preemptive_open_percent: 100\n"
ERRORS = "system/c/errors"


def supervision(deps: str = SHOP, configured: tuple[str, ...] = ("Payments", "Orders", "Shipping")) -> Supervision:
    return Supervision(cluster="c", configured=configured,
                       dependency_policy=load_policy_text(DependencyPolicy, deps))


def monitor(service: str) -> MonitorCore:
    breaker = load_breaker_policy().for_service(service).model_copy(update={"open_timeout": 5.0})
    return MonitorCore(service=service, cluster_id="c", breaker=breaker, health=load_health_policy(), now=T0)


def delta(service: str, outcomes: list[tuple[float, int | None]] = (), presence: dict[str, bool] | None = None,
          calls: int | None = None) -> ServiceDelta:  # type: ignore[assignment]
    d = ServiceDelta(service, calls=len(outcomes) if calls is None else calls, outcomes=list(outcomes),
                     presence=presence)
    d.methods = {"pay": len(outcomes)}
    return d


def down(core: MonitorCore) -> MonitorResult:
    """The monitor's own conclusion that its service went down (every instance offline)."""
    core.apply([delta(core.service, [(0.01, None)] * 3, presence={"i1": True})], now=T0 + 1)
    r = core.apply([delta(core.service, presence={"i1": False}, calls=0)], now=T0 + 2)
    assert r.health_message is not None and r.health_message["type"] == "service_unavailable"
    return r


def publishes(effects: list[Any], topic: str | None = None) -> list[Publish]:
    return [e for e in effects if isinstance(e, Publish) and (topic is None or e.topic == topic)]


# -- health roll-up and republish ------------------------------------------------------------------

@pytest.mark.parametrize(("statuses", "expected"), [
    ([], "healthy"),
    (["healthy", "unknown"], "healthy"),
    (["healthy", "degraded"], "degraded"),
    (["healthy", "down"], "degraded"),
    (["down", "degraded"], "degraded"),
    (["down", "down"], "down"),
])
def test_health_roll_up(statuses: list[str], expected: str) -> None:
    """The worst service's status, except that the system is down only when every service is."""
    assert roll_up(statuses) == expected


def test_health_summary_sums_the_observers_counters() -> None:
    """The observed section is the sum over observers; the message parses as SystemHealth."""
    h = system_health("c", T0, {"B": {"status": "healthy", "breaker": "closed"}}, {},
                      [{"calls": 3, "timeouts": 1}, {"calls": 4, "capped": 2}])
    wire = h.to_wire()
    assert wire["observed"]["calls"] == 7 and wire["observed"]["timeouts"] == 1 and wire["observed"]["capped"] == 2
    assert wire["status"] == "healthy" and wire["services"]["B"]["breaker"] == "closed"


def test_health_is_republished_on_change_or_after_silence_only() -> None:
    """First summary: published. Same content a moment later (new timestamp only): not. A change:
    published. Unchanged for HEALTH_MAX_SILENCE_S: published again."""
    summaries = {"B": {"status": "healthy", "breaker": "closed"}}
    memo, due = health_due(HealthMemo(), system_health("c", T0, summaries, {}, []), T0)
    assert due
    memo, due = health_due(memo, system_health("c", T0 + 1, summaries, {}, []), T0 + 1)
    assert not due
    changed = {"B": {"status": "degraded", "breaker": "closed"}}
    memo, due = health_due(memo, system_health("c", T0 + 2, changed, {}, []), T0 + 2)
    assert due
    memo, due = health_due(memo, system_health("c", T0 + 2 + HEALTH_MAX_SILENCE_S - 0.1, changed, {}, []),
                           T0 + 2 + HEALTH_MAX_SILENCE_S - 0.1)
    assert not due
    _, due = health_due(memo, system_health("c", T0 + 2 + HEALTH_MAX_SILENCE_S, changed, {}, []),
                        T0 + 2 + HEALTH_MAX_SILENCE_S)
    assert due


def test_health_step_publishes_retained_without_the_outbox() -> None:
    """The health step's one effect is a retained publish with no outbox kind (recomputed anyway)."""
    s = supervision()
    [p] = s.health_step(T0)
    assert p == Publish("system/c/health", p.message, retain=True, kind=None)
    assert s.health_step(T0 + 0.25) == []


# -- breaker events and health messages -------------------------------------------------------------

def test_breaker_event_is_published_as_event_and_retained_state_with_an_alert() -> None:
    """A breaker opening (from the real MonitorCore): the change on the events topic and the
    retained state, both through the outbox, parsed by their models; an error alert pending."""
    core = monitor("Payments")
    r = core.apply([delta("Payments", [(0.01, -32603)] * 10)], now=T0 + 1)
    s = supervision()
    effects = s.on_result(r, T0 + 1, ["Payments"])
    event, state = effects
    assert isinstance(event, Publish) and event.topic == "system/c/circuit-breaker" and event.kind == "breaker"
    assert isinstance(state, Publish) and state.topic == "system/c/circuit-breaker/Payments" and state.retain
    change = parse_model(BreakerStateChange, event.payload())
    st = parse_model(BreakerState, state.payload())
    assert change.to_state == "open" and st.state == "open" and st.retry_after == change.retry_after
    assert s.breakers == {"Payments": "open"}
    assert s.pending_alerts == alerts_for_breaker(change.to_wire(), "c", T0 + 1)


def test_service_down_is_published_through_the_outbox_with_its_alerts() -> None:
    """The monitor's own service_unavailable, not yet on the wire: published (tier2) on the errors
    topic; ServiceUnavailable fires and ServiceDegraded is resolved."""
    s = supervision(deps="dependencies: {}\n")
    effects = s.on_result(down(monitor("Payments")), T0 + 2, ["Payments"])
    [msg] = publishes(effects, ERRORS)
    assert msg.kind == "tier2" and isinstance(msg.message, ServiceUnavailable)
    assert not [e for e in effects if isinstance(e, Persist | OpenBreaker)]
    names = {(a["labels"]["alertname"], a["endsAt"] is None) for a in s.pending_alerts}
    assert ("ServiceUnavailable", True) in names and ("ServiceDegraded", False) in names


def test_no_second_service_unavailable_when_the_observer_published_it() -> None:
    """The observer already published the outage as an event (OutageWatch): the monitor's result
    comes marked, and the supervisor only records it in the outbox as published; the alerts are
    raised all the same and the cascade still runs."""
    watch = OutageWatch(cluster_id="c", health=HealthPolicy())
    core = monitor("Payments")
    core.apply([delta("Payments", [(0.01, None)] * 3, presence={"i1": True})], now=T0 + 1)
    watch.on_presence("Payments", "i1", True, T0 + 1)
    lost = watch.on_presence("Payments", "i1", False, T0 + 2)
    assert lost is not None and lost.message is not None  # the observer's event
    tick = watch.begin_tick()  # the tick that drains the offline
    [r], _ = watch.reconcile([core.apply([delta("Payments", presence={"i1": False}, calls=0)], T0 + 2)], tick, T0 + 2)
    assert r.health_published
    s = supervision()
    effects = s.on_result(r, T0 + 2, ["Payments", "Orders"])
    assert [p.payload()["type"] for p in publishes(effects, ERRORS)] == ["cascading_failure_prevented"]
    [kept] = [e for e in effects if isinstance(e, Persist)]
    assert kept.topic == ERRORS and kept.kind == "tier2" and kept.payload()["type"] == "service_unavailable"
    assert any(a["labels"]["alertname"] == "ServiceUnavailable" and a["endsAt"] is None for a in s.pending_alerts)
    assert OpenBreaker("Orders", "Dependency Payments is unavailable") in effects


def test_cascade_opens_dependents_before_saying_so() -> None:
    """Payments down: Orders (depends on it) and Shipping (via Orders) are opened before the
    cascading_failure_prevented message; their monitors' events come back as breaker publishes and
    count as open for the next cascade's guard."""
    s = supervision()
    monitored = ["Payments", "Orders", "Shipping"]
    effects = s.on_result(down(monitor("Payments")), T0 + 2, monitored)
    kinds = [type(e).__name__ for e in effects if not (isinstance(e, Publish) and e.kind == "breaker")]
    assert kinds == ["Publish", "OpenBreaker", "OpenBreaker", "Publish"]
    opens = [e for e in effects if isinstance(e, OpenBreaker)]
    assert [o.service for o in opens] == ["Orders", "Shipping"]
    assert opens[1].reason == "Dependency Payments is unavailable (via Orders)"
    cascade = parse_model(CascadingFailurePrevented, publishes(effects, ERRORS)[-1].payload())
    assert cascade.origin_service == "Payments" and cascade.affected_services == ["Orders", "Shipping"]
    assert effects.index(opens[-1]) < effects.index(publishes(effects, ERRORS)[-1])
    events = monitor("Orders").preemptive_open(T0 + 2, opens[0].reason)  # what the monitor answers
    back = s.on_breaker_events(events, T0 + 2)
    assert [p.topic for p in publishes(back)] == ["system/c/circuit-breaker", "system/c/circuit-breaker/Orders"]
    assert s.breakers["Orders"] == "open"
    assert OpenBreaker("Orders", opens[0].reason) not in s.cascade("Payments", T0 + 3, monitored)


def test_cascade_leaves_out_services_without_a_monitor() -> None:
    """A dependent nobody monitors has no breaker to open."""
    s = supervision()
    effects = s.on_result(down(monitor("Payments")), T0 + 2, ["Payments", "Orders"])
    assert [e.service for e in effects if isinstance(e, OpenBreaker)] == ["Orders"]


# -- alerts -----------------------------------------------------------------------------------------

def test_alerts_go_to_the_alert_manager_or_straight_to_the_bus() -> None:
    """With an alert manager: one Alert effect. Without: each alert published as an AlertMessage.
    A resolution of something that never fired is dropped."""
    firing = {"labels": {"alertname": "X", "severity": "error"}, "annotations": {}, "startsAt": T0, "endsAt": None}
    never = {"labels": {"alertname": "Y", "severity": "error"}, "annotations": {}, "startsAt": T0, "endsAt": T0}
    s = supervision()
    s.add_alerts([firing, never])
    assert s.alerts_due(T0, alert_manager=True) == [Alert((firing,))]
    assert s.alerts_due(T0, alert_manager=True) == []
    s.add_alerts([firing])
    [p] = s.alerts_due(T0 + 1, alert_manager=False)
    assert isinstance(p, Publish) and p.topic == "system/c/alerts" and p.kind is None
    assert parse_model(AlertMessage, p.payload()).status == "firing"


def test_store_outage_fires_and_recovery_resolves() -> None:
    s = supervision()
    s.store_unavailable("connection refused", T0)
    s.store_recovered(T0 + 5)
    [(a, ends_a), (b, ends_b)] = [(a["labels"]["alertname"], a["endsAt"]) for a in s.pending_alerts]
    assert a == b == "StoreUnavailable" and ends_a is None and ends_b == T0 + 5


# -- infrastructure, relays, services ---------------------------------------------------------------

@pytest.mark.parametrize(("severity", "topics"), [
    ("warning", ["system/c/errors"]),
    ("critical", ["system/c/errors", "system/c/emergency"]),
])
def test_infrastructure_error_on_errors_and_critical_also_on_emergency(severity: str, topics: list[str]) -> None:
    """An infrastructure_error (as the checker's policy builds it) is published tier3 on the errors
    topic; a critical one also on the emergency topic; the health goes into the summary."""
    result = ProbeResult(component="redis", ok=False, latency_ms=1.0, error="connection refused")
    msg = infrastructure_error_message(cluster_id="c", result=result, policy=load_infrastructure_policy(), now=T0,
                                       severity=severity, correlation_id="infra-1")  # type: ignore[arg-type]
    s = supervision()
    effects = s.on_infrastructure("redis", {"status": "down"}, msg, None)
    assert [(p.topic, p.kind) for p in publishes(effects)] == [(t, "tier3") for t in topics]
    assert s.infrastructure == {"redis": {"status": "down"}}


def test_relayed_message_keeps_topic_retain_and_kind() -> None:
    """A message another actor asks the supervisor to publish keeps its topic, retain and kind."""
    s = supervision()
    p = s.relay("system/c/x", {"a": 1}, retain=True, kind="finding")
    assert p == Publish("system/c/x", {"a": 1}, retain=True, kind="finding")


def test_idle_traffic_only_service_retires_when_no_observer_tracks_it() -> None:
    """Tracked by two observers: retired once both let go, with its retained breaker state cleared;
    a configured or announced service never retires."""
    s = supervision(configured=("Payments",))
    s.track(["Adhoc", "Payments"], None, 2)
    s.breakers["Adhoc"] = "closed"
    assert s.retire(0, ["Adhoc", "Payments"]) == []
    assert s.retire(1, ["Adhoc", "Payments"]) == [ClearRetained("system/c/circuit-breaker/Adhoc"),
                                                  RetireMonitor("Adhoc")]
    s.track(["Announced"], 0, 1)
    s.real_services.add("Announced")
    assert s.retire(0, ["Announced"]) == []


def test_housekeeping_saves_edges_resends_held_alerts_and_rereads_incidents() -> None:
    """Edges learned since the last round are saved as seen at ``now``; a held alert is re-sent
    once the refresh interval passed; the open incidents are re-read every BOARD_SYNC_S (security on)."""
    s = supervision()
    s.observe(0, {"calls": 1}, {("Orders", "Payments"): 3}, None, T0)
    held = {"labels": {"alertname": "X"}, "annotations": {}, "startsAt": T0, "endsAt": None}
    s.add_alerts([held])
    s.alerts_due(T0, alert_manager=True)
    first = s.housekeeping(T0 + BOARD_SYNC_S, security=True, alert_manager=True)
    assert first == [ReloadIncidents(0), SaveDependencies((("Orders", "Payments", 3),), T0 + BOARD_SYNC_S)]
    assert s.housekeeping(T0 + BOARD_SYNC_S + 1, security=True, alert_manager=True) == []
    refresh = T0 + s.firing.refresh_s
    assert s.housekeeping(refresh, security=False, alert_manager=True) == [Alert((held,))]
    assert s.housekeeping(refresh + 1, security=False, alert_manager=True) == []


def test_restore_twice_gives_the_same_state() -> None:
    """A start retried after a failure restores again: breakers, known services, held alerts and
    learned edges are the same as after one restore."""
    args: dict[str, Any] = {
        "dependencies": [("Orders", "Payments", T0, 5)],
        "monitor_states": {"Payments": {"breaker": {"state": "open"}}, "Orders": None, "Bad": {"breaker": 3}},
        "firing": [{"labels": {"alertname": "X"}, "annotations": {}, "startsAt": T0, "endsAt": None}],
        "incidents": []}
    once, twice = supervision(), supervision()
    once.restore(**args)
    twice.restore(**args)
    twice.restore(**args)
    for s in (once, twice):
        assert s.breakers == {"Payments": "open"} and s.known_services == ["Bad", "Orders", "Payments"]
        assert len(s.firing.firing) == 1
    assert once.graph.dependents_of("Payments", 1, T0) == twice.graph.dependents_of("Payments", 1, T0)


def test_status_carries_the_health_and_the_policy_state() -> None:
    s = supervision()
    s.on_result(MonitorResult(service="B", view=BreakerView("closed", 0.0, 0),
                              summary={"status": "down", "breaker": "open"}), T0, ["B"])
    st = s.status(T0, ["B"])
    assert st["health"]["status"] == "down" and st["monitors"] == ["B"] and st["metricRules"] is None
