"""Observers sharing the load: ownership, bounded per-owner batches, early responses (pure), and
two ``ObserverBody``s wired together without Ray or a broker, every message given to one of them
as a shared subscription would: every pair still meets in its owner."""

from __future__ import annotations

import json
import random

from hypothesis import given
from hypothesis import strategies as st

from actors.clock import FakeClock
from actors.observer import ObserverBody
from actors.settings import OperateSettings
from adapters.mqtt.bus import Message
from policies.breaker.outcomes import UNANSWERED
from policies.observation.config import ObservationPolicy
from policies.observation.sharing import (
    EarlyResponses,
    ForwardBatches,
    Half,
    decode_batch,
    encode_batch,
    owner_of,
)


@given(st.text(max_size=60), st.integers(min_value=1, max_value=16))
def test_owner_is_stable_and_in_range(topic: str, count: int) -> None:
    """Any reply topic (even lone surrogates) has one owner in range; one observer owns everything."""
    o = owner_of(topic, count)
    assert 0 <= o < count and o == owner_of(topic, count)
    assert owner_of(topic, 1) == 0


def test_owners_spread_over_observers() -> None:
    """Many reply topics spread over 4 owners (none gets under half its share)."""
    owners = [owner_of(f"session/s{n}/response", 4) for n in range(4000)]
    assert all(owners.count(i) > 500 for i in range(4))


def test_batches_are_bounded_and_counted() -> None:
    """A full batch refuses and counts; take() hands each owner's batch once, then empties it."""
    b = ForwardBatches(index=0, count=3, max_batch=2)
    h = Half(False, 1.0, "session/a/response", b"{}")
    assert b.add(1, h) and b.add(1, h) and not b.add(1, h) and b.add(2, h)
    assert b.dropped == 1 and b.queued() == 3
    out = b.take()
    assert {k: len(v) for k, v in out.items()} == {1: 2, 2: 1} and b.forwarded == 3
    assert b.take() == {} and b.queued() == 0


def test_outstanding_sends_are_bounded_per_owner() -> None:
    """A slow owner gets at most max_inflight sends; its halves wait (and grow) until one finishes."""
    b = ForwardBatches(index=0, count=2, max_batch=100, max_inflight=1)
    h = Half(False, 1.0, "t", b"{}")
    b.add(1, h)
    assert len(b.take()[1]) == 1
    b.add(1, h)
    b.add(1, h)
    assert b.take() == {}  # the first send has not finished
    b.sent(1)
    assert len(b.take()[1]) == 2


def test_early_responses_are_held_bounded_and_expire() -> None:
    """A held response is given back once; the table is bounded; an unclaimed one expires and is
    reported; a re-held key is not expired by its predecessor's deadline."""
    e = EarlyResponses(hold_s=1.0, cap=2)
    assert e.hold(("r", 1), 10.0, {"id": 1}, now=10.0)
    assert not e.hold(("r", 1), 10.0, {"id": 1}, now=10.0)  # duplicate key
    assert e.hold(("r", 2), 10.0, {"id": 2}, now=10.0)
    assert not e.hold(("r", 3), 10.0, {"id": 3}, now=10.0)  # full
    assert e.take(("r", 1)) == (10.0, {"id": 1}) and e.take(("r", 1)) is None and e.matched == 1
    assert e.hold(("r", 1), 10.5, {"id": 1}, now=10.5)
    assert e.expire(11.0) == 1  # ("r", 2); ("r", 1) was held again later
    assert len(e) == 1 and e.expire(11.5) == 1 and len(e) == 0


# -- two observers, each message delivered to one of them ------------------------------------------

def pair_of_cores(clock: FakeClock) -> list[ObserverBody]:
    s = OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id="c", services=("Users",), observers=2)
    return [ObserverBody(settings=s, index=i, clock=clock, policy=ObservationPolicy(call_timeout=5.0))
            for i in range(2)]


def exchange(cores: list[ObserverBody]) -> int:
    """Deliver every queued batch to its owner (what the actors do each ``forward_every``)."""
    n = 0
    for c in cores:
        for owner, batch in c.take_forward().items():
            assert owner != c.index
            cores[owner].on_forwarded(decode_batch(encode_batch(batch)))  # as the actors send them
            c.forward.sent(owner)
            n += 1
    return n


def call(n: int, reply: str) -> Message:
    return Message("service/Users", json.dumps({"jsonrpc": "2.0", "id": f"c{n}", "method": "get",
                                                "replyTo": reply}).encode())


def response(n: int, reply: str) -> Message:
    return Message(reply, json.dumps({"jsonrpc": "2.0", "id": f"c{n}", "result": {}}).encode())


def test_split_pairs_meet_in_their_owner_with_receive_time_latency() -> None:
    """Calls and responses landing on either observer in any order (a response may reach its owner
    before its call): all pairs correlate, each once, with latency = the receive times' difference
    (not the forwarding delay), no false timeout, nothing unmatched; one call never answered still
    times out; every call is counted once overall."""
    clock = FakeClock(1000.0)
    cores = pair_of_cores(clock)
    rnd = random.Random(7)
    pairs = 200
    for n in range(pairs):
        reply = f"session/s{n % 23}/response"
        cores[rnd.randrange(2)].on_call(call(n, reply))
        clock.advance(0.01)
        if n % 3 == 0:
            exchange(cores)  # sometimes the call is forwarded before its response arrives
        cores[rnd.randrange(2)].on_response(response(n, reply))
        clock.advance(0.001)
    cores[0].on_call(call(9999, "session/lost/response"))
    clock.advance(0.05)  # the forwarding delay: must not show in the latencies
    assert exchange(cores) > 0
    counts = [c.counters() for c in cores]
    assert sum(x["calls"] for x in counts) == pairs + 1
    assert sum(x["responses"] for x in counts) == pairs
    assert sum(x["earlyMatched"] for x in counts) > 0
    assert sum(x["forwarded"] for x in counts) > 0 and sum(x["dropped"] for x in counts) == 0
    outcomes = [o for c in cores for o in c.correlator.deltas["Users"].outcomes]
    assert len(outcomes) == pairs and all(code is None and abs(d - 0.01) < 1e-6 for d, code in outcomes)
    clock.advance(6.0)
    for c in cores:
        c.collect()
    counts = [c.counters() for c in cores]
    assert sum(x["timeouts"] for x in counts) == 1
    assert sum(x["unmatchedResponses"] for x in counts) == 0
    assert sum(x["pending"] for x in counts) == 0


def test_response_without_call_is_unmatched_after_the_hold() -> None:
    """A response whose call never comes is held, then counted unmatched once the hold passes."""
    clock = FakeClock(1000.0)
    cores = pair_of_cores(clock)
    reply = "session/x/response"
    owner = owner_of(reply, 2)
    cores[1 - owner].on_response(response(1, reply))
    exchange(cores)
    assert cores[owner].counters()["unmatchedResponses"] == 0
    clock.advance(ObservationPolicy().early_response_hold + 0.1)
    cores[owner].collect()
    assert cores[owner].counters()["unmatchedResponses"] == 1


def test_refused_calls_are_counted_by_the_receiver_once() -> None:
    """Malformed and rejected calls are counted by the observer that received them, never forwarded."""
    clock = FakeClock(1000.0)
    cores = pair_of_cores(clock)
    cores[1].on_call(Message("service/Users", b"not json"))
    cores[1].on_call(Message("service/Users", b'{"jsonrpc":"2.0","id":1,"method":"m","replyTo":"a/#"}'))
    assert exchange(cores) == 0
    assert cores[1].counters()["malformed"] == 1 and cores[1].counters()["rejected"] == 1
    assert cores[0].counters()["malformed"] == 0 and cores[0].counters()["rejected"] == 0


def test_response_topic_property_forwards_unparsed() -> None:
    """A call whose Response Topic names another owner is forwarded without parsing; the owner
    classifies it (a malformed body is counted there, once)."""
    clock = FakeClock(1000.0)
    cores = pair_of_cores(clock)
    reply = next(f"session/p{n}/response" for n in range(100) if owner_of(f"session/p{n}/response", 2) == 1)
    cores[0].on_call(Message("service/Users", b"garbage", response_topic=reply))
    cores[0].on_call(Message("service/Users", b'{"jsonrpc":"2.0","id":7,"method":"m"}', response_topic=reply))
    assert cores[0].forward.queued() == 2
    exchange(cores)
    assert cores[1].counters()["malformed"] == 1 and cores[1].counters()["calls"] == 1
    assert cores[0].counters()["malformed"] == 0 and cores[0].counters()["calls"] == 0
    cores[0].on_response(Message(reply, b'{"jsonrpc":"2.0","id":7,"error":{"code":-32603,"message":"x"}}'))
    exchange(cores)
    assert cores[1].correlator.deltas["Users"].outcomes[0][1] == -32603


def test_one_observer_forwards_nothing_and_shares_nothing() -> None:
    """With one observer: plain subscriptions, no forwarding, an unknown response is unmatched at once."""
    s = OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id="c", services=("Users",))
    c = ObserverBody(settings=s, clock=FakeClock(1000.0), policy=ObservationPolicy())
    assert c.share_group is None
    c.on_call(call(1, "session/a/response"))
    c.on_response(response(2, "session/a/response"))
    assert c.take_forward() == {} and c.counters()["unmatchedResponses"] == 1
    assert UNANSWERED not in [code for _, code in c.correlator.deltas["Users"].outcomes]
