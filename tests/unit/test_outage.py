"""``policies.health.outage``: the loss of a service's last online instance as an event, and its
reconciliation with the monitor's own conclusion (no second message, a recovery for every outage).

The end-to-end property runs the real ``MonitorCore`` as the monitor: whatever the presence
sequence and however ticks interleave with it, each outage is published exactly once (by the event
or, failing that, by the supervisor) and every published outage is followed by its recovery."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.clock import FakeClock
from actors.observer import ObserverBody
from actors.settings import OperateSettings
from adapters.mqtt.bus import Message
from adapters.testing.doubles import CapturingBus
from policies.breaker.settings import BreakerSettings
from policies.health.monitor import MAX_INSTANCES, BreakerView, MonitorCore, MonitorResult
from policies.health.outage import OutageWatch
from policies.health.status import Damping, DownRules, HealthPolicy, HealthStatus
from policies.observation.config import ObservationPolicy
from policies.observation.correlation import ServiceDelta
from protocol.system import ServiceRecovered, ServiceUnavailable


def watch(**health: object) -> OutageWatch:
    return OutageWatch(cluster_id="c", health=HealthPolicy.model_validate(health))


def result(service: str, status: str, message: dict[str, object] | None = None) -> MonitorResult:
    return MonitorResult(service=service, view=BreakerView("closed", 0.0, 0), health_message=message,
                         summary={"status": status})


def test_last_online_instance_going_offline_is_the_event() -> None:
    """Two instances: the first going offline is no event; the second is, with a ServiceUnavailable
    that parses through its model and the -32503 data of the health policy's recovery."""
    w = watch()
    assert w.on_presence("Users", "i1", True, 1.0) is None
    assert w.on_presence("Users", "i2", True, 1.0) is None
    assert w.on_presence("Users", "i1", False, 2.0) is None
    lost = w.on_presence("Users", "i2", False, 3.0)
    assert lost is not None and lost.service == "Users" and lost.instance == "i2"
    assert lost.message is not None
    msg = ServiceUnavailable.model_validate(lost.message)
    assert msg.service == "Users" and msg.cluster_id == "c" and msg.reason == "no_running_pods"
    assert msg.details.running_pods == 0 and msg.details.total_pods == 2
    assert lost.unavailable.reason == "no_running_pods" and lost.unavailable.retry_after_s > 0
    assert w.on_presence("Users", "i2", False, 3.1) is None  # the same Last Will again: no second event
    assert w.published == 1


def test_offline_of_an_instance_never_seen_online_is_no_event() -> None:
    """A retained offline delivered on subscribe, or an offline for a made-up instance of a service
    with none online, cannot publish anything."""
    w = watch()
    assert w.on_presence("Users", "ghost", False, 1.0) is None
    w.on_presence("Orders", "i1", True, 1.0)
    assert w.on_presence("Orders", "made-up", False, 1.0) is None
    assert w.published == 0


def test_no_event_when_the_policy_would_not_go_down_at_once_or_already_down() -> None:
    """Decided as the health policy decides: not with ``no_instance_online`` off or a damped DOWN, not
    for a service the monitors report down; an observer other than the owner gets the answers' data
    (for the pending calls it owns) but no message to publish."""
    for w in (watch(down=DownRules(no_instance_online=False)),
              watch(damping={HealthStatus.DOWN: Damping(evaluations=2)}),
              watch(damping={HealthStatus.DOWN: Damping(evaluations=1, hold=5.0)})):
        w.on_presence("Users", "i1", True, 1.0)
        assert w.on_presence("Users", "i1", False, 2.0) is None
    w = OutageWatch(cluster_id="c", health=HealthPolicy(), owner=False)
    w.on_presence("Users", "i1", True, 1.0)
    lost = w.on_presence("Users", "i1", False, 2.0)
    assert lost is not None and lost.message is None and w.published == 0 and w.announced == {}
    w = watch()
    w.on_presence("Users", "i1", True, 1.0)
    w.reconcile([result("Users", "down")], w.begin_tick(), 1.5)
    assert w.on_presence("Users", "i1", False, 2.0) is None


def test_reconcile_marks_the_confirmation_as_published_and_keeps_later_announcements() -> None:
    """The monitor's service_unavailable of a tick begun after the event is replaced by the published
    message and marked published; a tick begun before the event leaves the announcement waiting."""
    w = watch()
    w.on_presence("Users", "i1", True, 1.0)
    before = w.begin_tick()
    lost = w.on_presence("Users", "i1", False, 2.0)
    assert lost is not None and lost.message is not None
    out, recovered = w.reconcile([result("Users", "healthy")], before, 2.1)
    assert out[0].health_published is False and recovered == [] and "Users" in w.announced
    monitor_msg = {"type": "service_unavailable", "correlationId": "incident-monitor"}
    out, recovered = w.reconcile([result("Users", "down", monitor_msg)], w.begin_tick(), 2.2)
    assert out[0].health_published is True and out[0].health_message == lost.message and recovered == []
    assert w.announced == {}


def test_an_outage_the_monitor_never_saw_is_closed_with_a_recovery() -> None:
    """The instance was back before the next tick: the monitor stays healthy, so the watch returns a
    ServiceRecovered for the outage it published (same correlation id)."""
    w = watch()
    w.on_presence("Users", "i1", True, 1.0)
    lost = w.on_presence("Users", "i1", False, 2.0)
    assert lost is not None and lost.message is not None
    w.on_presence("Users", "i1", True, 2.05)
    out, recovered = w.reconcile([result("Users", "healthy")], w.begin_tick(), 2.25)
    assert out[0].health_published is False and len(recovered) == 1
    rec = ServiceRecovered.model_validate(recovered[0])
    assert rec.previous_status == "down" and rec.correlation_id == lost.message["correlationId"]
    assert rec.downtime_seconds == 0.25


def test_instances_per_service_are_bounded_and_counted() -> None:
    w = watch()
    for i in range(MAX_INSTANCES + 10):
        w.on_presence("Users", f"i{i}", True, 1.0)
    assert len(w.online["Users"]) == MAX_INSTANCES and w.refused == 10


events = st.lists(st.tuples(st.sampled_from(["i1", "i2", "i3"]), st.booleans(), st.booleans()), max_size=40)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_each_outage_is_published_once_and_recovered(seq: list[tuple[str, bool, bool]]) -> None:
    """Presence changes (instance, online) with a tick after some of them, against the real
    MonitorCore: every service_unavailable on the wire (event or supervisor) opens an outage that
    was not open, every service_recovered closes one, and after a final online instance none is open."""
    w = watch()
    monitor = MonitorCore(service="Users", cluster_id="c", breaker=BreakerSettings(), health=HealthPolicy(),
                          now=0.0)
    wire: list[str] = []
    delta = ServiceDelta("Users")
    now = 0.0

    def tick() -> None:
        nonlocal delta
        t = w.begin_tick()
        d, delta = delta, ServiceDelta("Users")
        out, recovered = w.reconcile([monitor.apply([d], now)], t, now)
        for r in out:
            if r.health_message is not None and not r.health_published:
                wire.append(r.health_message["type"])
        wire.extend(m["type"] for m in recovered)

    for instance, online, then_tick in [*seq, ("i1", True, True), ("i1", True, True)]:
        now += 0.01
        delta.presence = {**(delta.presence or {}), instance: online}
        lost = w.on_presence("Users", instance, online, now)
        if lost is not None and lost.message is not None:
            wire.append(lost.message["type"])
        if then_tick:
            tick()
    outage_open = False
    for t in wire:
        if t == "service_unavailable":
            assert not outage_open, wire
            outage_open = True
        elif t == "service_recovered":
            assert outage_open, wire
            outage_open = False
    assert not outage_open, wire


def test_observer_publishes_the_event_and_answers_pending_calls_at_once() -> None:
    """Through ObserverBody (its bus a CapturingBus): observer 0 queues the service_unavailable
    on system/c/errors as soon as its echo proves the broker up after the Last Will arrived, before
    any tick; observer 1 of two sees the same presence and publishes no message; each answers at once
    the pending calls it owns."""
    s = OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id="c", services=("Users",), observers=2)
    cores = [ObserverBody(settings=s, index=i, clock=FakeClock(), bus=CapturingBus(), policy=ObservationPolicy())
             for i in (0, 1)]
    for c in cores:
        c.bus.connected = True
    for i in range(4):
        call = json.dumps({"jsonrpc": "2.0", "id": i, "method": "m", "replyTo": f"session/s{i}/response"})
        for c in cores:
            c.on_call(Message("service/Users", call.encode()))
    for c in cores:
        c.instances.on_presence(Message("system/c/presence/Users/i1", b'{"status":"online"}'))
        c.instances.on_presence(Message("system/c/presence/Users/i1", b'{"status":"offline"}'))
    assert not [o for c in cores for o in c.bus.published if not o.topic.startswith("sfa-ops/probe/")]
    for c in cores:  # the broker returns each observer's echo
        [echo] = [o for o in c.bus.published if o.topic == c.instances.echo_topic]
        c.instances.on_echo(Message(echo.topic, echo.payload))
    errors = [o for o in cores[0].bus.published if o.topic == "system/c/errors"]
    assert len(errors) == 1
    ServiceUnavailable.model_validate_json(errors[0].payload)
    answers = sorted(o.topic for c in cores for o in c.bus.published if o.topic.startswith("session/"))
    assert answers == [f"session/s{i}/response" for i in range(4)]
    assert not [o for o in cores[1].bus.published if o.topic == "system/c/errors"]
