"""``policies.health.outage_hold``: an instance's offline is believed only once the broker proves it is still
up — so the Last Wills a stopping broker sends for every client are not taken for crashes — while a
real crash is still believed within an echo's round trip, and never lost."""

from __future__ import annotations

import json

from actors.clock import FakeClock
from actors.observer import ObserverBody
from actors.settings import OperateSettings
from adapters.mqtt.bus import Message
from adapters.testing.doubles import CapturingBus
from policies.health.outage_hold import MAX_HELD, Offline, OfflineHold
from policies.observation.config import ObservationPolicy


def hold(connected: bool = True, epoch: int = 1) -> OfflineHold:
    h = OfflineHold(echo_timeout=0.25, recheck=5.0)
    h.link(connected, epoch, 0.0)
    return h


def test_a_live_offline_waits_for_its_echo_and_is_believed_when_it_returns() -> None:
    h = hold()
    d = h.offline("Users", "i1", 1.0, was_online=True)
    assert not d.release and d.echo is not None
    assert h.due(1.1) == []  # the echo has 250 ms
    assert h.echoed(d.echo) == [Offline("Users", "i1", 1.0)]
    assert h.counters()["offlineConfirmed"] == 1 and not h.held


def test_an_echo_confirms_every_offline_held_before_it_not_after() -> None:
    h = hold()
    a = h.offline("Users", "i1", 1.0, was_online=True).echo
    b = h.offline("Orders", "i1", 1.0, was_online=True).echo
    assert a is not None and b is not None and a < b
    assert [o.service for o in h.echoed(a)] == ["Users"]
    assert [o.service for o in h.echoed(b)] == ["Orders"]


def test_an_offline_never_seen_online_and_an_online_pass_at_once() -> None:
    h = hold()
    assert h.offline("Users", "i1", 1.0, was_online=False).release
    assert not h.online("Users", "i1")  # nothing held: nothing cancelled
    assert not h.held


def test_an_echo_lost_on_a_live_connection_is_not_waited_for_beyond_its_timeout() -> None:
    h = hold()
    h.offline("Users", "i1", 1.0, was_online=True)
    h.link(True, 1, 1.3)
    assert h.due(1.3) == [Offline("Users", "i1", 1.0)]
    assert h.counters()["offlineBelievedLate"] == 1


def test_the_broker_going_down_holds_the_offlines_until_the_instances_announce_themselves_again() -> None:
    """A stopping broker: Wills arrive, the connection drops before the echoes return. After the
    reconnect, instances that announce themselves online cancel their offline; one that stays silent
    for the recheck window is believed then (a real crash during the restart is not lost)."""
    h = hold()
    t1 = h.offline("Users", "i1", 1.0, was_online=True).echo
    h.offline("Orders", "i1", 1.0, was_online=True)
    h.link(False, 1, 1.01)  # the broker is gone
    assert h.due(100.0) == []  # nothing is believed while the broker is away
    assert t1 is not None and h.echoed(t1) == []  # nor by an echo of the old connection
    h.link(True, 2, 101.0)  # reconnected
    assert h.online("Users", "i1")
    assert h.due(105.9) == []
    assert h.due(106.0) == [Offline("Orders", "i1", 1.0)]
    c = h.counters()
    assert (c["offlineCancelled"], c["offlineBelievedLate"], c["offlineConfirmed"]) == (1, 1, 0)


def test_a_replaced_connection_is_seen_even_without_seeing_it_down() -> None:
    h = hold()
    token = h.offline("Users", "i1", 1.0, was_online=True).echo
    h.link(True, 2, 1.5)  # another connection already: the echo was sent on the old one
    assert token is not None and h.echoed(token) == []
    assert h.due(1.5 + 4.9) == [] and h.due(6.5) == [Offline("Users", "i1", 1.0)]


def test_offlines_while_disconnected_and_while_settling_after_a_reconnect_wait_for_the_recheck() -> None:
    """An offline delivered while disconnected, or within ``settle`` after a reconnect (a resumed
    session may deliver Wills queued while the broker stopped), or retained (stored state), waits
    ``recheck`` for its instance's online: no echo. Later ones are confirmed by an echo again."""
    h = OfflineHold(echo_timeout=0.25, recheck=5.0, settle=1.0)
    h.link(True, 1, 0.0)
    h.link(False, 1, 0.5)
    d = h.offline("A", "i", 1.0, was_online=True)
    assert not d.release and d.echo is None
    h.link(True, 2, 2.0)  # reconnected: A waits until 7.0; the settling window ends at 3.0
    d = h.offline("B", "i", 2.5, was_online=True)
    assert not d.release and d.echo is None
    d = h.offline("C", "i", 3.5, was_online=True, retained=True)
    assert not d.release and d.echo is None
    token = h.offline("D", "i", 3.5, was_online=True).echo
    assert token is not None and h.echoed(token) == [Offline("D", "i", 3.5)]
    assert [o.service for o in h.due(7.0)] == ["A"]
    assert [o.service for o in h.due(7.5)] == ["B"]
    assert h.due(8.4) == [] and [o.service for o in h.due(8.5)] == ["C"]


def test_a_first_connection_settles_nothing() -> None:
    h = OfflineHold(echo_timeout=0.25, recheck=5.0)
    h.link(True, 1, 0.0)
    assert h.offline("A", "i", 0.1, was_online=True).echo is not None


def test_held_offlines_are_bounded() -> None:
    h = hold()
    for i in range(MAX_HELD):
        assert not h.offline(f"S{i}", "i", 1.0, was_online=True).release
    assert h.offline("over", "i", 1.0, was_online=True).release
    assert h.counters()["offlineHoldOverflow"] == 1 and len(h.held) == MAX_HELD
    h.forget("S0")
    assert len(h.held) == MAX_HELD - 1


# -- through the observer (its bus a CapturingBus whose connection can drop) -------------------------


class RestartingBus(CapturingBus):
    def __init__(self) -> None:
        super().__init__()
        self.connected = True
        self.connects = 1

    def stats(self) -> dict[str, int | bool]:
        return {**super().stats(), "connects": self.connects}


def observer(clock: FakeClock) -> ObserverBody:
    s = OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id="c", services=("Users", "Orders"))
    return ObserverBody(settings=s, clock=clock, bus=RestartingBus(), policy=ObservationPolicy())


def presence(c: ObserverBody, service: str, status: str, retain: bool = False) -> None:
    c.instances.on_presence(Message(f"system/c/presence/{service}/i1", json.dumps({"status": status}).encode(), retain=retain))


def errors(c: ObserverBody) -> list[str]:
    return [json.loads(o.payload)["type"] + ":" + json.loads(o.payload)["service"]
            for o in c.bus.published if o.topic == "system/c/errors"]


def test_a_broker_restart_publishes_no_outage_for_instances_that_come_back_but_does_for_one_that_does_not() -> None:
    clock = FakeClock(1000.0)
    c = observer(clock)
    bus: RestartingBus = c.bus  # type: ignore[assignment]
    call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "m", "replyTo": "session/s1/response"})
    c.on_call(Message("service/Users", call.encode()))
    for s in ("Users", "Orders"):
        presence(c, s, "online")
    for s in ("Users", "Orders"):  # the stopping broker sends every Will, then closes
        presence(c, s, "offline")
    bus.connected = False
    clock.advance(1.0)
    c.instances.release_held()
    assert errors(c) == [] and c.correlator.pending  # nothing published, the pending call not answered
    bus.connected, bus.connects = True, 2  # back; the retained offlines come again on resubscribe
    for s in ("Users", "Orders"):
        presence(c, s, "offline", retain=True)
    presence(c, "Users", "online")  # Users re-announces itself; Orders died meanwhile
    clock.advance(4.9)
    c.instances.release_held()
    assert errors(c) == []
    clock.advance(0.2)
    c.instances.release_held()
    assert errors(c) == ["service_unavailable:Orders"]
    counters = c.counters()
    assert counters["offlineCancelled"] == 1 and counters["offlineBelievedLate"] == 1
    assert c.correlator.pending  # the Users call is still pending: Users never went down


def test_a_crash_on_a_live_broker_is_published_when_the_echo_returns() -> None:
    clock = FakeClock(1000.0)
    c = observer(clock)
    presence(c, "Users", "online")
    presence(c, "Users", "offline")
    assert errors(c) == []
    [echo] = [o for o in c.bus.published if o.topic == c.instances.echo_topic]
    c.instances.on_echo(Message(echo.topic, b"someone-else:1"))  # not our nonce: ignored
    assert errors(c) == []
    c.instances.on_echo(Message(echo.topic, echo.payload))
    assert errors(c) == ["service_unavailable:Users"]
    assert c.counters()["offlineConfirmed"] == 1
