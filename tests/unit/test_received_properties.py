"""``ReceivedProperties`` reads PUBLISH properties exactly as paho's ``Properties`` does: the same
attributes and length for what paho accepts, and paho's own error for what it refuses (hypothesis
over valid packings, other property kinds and mutated bytes)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.client import PublishProperties, ReceivedProperties, install_received_properties

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)  # NUL and U+FEFF included


def read(cls: type[Properties], buffer: bytes) -> tuple[str, Any]:
    props = cls(PacketTypes.PUBLISH)
    try:
        _, used = props.unpack(buffer)
    except Exception as exc:  # the outcome compared
        return "error", type(exc)
    attrs = {name.replace(" ", ""): getattr(props, name.replace(" ", ""))
             for name in Properties(PacketTypes.PUBLISH).names if hasattr(props, name.replace(" ", ""))}
    return "ok", (used, attrs, str(props), props.isEmpty())


def packed(topic: str | None, corr: bytes | None, pairs: list[tuple[str, str]], sub_ids: list[int],
           extra: dict[str, Any]) -> bytes:
    props = Properties(PacketTypes.PUBLISH)
    if topic is not None:
        props.ResponseTopic = topic
    if corr is not None:
        props.CorrelationData = corr
    for pair in pairs:
        props.UserProperty = pair
    for sub_id in sub_ids:
        props.SubscriptionIdentifier = sub_id
    for name, value in extra.items():
        setattr(props, name, value)
    return bytes(props.pack())


extras = st.dictionaries(st.sampled_from(["PayloadFormatIndicator", "MessageExpiryInterval", "ContentType"]),
                         st.integers(0, 1), max_size=1).map(
    lambda d: {k: ("text/plain" if k == "ContentType" else v) for k, v in d.items()})


@settings(max_examples=400, deadline=None)
@given(st.none() | text, st.none() | st.binary(max_size=20), st.lists(st.tuples(text, text), max_size=4),
       st.lists(st.integers(1, 268435455), max_size=2), extras, st.binary(max_size=8))
def test_same_as_paho_on_valid_properties(topic: str | None, corr: bytes | None, pairs: list[tuple[str, str]],
                                          sub_ids: list[int], extra: dict[str, Any], payload: bytes) -> None:
    try:
        buffer = packed(topic, corr, pairs, sub_ids, extra)
    except Exception:  # paho will not even pack it: nothing to read
        return
    assert read(ReceivedProperties, buffer + payload) == read(Properties, buffer + payload)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(text, text), min_size=1, max_size=3), st.data())
def test_same_as_paho_on_mutated_bytes(pairs: list[tuple[str, str]], data: st.DataObject) -> None:
    buffer = bytearray(PublishProperties("reply/to", b"c", pairs).pack())
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["set", "cut", "insert"]))
        at = data.draw(st.integers(0, len(buffer) - 1)) if buffer else 0
        if op == "set" and buffer:
            buffer[at] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del buffer[at:]
        else:
            buffer[at:at] = data.draw(st.binary(min_size=1, max_size=3))
    assert read(ReceivedProperties, bytes(buffer)) == read(Properties, bytes(buffer))


def test_paho_decodes_publish_packets_with_it() -> None:
    install_received_properties()
    props = PublishProperties(None, None, [("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01")])
    topic = b"rpc/Svc/call"
    packet = len(topic).to_bytes(2, "big") + topic + (7).to_bytes(2, "big") + props.pack() + b'{"id":1}'
    result = _packet.decode_publish(0x32, packet, MQTTProtocolVersion.MQTTv5)
    assert isinstance(result.properties, ReceivedProperties)
    assert result.properties.UserProperty == props.UserProperty
    assert (result.topic, result.mid, result.payload) == (topic, 7, b'{"id":1}')


def test_other_packet_types_read_by_paho() -> None:
    connack = Properties(PacketTypes.CONNACK)
    connack.MaximumPacketSize = 1024
    ours = ReceivedProperties(PacketTypes.CONNACK)
    ours.unpack(connack.pack())
    assert ours.MaximumPacketSize == 1024
    assert "names" in vars(ours)  # paho's own tables, built by its constructor
