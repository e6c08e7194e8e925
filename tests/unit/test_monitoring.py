"""The service monitor's decisions: breaker from outcomes, health from presence and windows."""

from __future__ import annotations

from policies.breaker.outcomes import UNANSWERED
from policies.breaker.settings import load_breaker_policy
from policies.health.monitor import MonitorCore
from policies.health.status import load_health_policy
from policies.observation.correlation import ServiceDelta
from protocol import parse_model
from protocol.system import ServiceRecovered, ServiceUnavailable


def core(now: float = 0.0, **overrides: object) -> MonitorCore:
    settings = load_breaker_policy().for_service("A").model_copy(update={"open_timeout": 5.0, **overrides})
    return MonitorCore(service="A", cluster_id="c", breaker=settings, health=load_health_policy(), now=now)


def delta(outcomes=(), trials=(), presence=None, calls=None, methods=None) -> ServiceDelta:  # type: ignore[no-untyped-def]
    d = ServiceDelta("A", calls=len(outcomes) if calls is None else calls, outcomes=list(outcomes),
                     trials=list(trials), presence=presence)
    d.methods = methods or {"getUser": len(outcomes)}
    return d


def test_internal_errors_open_breaker_and_view_refuses() -> None:
    """10 internal errors open the breaker; the observers' view says open until now+open_timeout."""
    m = core()
    r = m.apply([delta([(0.01, -32603)] * 10)], now=1.0)
    assert [e["to"] for e in r.breaker_events] == ["open"]
    assert r.breaker_events[0]["reason"] == "Circuit opened due to 100% failure rate"
    assert r.view.state == "open" and r.view.open_until == 6.0 and r.view.trial_permits == 3
    assert r.snapshot is not None


def test_caller_errors_never_open() -> None:
    """100 % validation errors: no breaker event, health stays healthy."""
    m = core()
    r = m.apply([delta([(0.01, -32001)] * 50)], now=1.0)
    assert r.breaker_events == () and r.summary["breaker"] == "closed" and r.summary["status"] == "healthy"


def test_trials_half_open_then_close() -> None:
    """After open_timeout, trial outcomes move open -> half_open -> closed."""
    m = core()
    m.apply([delta([(0.01, -32603)] * 10)], now=1.0)
    r = m.apply([delta(trials=[(0.01, None)] * 3, calls=3)], now=7.0)
    assert [e["to"] for e in r.breaker_events] == ["half_open", "closed"]
    assert r.view.state == "closed"


def test_all_instances_offline_is_down_and_recovery() -> None:
    """Presence offline for every instance: service_unavailable at once, breaker opened, pending to
    be answered; back online: service_recovered after damping."""
    m = core()
    m.apply([delta([(0.01, None)] * 3, presence={"i1": True, "i2": True})], now=1.0)
    r = m.apply([delta(presence={"i1": False, "i2": False}, calls=0)], now=2.0)
    assert r.health_message is not None and r.health_message["type"] == "service_unavailable"
    msg = parse_model(ServiceUnavailable, r.health_message)
    assert msg.reason == "no_running_pods" and msg.details.running_pods == 0 and msg.details.total_pods == 2
    assert msg.affected_operations == ["getUser"]
    assert r.unavailable is not None and r.unavailable.retry_after_s > 0
    assert [e["to"] for e in r.breaker_events] == ["open"]
    m.apply([delta(presence={"i1": True}, calls=0)], now=3.0)
    r = m.apply([delta(calls=0)], now=3.25)
    assert r.health_message is not None
    rec = parse_model(ServiceRecovered, r.health_message)
    assert rec.previous_status == "down" and rec.downtime_seconds == 1.25
    assert r.unavailable is None


def test_hung_service_is_degraded_poor_response_rate() -> None:
    """Unanswered calls: breaker opens on failures, health degraded with poor_response_rate."""
    m = core()
    r1 = m.apply([delta([(30.0, UNANSWERED)] * 10)], now=31.0)
    r2 = m.apply([delta(calls=0)], now=31.25)
    assert [e["to"] for e in r1.breaker_events] == ["open"]
    assert r2.health_message is not None and r2.health_message["type"] == "service_degraded"
    assert "poor_response_rate" in r2.health_message["reasons"]


def test_restore_resumes_breaker_and_health() -> None:
    """A monitor rebuilt from its snapshot keeps the open breaker and the announced status."""
    m = core()
    r = m.apply([delta([(0.01, -32603)] * 10)], now=1.0)
    assert r.snapshot is not None
    again = MonitorCore(service="A", cluster_id="c", breaker=m.breaker_settings, health=m.health_policy,
                        now=2.0, restored=r.snapshot)
    assert again.view(2.0).state == "open" and again.view(2.0).open_until == 6.0


def test_alert_rules_resolve_only_what_fired() -> None:
    """Health and breaker decisions become alerts; a recovery resolves only alerts that fired."""
    from policies.alerting.rules import FiringSet, alerts_for_breaker, alerts_for_health

    fs = FiringSet()
    degraded = fs.filter(alerts_for_health({"type": "service_degraded", "service": "A", "reasons": ["x"]}, "c", 1.0), 1.0)
    assert [(a["labels"]["alertname"], a["endsAt"]) for a in degraded] == [("ServiceDegraded", None)]
    opened = fs.filter(alerts_for_breaker({"service": "A", "to": "open", "reason": "r"}, "c", 2.0), 2.0)
    assert opened[0]["labels"]["severity"] == "error" and opened[0]["labels"]["component"] == "service"
    recovered = fs.filter(alerts_for_health({"type": "service_recovered", "service": "A"}, "c", 3.0), 3.0)
    assert [(a["labels"]["alertname"], a["endsAt"]) for a in recovered] == [("ServiceDegraded", 3.0)]


def test_half_open_stall_hands_out_new_permits() -> None:
    """A half-open breaker that hears of no trial for long re-issues permits (a new epoch)."""
    m = core()
    m.apply([delta([(0.01, -32603)] * 10)], now=1.0)
    r = m.apply([delta(trials=[(0.01, None)], calls=1)], now=7.0)
    assert r.view.state == "half_open"
    quiet = m.apply([delta(calls=0)], now=8.0)
    assert quiet.view.epoch == r.view.epoch
    stalled = m.apply([delta(calls=0)], now=7.0 + 11.0)
    assert stalled.view.epoch > r.view.epoch and stalled.view.trial_permits > 0
