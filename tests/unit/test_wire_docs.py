"""The generated wire contract (``docs/wire/``) is current, and ``protocol.contract`` maps every topic
to its model."""

from __future__ import annotations

import pytest

from drivers.wire_docs import expected_files, stale_files
from protocol import ProtocolError
from protocol.contract import CHANNELS, asyncapi_document, channel_of, parse_published
from protocol.system import BreakerState, ServiceDegraded


def test_committed_wire_docs_are_current() -> None:
    """docs/wire/ equals what the models generate; regenerate with ``python -m drivers.wire_docs``."""
    assert stale_files() == [], "docs/wire/ is out of date: run python -m drivers.wire_docs"


def test_asyncapi_lists_every_channel_and_resolves_every_ref() -> None:
    """Every channel is in the AsyncAPI 3.0 document and every $ref points inside it."""
    doc = asyncapi_document()
    assert doc["asyncapi"] == "3.0.0"
    assert {c["address"] for c in doc["channels"].values()} == {c.address for c in CHANNELS}
    refs: list[str] = []

    def walk(x: object) -> None:
        if isinstance(x, dict):
            refs.extend(v for k, v in x.items() if k == "$ref")
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc)
    for ref in refs:
        node: object = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, ref
            node = node[part]
    assert len(expected_files()) == 1 + len({m.__name__ for c in CHANNELS for m in c.messages})


def test_schema_says_the_units() -> None:
    """Rates are bounded 0..1 and retryAfter is a date-time in the generated schema."""
    schemas = asyncapi_document()["components"]["schemas"]
    rate = schemas["BreakerStateChange"]["properties"]["failureRate"]["anyOf"][0]
    assert (rate["minimum"], rate["maximum"]) == (0.0, 1.0)
    retry = schemas["BreakerState"]["properties"]["retryAfter"]["anyOf"][0]
    assert retry["format"] == "date-time"


def test_parse_published_by_topic_and_type() -> None:
    """A message is parsed with the model of its topic (and type); a wrong type or topic is refused."""
    state = parse_published("system/c1/circuit-breaker/Users", {
        "type": "circuit_breaker_state", "service": "Users", "state": "open", "since": "2024-01-01T00:00:00Z",
        "retryAfter": "2024-01-01T00:00:30Z", "timestamp": "2024-01-01T00:00:00Z"})
    assert isinstance(state, BreakerState) and state.retry_after is not None
    degraded = parse_published("system/c1/errors", b'{"type":"service_degraded","clusterId":"c1","service":"A",'
                               b'"reason":"high_error_rate","details":{"errorRate":0.4},'
                               b'"timestamp":"2024-01-01T00:00:00Z","correlationId":"x"}')
    assert isinstance(degraded, ServiceDegraded) and degraded.details.error_rate == 0.4
    with pytest.raises(ProtocolError, match="type"):
        parse_published("system/c1/errors", {"type": "circuit_breaker_state"})
    with pytest.raises(ProtocolError, match="topic"):
        parse_published("elsewhere/x", {})
    assert channel_of("system/c1/security/actions/active") is not None
    assert channel_of("system/c1/circuit-breaker/bad name") is None
