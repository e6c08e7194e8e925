"""Presence messages through ``ObserverBody`` (no Ray, no broker): every message is counted exactly
once by observer 0 (presence, malformed or presenceRefused), never raises, and a flood of made-up
service names cannot make more than ``max_present`` services real."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.clock import FakeClock
from actors.observer import ObserverBody
from actors.settings import OperateSettings
from adapters.mqtt.bus import Message
from policies.observation.config import ObservationPolicy
from policies.supervision.discovery import ServiceAdmission

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10)
payloads = (st.binary(max_size=60) | json_values.map(lambda v: json.dumps(v).encode())
            | st.fixed_dictionaries({"status": st.sampled_from(["online", "offline", "ONLINE", ""]) | json_values},
                                    optional={"instanceId": json_values}).map(lambda d: json.dumps(d).encode())
            | st.just(b""))
names = st.sampled_from(["Users", "Orders", "A", "-x", "", "x" * 70, "a+b", "a#"]) | st.text(max_size=10)
topics = st.tuples(names, st.sampled_from(["i1", "i2", "", "x" * 300, "a+", "\x00"]) | st.text(max_size=8),
                   st.sampled_from(["", "/extra"])).map(lambda t: f"system/c/presence/{t[0]}/{t[1]}{t[2]}")


def core(index: int = 0, observers: int = 1) -> ObserverBody:
    s = OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id="c", services=("Users",), observers=observers)
    return ObserverBody(settings=s, index=index, clock=FakeClock(), policy=ObservationPolicy())


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(topics, payloads), max_size=30))
def test_every_presence_counted_exactly_once(batch: list[tuple[str, bytes]]) -> None:
    """Arbitrary presence topics and payloads: observer 0 counts each once (presence + malformed
    + presenceRefused == messages); observer 1 sees the same messages and counts none of them."""
    cores = [core(0, 2), core(1, 2)]
    cores[0].admission.max_present = 2
    for c in cores:
        for topic, payload in batch:
            c.instances.on_presence(Message(topic, payload))
    n = cores[0].counters()
    assert n["presence"] + n["malformed"] + n["presenceRefused"] == len(batch)
    assert len(cores[0].admission.present) <= 2
    m = cores[1].counters()
    assert m["presence"] == m["malformed"] == m["presenceRefused"] == 0


def test_presence_flood_of_made_up_names_is_capped() -> None:
    """5 000 distinct names announcing presence with a cap of 100: 100 become real (and get a
    delta), the rest are counted as presenceRefused; known names still update."""
    c = core()
    c.admission.max_present = 100
    for i in range(5000):
        c.instances.on_presence(Message(f"system/c/presence/Fake{i}/i1", b'{"status":"online"}'))
    c.instances.on_presence(Message("system/c/presence/Fake0/i2", b'{"status":"online"}'))
    c.instances.on_presence(Message("system/c/presence/Users/i1", b'{"status":"online"}'))
    assert len(c.admission.present) == 100 and len(c.instances.new_real) == 100
    n = c.counters()
    assert n["presence"] == 102 and n["presenceRefused"] == 4900
    _, deltas, _ = c.collect()
    assert {s for s, d in deltas.items() if d.presence} == {*(f"Fake{i}" for i in range(100)), "Users"}


def test_admission_present_cap() -> None:
    """``may_announce`` takes known and configured names always, new ones while there is room."""
    a = ServiceAdmission(configured=["Users"], max_present=1)
    assert a.may_announce("A") and a.announce("A")
    assert not a.may_announce("B") and a.presence_refused == 1
    assert a.may_announce("A") and a.may_announce("Users") and a.presence_refused == 1
