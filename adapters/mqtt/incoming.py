"""The incoming side of :class:`~adapters.mqtt.bus.MqttBus`: subscriptions (MQTT 5 subscription
identifiers derived from the filter, shared subscriptions), the bounded incoming queue fed from
paho's read callback, and the one dispatcher task that runs handlers in arrival order."""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from dataclasses import dataclass

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.base import BusCore
from adapters.mqtt.client import BusClient
from adapters.mqtt.message import Handler, MqttSubscribeError, to_message
from adapters.mqtt.topics import MqttTopicError, TopicMatcher, validate_filter

_YIELD_EVERY = 256  # the dispatcher yields to the loop this often so I/O keeps flowing
_MAX_SUB_ID = 268_435_455  # MQTT 5 Subscription Identifier: 1 .. 2^28 - 1


@dataclass(slots=True)
class _Subscription:
    topic_filter: str  # as given, without the $share prefix (what incoming topics match)
    broker_filter: str  # what the broker is asked for
    qos: int
    sub_id: int
    handlers: tuple[Handler, ...]




class IncomingSide(BusCore):
    """Subscribe, route and dispatch (mixed into ``MqttBus``)."""

    _subs: dict[str, _Subscription]  # by broker filter
    _subs_by_id: dict[int, _Subscription]
    _matcher: TopicMatcher
    _incoming: deque[paho.MQTTMessage]
    _in_wakeup: asyncio.Event
    _max_payload: int
    _in_max: int

    def _init_incoming(self, *, max_payload_bytes: int, incoming_queue_size: int) -> None:
        self._subs = {}
        self._subs_by_id = {}
        self._matcher = TopicMatcher()
        self._incoming = deque()
        self._in_wakeup = asyncio.Event()
        self._max_payload = max_payload_bytes
        self._in_max = incoming_queue_size

    async def subscribe(
        self, topic_filter: str, handler: Handler, *, qos: int = 1, shared_group: str | None = None
    ) -> None:
        """Register ``handler`` for ``topic_filter`` (``+``/``#`` wildcards); ``shared_group``
        makes it the MQTT 5 shared subscription ``$share/{group}/{filter}``.

        When connected, returns after the broker confirmed it; otherwise it is sent on connect.
        """
        self._check_open()
        validate_filter(topic_filter)
        if qos not in (0, 1, 2):
            raise MqttTopicError(f"qos must be 0, 1 or 2, not {qos!r}")
        if shared_group is not None and (not shared_group or any(c in shared_group for c in "/+#")):
            raise MqttTopicError(f"shared group {shared_group!r} must be non-empty without '/', '+' or '#'")
        broker_filter = f"$share/{shared_group}/{topic_filter}" if shared_group else topic_filter
        sub = self._subs.get(broker_filter)
        if sub is None:
            sub = _Subscription(topic_filter, broker_filter, qos, self._sub_id_for(broker_filter), (handler,))
            self._subs[broker_filter] = sub
            self._subs_by_id[sub.sub_id] = sub
            send = True
        else:
            send = qos > sub.qos
            sub.qos = max(sub.qos, qos)
            if handler not in sub.handlers:
                sub.handlers = (*sub.handlers, handler)
        self._rebuild_matcher()
        client = self._client
        if send and client is not None:
            try:
                await self._subscribe_at_broker(client, sub)
            except MqttSubscribeError:
                self._remove_handler(sub, handler)
                raise

    def _sub_id_for(self, broker_filter: str) -> int:
        """The filter's subscription identifier: derived from the filter, so a restarted process gets
        the same one and messages a resumed session queued under the old identifier reach the same
        subscription (a counter would hand them to whichever filter was subscribed in that place)."""
        sub_id = zlib.crc32(broker_filter.encode()) % _MAX_SUB_ID + 1
        while sub_id in self._subs_by_id:  # a collision: the next free one
            sub_id = sub_id % _MAX_SUB_ID + 1
        return sub_id

    async def unsubscribe(self, topic_filter: str, *, shared_group: str | None = None) -> None:
        """Remove every handler of this filter and unsubscribe at the broker."""
        broker_filter = f"$share/{shared_group}/{topic_filter}" if shared_group else topic_filter
        sub = self._subs.pop(broker_filter, None)
        if sub is None:
            return
        del self._subs_by_id[sub.sub_id]
        self._rebuild_matcher()
        client = self._client
        if client is not None:
            try:
                await client.unsubscribe(broker_filter, timeout=self.config.connect_timeout_s)
            except aiomqtt.MqttError as exc:  # the subscription dies with this connection anyway
                self._log.warning("mqtt unsubscribe %s not confirmed: %s", broker_filter, exc)

    def _remove_handler(self, sub: _Subscription, handler: Handler) -> None:
        sub.handlers = tuple(h for h in sub.handlers if h != handler)
        if not sub.handlers:
            self._subs.pop(sub.broker_filter, None)
            self._subs_by_id.pop(sub.sub_id, None)
        self._rebuild_matcher()

    def _rebuild_matcher(self) -> None:
        self._matcher = TopicMatcher([(s.topic_filter, s.handlers) for s in self._subs.values()])

    async def _subscribe_at_broker(self, client: BusClient, sub: _Subscription) -> None:
        props = None
        if self.config.use_subscription_ids:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = sub.sub_id
        try:
            codes = await client.subscribe(
                sub.broker_filter, sub.qos, properties=props, timeout=self.config.connect_timeout_s)
        except aiomqtt.MqttError as exc:
            # Lost connection: the reconnect loop subscribes again. Anything else is a refusal.
            if self._client is not client or not self._connected_event.is_set():
                self._log.warning("mqtt subscribe %s interrupted (%s); retried on reconnect", sub.broker_filter, exc)
                return
            raise MqttSubscribeError(f"subscribe {sub.broker_filter!r} failed: {exc}") from exc
        for code in codes:
            if getattr(code, "is_failure", False) or (isinstance(code, int) and code >= 0x80):
                raise MqttSubscribeError(f"broker refused subscription {sub.broker_filter!r}: {code}")


    def _on_paho_message(self, pm: paho.MQTTMessage) -> None:
        # Runs inside paho's read callback: must be cheap and must never raise (an exception here
        # would tear the connection down).
        try:
            self._c["received"] += 1
            if len(pm.payload) > self._max_payload:
                self._drop("oversized", f"payload of {len(pm.payload)} bytes > {self._max_payload}")
            elif len(self._incoming) >= self._in_max:
                self._drop("incoming_dropped", f"incoming queue full ({self._in_max})")
            else:
                self._incoming.append(pm)
                self._in_wakeup.set()
        except Exception:
            self._log.exception("mqtt receive hook failed")

    async def _dispatch_loop(self) -> None:
        inq = self._incoming
        wakeup = self._in_wakeup
        n = 0
        while True:
            if not inq:
                wakeup.clear()
                await wakeup.wait()
                continue
            pm = inq.popleft()
            try:
                msg, sub_ids = to_message(pm)
                handlers = self._handlers_for(msg.topic, sub_ids)
            except Exception:
                self._log.exception("mqtt could not decode a message")
                continue
            if not handlers:
                self._c["unmatched"] += 1
                continue
            self._c["dispatched"] += 1
            for handler in handlers:
                try:
                    result = handler(msg)
                    if result is not None:
                        await result
                except Exception:
                    self._c["handler_errors"] += 1
                    self._log.exception("mqtt handler %r failed on %s", handler, msg.topic)
            n += 1
            if n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _handlers_for(self, topic: str, sub_ids: list[int] | None) -> tuple[Handler, ...]:
        if sub_ids:
            if len(sub_ids) == 1:
                sub = self._subs_by_id.get(sub_ids[0])
                if sub is not None:
                    return sub.handlers
            else:
                merged: dict[Handler, None] = {}
                for sid in sub_ids:
                    sub = self._subs_by_id.get(sid)
                    if sub is not None:
                        merged.update(dict.fromkeys(sub.handlers))
                if merged:
                    return tuple(merged)
            # An identifier we never gave (a message a resumed session queued for an earlier
            # process's subscriptions): route it by topic instead of dropping it.
        return self._matcher.match(topic)



__all__ = ["IncomingSide"]
