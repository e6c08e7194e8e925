"""``ObserverBody`` handlers without Ray or a broker (its bus a ``CapturingBus`` that records the answers):
every call payload is counted exactly once, nothing raises, a bad pending call cannot stop the
answers to the others."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.clock import FakeClock
from actors.observer import ObserverBody
from actors.settings import OperateSettings
from adapters.mqtt.bus import Message
from adapters.testing.doubles import CapturingBus
from policies.health.monitor import BreakerView, MonitorResult, Unavailable
from policies.observation.config import ObservationPolicy
from policies.observation.correlation import Pending

TOPICS = ["session/s/response", "a/+/b", "a/#", "a\x00b", "$SYS/x", "system/c/security/actions/active", "",
          "x" * 300]


def core(max_discovered: int = 3) -> ObserverBody:
    s = OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id="c", services=("Users",),
                        max_discovered_services=max_discovered)
    return ObserverBody(settings=s, clock=FakeClock(), bus=CapturingBus(), policy=ObservationPolicy())


def intake_total(c: ObserverBody) -> int:
    n = c.counters()
    return n["calls"] + n["unknownServices"] + n["malformed"] + n["rejected"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10)
calls = st.fixed_dictionaries({"jsonrpc": st.just("2.0")}, optional={
    "id": json_values, "method": st.text(max_size=140) | json_values,
    "replyTo": st.sampled_from(TOPICS) | json_values, "correlationId": json_values, "params": json_values,
}).map(lambda d: json.dumps(d).encode())
messages = st.builds(
    Message,
    topic=st.sampled_from(["service/Users", "service/A", "service/B", "service/C", "service/D", "service/E",
                           "service/", "service/a/b", "service/-x", "service/" + "n" * 70]),
    payload=st.binary(max_size=120) | calls | json_values.map(lambda v: json.dumps(v).encode()),
    response_topic=st.none() | st.sampled_from(TOPICS) | st.text(max_size=20),
    correlation_data=st.none() | st.binary(max_size=300),
)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, max_size=40))
def test_every_call_counted_exactly_once(batch: list[Message]) -> None:
    """Arbitrary calls (bytes, JSON, odd ids/methods/reply topics/properties, bad service names):
    no exception escapes; calls + unknownServices + malformed + rejected == messages; at most
    max_discovered traffic-only services are tracked; nothing is queued for an unusable topic."""
    c = core(max_discovered=3)
    for m in batch:
        c.on_call(m)
    assert intake_total(c) == len(batch)
    assert len(c.admission.discovered) <= 3
    queued = [o.topic for o in c.bus.published]
    assert all(t == "session/s/response" or (t and not t.startswith(("$", "system/")) and "+" not in t
                                             and "#" not in t and "\x00" not in t) for t in queued)


def test_rejected_calls_are_counted_and_never_answered() -> None:
    """A call naming a forbidden reply topic is counted as rejected and gets no answer, even
    while the breaker is open (when an accepted call is answered at once)."""
    c = core()
    c.correlator.set_breaker("Users", "forced_open", 0.0, 0, 1)
    bad = ["system/c/security/actions/active", "a/+/b", "a/#", "a\x00b", "$SYS/x"]
    for t in bad:
        c.on_call(Message("service/Users", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "m",
                                                        "replyTo": t}).encode()))
    c.on_call(Message("service/Users", b'{"jsonrpc":"2.0","id":2,"method":"m"}', response_topic="a/#"))
    for bad_id in ([1], {"a": 1}):
        c.on_call(Message("service/Users", json.dumps({"jsonrpc": "2.0", "id": bad_id, "method": "m",
                                                        "replyTo": "session/s/response"}).encode()))
    assert c.counters()["rejected"] == 6 and c.counters()["malformed"] == 2
    assert not c.bus.published
    c.on_call(Message("service/Users", b'{"jsonrpc":"2.0","id":3,"method":"m","replyTo":"session/s/response"}'))
    assert [o.topic for o in c.bus.published] == ["session/s/response"]


def test_calls_to_made_up_names_beyond_the_cap_are_only_counted() -> None:
    """300 made-up names with a cap of 3: 3 tracked, 297 counted as unknown services, none kept."""
    c = core(max_discovered=3)
    for i in range(300):
        c.on_call(Message(f"service/Fake{i}", json.dumps({"jsonrpc": "2.0", "id": i, "method": "m",
                                                           "replyTo": "session/s/response"}).encode()))
    _, deltas, _ = c.collect()
    assert set(deltas) == {"Users", "Fake0", "Fake1", "Fake2"}
    assert c.counters()["unknownServices"] == 297 and len(c.correlator.pending) == 3


def test_one_failing_answer_does_not_stop_the_others() -> None:
    """A pending call whose answer cannot be published (a topic that slipped past intake) is
    counted in answerFailed; every other pending call is still answered."""
    c = core()
    for i in range(3):
        c.on_call(Message("service/Users", json.dumps({"jsonrpc": "2.0", "id": i, "method": "m",
                                                        "replyTo": f"session/s{i}/response"}).encode()))
    c.correlator.pending[("a/#", 99)] = Pending("Users", "m", 0.0, 1e12, 99, "a/#", None, None)
    result = MonitorResult(service="Users", view=BreakerView("open", 0.0, 0),
                           unavailable=Unavailable("no_running_pods", None, 30.0))
    answered = c.apply_results([result], now=c.clock.now())
    assert answered == 3 and c.counters()["answerFailed"] == 1
    assert sorted(o.topic for o in c.bus.published) == [f"session/s{i}/response" for i in range(3)]


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["session/s/response", "session/t/response"]),
                          st.binary(max_size=80) | json_values.map(lambda v: json.dumps(v).encode())
                          | st.fixed_dictionaries({"id": json_values}, optional={"error": json_values,
                                                                                 "result": json_values})
                          .map(lambda d: json.dumps(d).encode())), max_size=30))
def test_every_response_counted_exactly_once(batch: list[tuple[str, bytes]]) -> None:
    """Arbitrary responses (list/object ids, odd error shapes): no exception escapes; each is a
    matched response, an unmatched one or malformed."""
    c = core()
    for i in range(5):
        c.on_call(Message("service/Users", json.dumps({"jsonrpc": "2.0", "id": i, "method": "m",
                                                        "replyTo": "session/s/response"}).encode()))
    for topic, payload in batch:
        c.on_response(Message(topic, payload))
    n = c.counters()
    assert n["responses"] + n["unmatchedResponses"] + n["malformed"] == len(batch)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=12) | st.sampled_from(["Users", "A", "a/b", "x" * 70]),
                          st.text(max_size=12) | st.just("x" * 200),
                          st.binary(max_size=40) | st.sampled_from([b'{"status":"online"}', b""])), max_size=30))
def test_presence_never_raises(batch: list[tuple[str, str, bytes]]) -> None:
    """Arbitrary presence topics and payloads: accepted (valid service, instance segment, status)
    or counted malformed, never an exception."""
    c = core()
    for service, instance, payload in batch:
        c.instances.on_presence(Message(f"system/c/presence/{service}/{instance}", payload))
    _, deltas, _ = c.collect()
    seen = sum(len(d.presence or {}) for d in deltas.values())
    assert seen <= len(batch) and c.malformed <= len(batch)
