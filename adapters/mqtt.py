"""The one MQTT bus everything in sfa-ops uses: :class:`MqttBus` over a single long-lived aiomqtt
connection (MQTT 5) with a reconnect loop, handler dispatch and a bounded outgoing queue.

How it behaves:

- ``start()`` returns at once; a reconnect loop (jittered exponential backoff, ``reconnect_min_s``
  doubling to ``reconnect_max_s``, reset only after a connection stayed up ``reconnect_stable_s``)
  keeps one connection up. On every (re)connect it re-subscribes everything registered, *then*
  counts as connected and flushes the outgoing queue.
- Sessions: ``MqttConfig.clean_start=False`` with a ``session_expiry_s`` makes the session
  persistent (the broker keeps subscriptions and queues QoS ≥ 1 messages while we are away). Every
  subscription is sent again on every connect all the same, whether or not CONNACK says
  ``session_present`` (a restarted broker without persistence, or one that expired us, has none);
  ``sessions_resumed`` counts the CONNACKs that did. ``stop()`` ends the session (DISCONNECT with
  expiry 0); only a lost connection or a killed process leaves it to expire.
- ``publish`` never blocks on a down broker: QoS ≥ 1 messages wait in a bounded queue and are sent
  after reconnect (at least once: a message in flight when the connection died is sent again);
  QoS 0 messages published while disconnected are counted as dropped. Overflow is counted and logged.
  ``publish``/``publish_nowait`` return a :class:`Delivery` that becomes ``acked`` only when the
  broker acknowledged the message (QoS 1: PUBACK with a success code) — record a message as
  published only then.
- No message can stall publishing. One larger than ``max_publish_bytes`` or than the Maximum Packet
  Size the broker announced in CONNACK, one the broker refuses in its PUBACK (e.g. not authorized),
  and one that was in flight at ``max_send_attempts`` connection losses is *dead-lettered*: counted,
  logged and kept (topic, size, reason; never the payload) in :meth:`MqttBus.dead_letters`, never
  sent again. Messages in flight when a connection died are re-sent one at a time on the next
  connection, so a message that makes the broker drop us is the only one charged for it.
- Incoming messages pass a size check (``oversized``) and a bounded queue (``incoming_dropped``)
  before **one dispatcher task runs handlers sequentially, in arrival order** — a slow handler
  delays the others; hand long work to your own task or queue. Handlers may be sync or async; a
  handler exception is logged and counted and never stops dispatch.
- Routing: with MQTT 5 subscription identifiers (default) each delivered copy goes to the handlers
  of exactly the subscription(s) the broker names, so a handler on ``a/#`` sees a message once even
  when ``a/+`` is also subscribed. Without them the bus matches the topic against every filter
  (cached); then overlapping filters mean the broker sends one copy per subscription and each copy
  reaches every matching handler — avoid overlapping filters on such brokers.
- Signing: with ``MqttConfig.signing_key_file`` every message published under ``system/`` carries
  an Ed25519 key id and signature as MQTT 5 user properties (``adapters.signing``).

Errors::

    MqttBusError
     ├── MqttConfigError     bad URL or option (adapters.mqtt_config)
     ├── MqttTopicError      invalid topic or filter passed to publish/subscribe (also ValueError)
     ├── MqttSubscribeError  the broker refused a subscription
     ├── MqttTimeout         wait_connected/flush did not finish in time (also TimeoutError)
     └── MqttBusClosed       the bus was stopped

``aiomqtt.MqttError`` never leaves this module: connection errors feed the reconnect loop, others
are converted with ``raise … from exc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
import uuid
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
import orjson
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt_client import (
    ACKED,
    BusClient,
    DeadLetter,
    Delivery,
    PublishProperties,
    publish_packet_size,
)
from adapters.mqtt_config import MqttBusError, MqttConfig, MqttConfigError
from adapters.mqtt_topics import MqttTopicError, TopicMatcher, topic_matches, validate_filter, validate_topic
from adapters.signing import Signer, SigningKeyError
from protocol.signing import is_signed_topic

__all__ = [
    "DeadLetter", "Delivery", "Handler", "LastWill", "Message", "MqttBus", "MqttBusClosed", "MqttBusError", "MqttConfig",
    "MqttConfigError", "MqttSubscribeError", "MqttTimeout", "MqttTopicError", "Payload", "topic_matches",
]

logger = logging.getLogger("sfa_ops.mqtt")

Payload = bytes | str | dict[str, Any] | list[Any]
_SENDERS = 8  # concurrent publish awaits per connection: pipelines QoS 1 PUBACK round trips
_HIGH_WATER = 1024  # while connected, `await publish()` waits when this many are queued
_YIELD_EVERY = 256  # the dispatcher yields to the loop this often so I/O keeps flowing
_DEAD_LETTERS_KEPT = 100
_MAX_SUB_ID = 268_435_455  # MQTT 5 Subscription Identifier: 1 .. 2^28 - 1


class MqttSubscribeError(MqttBusError):
    """The broker refused (or could not confirm) a subscription."""


class MqttTimeout(MqttBusError, TimeoutError):
    """``wait_connected`` or ``flush`` did not finish within its timeout."""


class MqttBusClosed(MqttBusError):
    """The bus was stopped; it cannot publish or subscribe any more."""


@dataclass(frozen=True, slots=True)
class Message:
    """A received message; MQTT 5 properties are filled in when the publisher set them."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class LastWill:
    """What the broker publishes for us when our connection dies without a clean DISCONNECT."""

    topic: str
    payload: Payload
    qos: int = 1
    retain: bool = False


Handler = Callable[[Message], Awaitable[None] | None]


@dataclass(slots=True)
class _Subscription:
    topic_filter: str  # as given, without the $share prefix (what incoming topics match)
    broker_filter: str  # what the broker is asked for
    qos: int
    sub_id: int
    handlers: tuple[Handler, ...]


@dataclass(slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None
    size: int  # PUBLISH packet bytes
    seq: int  # publish order, to re-send interrupted messages in order
    delivery: Delivery
    attempts: int = 0  # connections lost while this message was in flight


def encode_payload(payload: Payload) -> bytes:
    """bytes as they are, str as UTF-8, dict/list as JSON (orjson)."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, dict | list):
        return orjson.dumps(payload)
    raise TypeError(f"MQTT payload must be bytes, str, dict or list, not {type(payload).__name__}")


class MqttBus:
    """One MQTT 5 connection shared by everything in a process; see the module docstring."""

    def __init__(
        self,
        *,
        config: MqttConfig,
        client_id: str | None = None,
        will: LastWill | None = None,
        max_payload_bytes: int = 256 * 1024,
        max_publish_bytes: int = 256 * 1024,
        max_send_attempts: int = 3,
        incoming_queue_size: int = 10_000,
        outgoing_queue_size: int = 100_000,
        logger: logging.Logger = logger,
    ) -> None:
        if min(incoming_queue_size, outgoing_queue_size, max_payload_bytes, max_publish_bytes,
               max_send_attempts) < 1:
            raise MqttConfigError("queue sizes, byte caps and max_send_attempts must be >= 1")
        self.config = config
        suffix = client_id or uuid.uuid4().hex[:12]
        self.client_id = f"{config.client_id_prefix}-{suffix}" if config.client_id_prefix else suffix
        self._will = will
        self._max_payload = max_payload_bytes
        self._max_publish = max_publish_bytes
        self._max_attempts = max_send_attempts
        self._seq = 0
        self._resend: list[_Outgoing] = []  # in flight at a connection loss: re-sent one by one
        self._dead: deque[DeadLetter] = deque(maxlen=_DEAD_LETTERS_KEPT)
        self._in_max = incoming_queue_size
        self._out_max = outgoing_queue_size
        self._high_water = min(_HIGH_WATER, outgoing_queue_size)
        self._log = logger
        self._signer = _signer_for(config)

        self._subs: dict[str, _Subscription] = {}  # by broker filter
        self._subs_by_id: dict[int, _Subscription] = {}
        self._matcher = TopicMatcher()

        self._incoming: deque[paho.MQTTMessage] = deque()
        self._in_wakeup = asyncio.Event()
        self._outgoing: deque[_Outgoing] = deque()
        self._out_items = asyncio.Semaphore(0)  # == len(self._outgoing); wakes one sender per item
        self._inflight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._room = asyncio.Event()
        self._room.set()

        self._client: BusClient | None = None  # set while a connection is up (even mid-resubscribe)
        self._connected = False
        self._connected_event = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._last_drop_log: dict[str, float] = {}
        self._c = dict.fromkeys(
            ("received", "dispatched", "unmatched", "oversized", "incoming_dropped", "handler_errors",
             "published", "publish_queued", "publish_dropped", "publish_oversized", "publish_refused",
             "publish_abandoned", "dead_lettered", "connects", "reconnects", "sessions_resumed"), 0)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the connection and dispatch loops; returns at once (see ``wait_connected``)."""
        if self._closed:
            raise MqttBusClosed("this MqttBus was stopped; create a new one")
        if self._runner is None:
            self._runner = asyncio.create_task(self._main(), name=f"mqtt-bus:{self.client_id}")

    async def stop(self, *, flush_timeout: float = 1.0) -> None:
        """Flush for up to ``flush_timeout`` s, disconnect cleanly (no Last Will), stop the loops.

        Messages still queued afterwards are counted in ``publish_dropped`` and logged.
        """
        if self._closed:
            return
        if self._connected and flush_timeout > 0:
            with contextlib.suppress(MqttTimeout):
                await self.flush(flush_timeout)
        self._closed = True
        if self._client is not None and self.config.session_expiry_s:
            self._client.end_session = True  # a clean stop: the broker need not keep our session
        if self._runner is not None:
            self._runner.cancel()
            # Bounded: a connection attempt stuck in the client library must not hang stop().
            done, _ = await asyncio.wait({self._runner}, timeout=10)
            if not done:
                self._log.warning("mqtt %s: connection loop did not stop within 10 s; left behind", self.client_id)
            self._runner = None
        unsent = [*self._resend, *self._outgoing]
        if unsent:
            self._c["publish_dropped"] += len(unsent)
            self._log.warning("mqtt %s stopped with %d unsent message(s); counted as dropped", self.client_id,
                              len(unsent))
            for item in unsent:
                item.delivery.settle("dropped:stopped")
            self._outgoing.clear()
            self._resend.clear()
        self._drained.set()
        self._room.set()

    async def __aenter__(self) -> MqttBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def connected(self) -> bool:
        """True while connected with every registered subscription restored."""
        return self._connected

    async def wait_connected(self, timeout: float) -> None:
        """Wait until connected; raises :class:`MqttTimeout`."""
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout)
        except TimeoutError as exc:
            raise MqttTimeout(f"not connected to {self.config.redacted_url} within {timeout}s") from exc

    async def flush(self, timeout: float) -> None:
        """Wait until the outgoing queue is empty and nothing is in flight; raises :class:`MqttTimeout`."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError as exc:
            raise MqttTimeout(
                f"{self._pending()} message(s) still unsent after {timeout}s") from exc

    def stats(self) -> dict[str, int | bool]:
        """Counters since start, plus ``outgoing_pending`` (queued + in flight) and ``connected``.

        ``received`` counts every delivery from the broker; ``oversized`` and ``incoming_dropped``
        are the ones no handler saw; ``dispatched`` the ones handed to handlers (``unmatched``: no
        handler any more). ``published`` counts completed sends (PUBACK for QoS 1);
        ``publish_queued`` publishes accepted while disconnected; ``publish_dropped`` messages lost
        (QoS 0 while disconnected, queue overflow, unsent at stop, rejected by the client library).
        ``dead_lettered`` counts messages given up on (see :meth:`dead_letters`), split into
        ``publish_oversized``, ``publish_refused`` (by the broker's PUBACK) and ``publish_abandoned``
        (in flight at ``max_send_attempts`` connection losses). ``connects`` counts CONNACKs,
        ``sessions_resumed`` those whose ``session_present`` flag said the broker kept our session.
        """
        out: dict[str, int | bool] = dict(self._c)
        out["outgoing_pending"] = self._pending()
        out["connected"] = self._connected
        return out

    def dead_letters(self) -> list[DeadLetter]:
        """The last messages the bus gave up on, oldest first (no payloads)."""
        return list(self._dead)

    def _pending(self) -> int:
        return len(self._outgoing) + len(self._resend) + self._inflight

    # -- subscribe ---------------------------------------------------------------------------

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

    # -- publish -----------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: Payload,
        *,
        qos: int = 0,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | str | None = None,
        user_properties: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    ) -> Delivery:
        """Queue a message and return its :class:`Delivery`; never waits for a down broker (see
        :meth:`publish_nowait`). ``await (await bus.publish(…)).wait(t)`` waits for the broker's ack.

        While connected and more than ~1000 messages are queued it waits for the senders to catch
        up, so a tight publishing loop cannot outrun the connection.
        """
        delivery = self.publish_nowait(topic, payload, qos=qos, retain=retain, response_topic=response_topic,
                                       correlation_data=correlation_data, user_properties=user_properties)
        while self._connected and len(self._outgoing) >= self._high_water:
            self._room.clear()
            await self._room.wait()
        return delivery

    def publish_nowait(
        self,
        topic: str,
        payload: Payload,
        *,
        qos: int = 0,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | str | None = None,
        user_properties: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    ) -> Delivery:
        """Queue a message for the senders, for sync code (dict/list payloads become JSON).

        Disconnected: QoS ≥ 1 waits in the queue (``publish_queued``), QoS 0 is dropped. A full
        queue drops the new message; one over ``max_publish_bytes`` is dead-lettered at once. Every
        loss is counted and logged, and the returned :class:`Delivery` says which it was.
        """
        self._check_open()
        validate_topic(topic)
        if self._signer is not None and is_signed_topic(topic):
            payload, user_properties = self._signer.sign(topic, encode_payload(payload), user_properties)
        if qos not in (0, 1, 2):
            raise MqttTopicError(f"qos must be 0, 1 or 2, not {qos!r}")
        connected = self._connected
        if not connected and qos == 0:
            self._drop("publish_dropped", "QoS 0 publish while disconnected")
            return Delivery("dropped:disconnected")
        if len(self._outgoing) >= self._out_max:
            self._drop("publish_dropped", f"outgoing queue full ({self._out_max})")
            return Delivery("dropped:queue_full")
        props = None
        if response_topic is not None or correlation_data is not None or user_properties:
            props = PublishProperties(
                response_topic,
                correlation_data.encode() if isinstance(correlation_data, str) else correlation_data,
                user_properties)
        data = encode_payload(payload)
        self._seq += 1
        item = _Outgoing(topic, data, qos, retain, props, publish_packet_size(topic, data, qos, props), self._seq,
                         Delivery())
        if item.size > self._max_publish:
            self._dead_letter(item, "oversized", f"{item.size} bytes > max_publish_bytes {self._max_publish}")
            return item.delivery
        self._outgoing.append(item)
        self._out_items.release()
        self._drained.clear()
        if not connected:
            self._c["publish_queued"] += 1
        return item.delivery

    async def _senders(self, client: BusClient) -> None:
        # Messages in flight at the last connection loss go first, one at a time and in publish
        # order: if one of them makes the broker drop us, it alone is charged an attempt.
        while self._resend:
            self._resend.sort(key=lambda i: i.seq)
            await self._send(client, self._resend.pop(0))
        async with asyncio.TaskGroup() as tg:
            for i in range(_SENDERS):
                tg.create_task(self._send_loop(client), name=f"mqtt-send-{i}:{self.client_id}")

    async def _send_loop(self, client: BusClient) -> None:
        out = self._outgoing
        while True:
            await self._out_items.acquire()
            await self._send(client, out.popleft())
            if len(out) < self._high_water // 2:
                self._room.set()

    async def _send(self, client: BusClient, item: _Outgoing) -> None:
        self._inflight += 1
        try:
            limit = client.max_packet_size
            if limit is not None and item.size > limit:
                self._dead_letter(item, "oversized", f"{item.size} bytes > the broker's maximum packet size {limit}")
                return
            code, name = await client.publish_acked(item.topic, item.payload, item.qos, item.retain, item.properties)
        except (ValueError, TypeError) as exc:  # paho refused this message; resending won't help
            self._log.error("mqtt publish to %s rejected: %s", item.topic, exc)
            item.delivery.settle("dropped:rejected")
            self._drop("publish_dropped", "message rejected by the client library")
        except BaseException:
            # Connection lost or loop cancelled: QoS >= 1 is re-sent on the next connection (at
            # least once) unless it has been in flight at too many losses; QoS 0 is gone.
            if not item.qos:
                item.delivery.settle("dropped:disconnected")
                self._drop("publish_dropped", "QoS 0 message in flight at disconnect")
            elif self._closed:
                self._resend.append(item)  # stop() counts it as dropped
            else:
                item.attempts += 1
                if item.attempts >= self._max_attempts:
                    self._dead_letter(item, "abandoned", f"in flight at {item.attempts} connection losses")
                else:
                    self._resend.append(item)
            raise
        else:
            if code >= 0x80:
                self._dead_letter(item, "refused", f"the broker answered {name}")
            else:
                self._c["published"] += 1
                item.delivery.settle(ACKED)
        finally:
            self._inflight -= 1
            if not self._outgoing and not self._inflight and not self._resend:
                self._drained.set()

    def _dead_letter(self, item: _Outgoing, reason: str, detail: str) -> None:
        self._c["dead_lettered"] += 1
        self._dead.append(DeadLetter(item.topic, item.size, item.qos, item.retain, reason, detail, time.time()))
        item.delivery.settle(reason)
        self._drop(f"publish_{reason}", f"dead-lettered ({detail}) a message to {item.topic}")

    # -- incoming ----------------------------------------------------------------------------

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
                msg, sub_ids = _to_message(pm)
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

    # -- connection --------------------------------------------------------------------------

    async def _main(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._connection_loop(), name=f"mqtt-connection:{self.client_id}")
            tg.create_task(self._dispatch_loop(), name=f"mqtt-dispatch:{self.client_id}")

    def _new_client(self) -> BusClient:
        cfg = self.config
        will = None
        if self._will is not None:
            w = self._will
            will = aiomqtt.Will(w.topic, encode_payload(w.payload), w.qos, w.retain)
        props = None
        if cfg.session_expiry_s:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = cfg.session_expiry_s
        return BusClient(
            sink=self._on_paho_message,
            properties=props,
            hostname=cfg.host,
            port=cfg.port,
            username=cfg.username,
            password=cfg.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            clean_start=cfg.clean_start,
            keepalive=cfg.keepalive_s,
            timeout=cfg.connect_timeout_s,
            tls_context=cfg.ssl_context(),
            logger=self._log,
            # paho leaves Nagle on: small PUBLISH/PUBACK packets then wait for delayed ACKs (~40 ms)
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )

    async def _connection_loop(self) -> None:
        cfg = self.config
        delay = cfg.reconnect_min_s
        ever_connected = False
        while True:
            up_since: float | None = None
            try:
                client = self._new_client()
                async with client:
                    up_since = time.monotonic()
                    self._c["connects"] += 1
                    if ever_connected:
                        self._c["reconnects"] += 1
                    ever_connected = True
                    await self._run_connection(client)
            except* aiomqtt.MqttError as group:
                self._log.warning("mqtt %s: connection to %s lost or failed: %s; retrying",
                                  self.client_id, self.config.redacted_url, _first(group))
            except* Exception:  # a bug must not end the loop (STYLE 7)
                self._log.exception("mqtt %s: unexpected error in the connection loop", self.client_id)
            finally:
                self._set_disconnected()
            # Only a connection that stayed up resets the backoff: a broker that accepts us and
            # drops us at once (a message it refuses, a kick) is not hammered.
            if up_since is not None and time.monotonic() - up_since >= cfg.reconnect_stable_s:
                delay = cfg.reconnect_min_s
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, cfg.reconnect_max_s)

    async def _run_connection(self, client: BusClient) -> None:
        self._client = client
        if client.session_present:
            self._c["sessions_resumed"] += 1
        # Always subscribe again, session present or not: the broker may have lost the session
        # (restarted without persistence, expired it) or kept one from before our last subscribe.
        subs = list(self._subs.values())
        if subs:
            await asyncio.gather(*(self._subscribe_at_broker(client, s) for s in subs))
        self._connected = True
        self._connected_event.set()
        self._log.info("mqtt %s connected to %s (session %s, %d subscription(s), %d queued, broker max packet %s)",
                       self.client_id, self.config.redacted_url, "resumed" if client.session_present else "new",
                       len(subs), self._pending(), client.max_packet_size)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_watch_disconnect(client), name=f"mqtt-watch:{self.client_id}")
            tg.create_task(self._senders(client), name=f"mqtt-senders:{self.client_id}")

    def _set_disconnected(self) -> None:
        self._client = None
        self._connected = False
        self._connected_event.clear()
        self._room.set()  # publishers waiting for room must not wait for a down broker

    # -- helpers -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise MqttBusClosed("this MqttBus was stopped")

    def _drop(self, counter: str, why: str) -> None:
        """Count a loss and log it: the first one at once, then at most once a second per kind."""
        self._c[counter] += 1
        now = time.monotonic()
        if now - self._last_drop_log.get(counter, -1e9) >= 1.0:
            self._last_drop_log[counter] = now
            self._log.warning("mqtt %s dropped a message: %s (%s=%d so far)", self.client_id, why,
                              counter, self._c[counter])


def _signer_for(config: MqttConfig) -> Signer | None:
    """The signer of system messages, when the config names a key (see ``adapters.signing``)."""
    if not config.signing_key_file:
        return None
    try:
        return Signer.from_file(config.signing_key_file)
    except SigningKeyError as exc:
        raise MqttConfigError(str(exc)) from exc


async def _watch_disconnect(client: aiomqtt.Client) -> None:
    """Return never; raise MqttError when the connection drops (our hook keeps the queue empty)."""
    async for _ in client.messages:
        pass
    raise aiomqtt.MqttError("message stream ended")


def _to_message(pm: paho.MQTTMessage) -> tuple[Message, list[int] | None]:
    payload = pm.payload if isinstance(pm.payload, bytes) else bytes(pm.payload)
    props = pm.properties
    if props is None:
        return Message(pm.topic, payload, pm.qos, bool(pm.retain)), None
    user = getattr(props, "UserProperty", None)
    msg = Message(
        pm.topic, payload, pm.qos, bool(pm.retain),
        getattr(props, "ResponseTopic", None),
        getattr(props, "CorrelationData", None),
        tuple(user) if user else (),
    )
    return msg, getattr(props, "SubscriptionIdentifier", None)


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
