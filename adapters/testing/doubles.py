"""Test doubles for the adapters, so an actor body runs in a unit test without Ray, a broker or a
database server: :class:`InMemoryStore` (a :class:`~adapters.store.Store`) and :class:`CapturingBus`
(the part of :class:`~adapters.mqtt.bus.MqttBus` the bodies use). The third double, ``FakeClock``,
lives beside the clock it fakes in :mod:`actors.clock`.

Usage::

    clock = FakeClock()
    store = InMemoryStore(clock=clock)
    bus = CapturingBus()
    body = SomeBody(settings, clock=clock, store=store, bus=bus)
    await bus.deliver("service/Users/calls", {...})   # as if the broker sent it
    assert bus.payloads("system/c1/alerts")            # what the body published
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from adapters.mqtt.bus import Handler, Message, MqttTopicError, Payload, encode_payload
from adapters.mqtt.client import ACKED, Delivery
from adapters.mqtt.topics import TopicMatcher, validate_filter, validate_topic
from adapters.store.sqlite import SqliteStore

__all__ = ["CapturingBus", "InMemoryStore", "Published"]

_COUNTERS = ("received", "dispatched", "unmatched", "oversized", "incoming_dropped", "handler_errors", "published",
             "publish_queued", "publish_dropped", "publish_oversized", "publish_refused", "publish_abandoned",
             "dead_lettered", "connects", "reconnects")


class _Clock(Protocol):
    def now(self) -> float: ...


class InMemoryStore(SqliteStore):
    """The SQLite store on a private ``:memory:`` database: the real SQL and migrations, so it passes
    the store contract (``tests/unit/test_in_memory_store.py``), and nothing touches disk. ``clock``
    is a clock object (``FakeClock``) or a callable giving epoch seconds; it stamps ``updated_at``."""

    def __init__(self, *, clock: _Clock | Callable[[], float] | None = None,
                 audit_key: bytes | None = None) -> None:
        if clock is None:
            super().__init__(path=":memory:", audit_key=audit_key)
        else:
            now = clock if callable(clock) else clock.now
            super().__init__(path=":memory:", clock=now, audit_key=audit_key)


@dataclass(frozen=True, slots=True)
class Published:
    """One message handed to :class:`CapturingBus`; ``payload`` is the bytes that would be sent."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return orjson.loads(self.payload)


class CapturingBus:
    """Records every publish (acknowledged at once) and hands :meth:`deliver`-ed messages to the
    handlers subscribed to matching filters, in registration order, as the real bus does. Topics
    and filters are validated as the real bus validates them. ``connected`` is settable."""

    def __init__(self) -> None:
        self.published: list[Published] = []
        self.subscriptions: dict[str, tuple[Handler, ...]] = {}
        self.connected = False
        self.handler_errors = 0
        self.dispatched = 0
        self._matcher = TopicMatcher()

    async def start(self) -> None:
        self.connected = True

    async def stop(self, *, flush_timeout: float = 1.0) -> None:
        self.connected = False

    async def wait_connected(self, timeout: float) -> None:
        return None

    async def flush(self, timeout: float) -> None:
        return None

    def stats(self) -> dict[str, int | bool]:
        """The real bus's counters (see ``MqttBus.stats``): those this double can count, zero the rest."""
        out: dict[str, int | bool] = dict.fromkeys(_COUNTERS, 0)
        out.update(published=len(self.published), dispatched=self.dispatched, handler_errors=self.handler_errors,
                   outgoing_pending=0, connected=self.connected)
        return out

    async def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1,
                        shared_group: str | None = None) -> None:
        validate_filter(topic_filter)
        if qos not in (0, 1, 2):
            raise MqttTopicError(f"qos must be 0, 1 or 2, not {qos!r}")
        handlers = self.subscriptions.get(topic_filter, ())
        if handler not in handlers:
            self.subscriptions[topic_filter] = (*handlers, handler)
        self._matcher = TopicMatcher(self.subscriptions.items())

    async def unsubscribe(self, topic_filter: str, *, shared_group: str | None = None) -> None:
        self.subscriptions.pop(topic_filter, None)
        self._matcher = TopicMatcher(self.subscriptions.items())

    async def publish(self, topic: str, payload: Payload, **kwargs: Any) -> Delivery:
        return self.publish_nowait(topic, payload, **kwargs)

    def publish_nowait(
        self, topic: str, payload: Payload, *, qos: int = 0, retain: bool = False,
        response_topic: str | None = None, correlation_data: bytes | str | None = None,
        user_properties: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    ) -> Delivery:
        validate_topic(topic)
        if qos not in (0, 1, 2):
            raise MqttTopicError(f"qos must be 0, 1 or 2, not {qos!r}")
        props = user_properties.items() if isinstance(user_properties, Mapping) else (user_properties or ())
        self.published.append(Published(
            topic, encode_payload(payload), qos, retain, response_topic,
            correlation_data.encode() if isinstance(correlation_data, str) else correlation_data,
            tuple((str(k), str(v)) for k, v in props)))
        return Delivery(ACKED)

    async def deliver(self, topic: str, payload: Payload, **fields: Any) -> int:
        """Hand a message to every matching handler (sync or async), as the broker would; a handler's
        exception is counted in ``handler_errors``, as the real bus counts it. Returns how many ran."""
        validate_topic(topic)
        msg = Message(topic, encode_payload(payload), **fields)
        handlers = self._matcher.match(topic)
        self.dispatched += bool(handlers)
        for handler in handlers:
            try:
                result = handler(msg)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self.handler_errors += 1
        return len(handlers)

    def on(self, topic: str) -> list[Published]:
        """What was published on ``topic``, oldest first."""
        return [p for p in self.published if p.topic == topic]

    def payloads(self, topic: str) -> list[Any]:
        """The JSON payloads published on ``topic``, oldest first."""
        return [p.json() for p in self.on(topic)]
