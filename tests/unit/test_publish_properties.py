"""``PublishProperties`` packs PUBLISH properties byte for byte as paho's ``Properties`` does, and
paho's own parser reads them back."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.client import PublishProperties, publish_packet_size

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufeff"), max_size=40)


def paho_properties(topic: str | None, corr: bytes | None, pairs: list[tuple[str, str]]) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    if topic is not None:
        props.ResponseTopic = topic
    if corr is not None:
        props.CorrelationData = corr
    if pairs:
        props.UserProperty = pairs
    return props


@settings(max_examples=300, deadline=None)
@given(st.none() | text, st.none() | st.binary(max_size=40), st.lists(st.tuples(text, text), max_size=5))
def test_packed_like_paho_and_read_back_by_paho(topic: str | None, corr: bytes | None,
                                                 pairs: list[tuple[str, str]]) -> None:
    ours = PublishProperties(topic, corr, pairs)
    assert ours.pack() == paho_properties(topic, corr, pairs).pack()
    back = Properties(PacketTypes.PUBLISH)
    back.unpack(ours.pack())
    assert getattr(back, "ResponseTopic", None) == topic and getattr(back, "CorrelationData", None) == corr
    assert list(getattr(back, "UserProperty", [])) == pairs
    assert (getattr(ours, "ResponseTopic", None), getattr(ours, "CorrelationData", None),
            getattr(ours, "UserProperty", [])) == (topic, corr, pairs)
    assert publish_packet_size("t", b"x", 1, ours) == publish_packet_size("t", b"x", 1, paho_properties(
        topic, corr, pairs))


def test_mapping_and_non_string_values() -> None:
    ours = PublishProperties(None, None, {"traceparent": "00-a", "n": 3})  # type: ignore[dict-item]
    assert ours.pack() == paho_properties(None, None, [("traceparent", "00-a"), ("n", "3")]).pack()
    assert "traceparent" in str(ours)
