"""The one MQTT bus everything in sfa-ops uses: :class:`MqttBus` over a single long-lived aiomqtt
connection (MQTT 5) with a reconnect loop, handler dispatch and a bounded outgoing queue.

How it behaves:

- ``start()`` returns at once; a reconnect loop (jittered exponential backoff, ``reconnect_min_s``
  doubling to ``reconnect_max_s``) keeps one connection up. On every (re)connect it re-subscribes
  everything registered, *then* counts as connected and flushes the outgoing queue.
- ``publish`` never blocks on a down broker: QoS ≥ 1 messages wait in a bounded queue and are sent
  after reconnect (at least once: a message in flight when the connection died is sent again);
  QoS 0 messages published while disconnected are counted as dropped. Overflow is counted and logged.
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
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
import orjson
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt_config import MqttBusError, MqttConfig, MqttConfigError
from adapters.mqtt_topics import MqttTopicError, TopicMatcher, topic_matches, validate_filter, validate_topic
from adapters.signing import Signer, SigningKeyError
from protocol.signing import is_signed_topic

__all__ = [
    "Handler", "LastWill", "Message", "MqttBus", "MqttBusClosed", "MqttBusError", "MqttConfig",
    "MqttConfigError", "MqttSubscribeError", "MqttTimeout", "MqttTopicError", "Payload", "topic_matches",
]

logger = logging.getLogger("sfa_ops.mqtt")

Payload = bytes | str | dict[str, Any] | list[Any]
_SENDERS = 8  # concurrent publish awaits per connection: pipelines QoS 1 PUBACK round trips
_HIGH_WATER = 1024  # while connected, `await publish()` waits when this many are queued
_YIELD_EVERY = 256  # the dispatcher yields to the loop this often so I/O keeps flowing


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


def encode_payload(payload: Payload) -> bytes:
    """bytes as they are, str as UTF-8, dict/list as JSON (orjson)."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, dict | list):
        return orjson.dumps(payload)
    raise TypeError(f"MQTT payload must be bytes, str, dict or list, not {type(payload).__name__}")


class _BusClient(aiomqtt.Client):
    """aiomqtt.Client that hands each received paho message straight to the bus.

    Why: aiomqtt's ``messages`` iterator creates a task and an ``asyncio.wait`` per message, which
    is most of its per-message cost. paho calls ``_on_message`` on the event loop thread; aiomqtt
    2.x (pinned in uv.lock) has kept this hook stable. ``messages`` is still used, only to learn
    of a disconnect. test_mqtt_bus.py fails loudly if an upgrade breaks this.
    """

    def __init__(self, *, sink: Callable[[paho.MQTTMessage], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._bus_sink = sink

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._bus_sink(message)


class MqttBus:
    """One MQTT 5 connection shared by everything in a process; see the module docstring."""

    def __init__(
        self,
        *,
        config: MqttConfig,
        client_id: str | None = None,
        will: LastWill | None = None,
        max_payload_bytes: int = 256 * 1024,
        incoming_queue_size: int = 10_000,
        outgoing_queue_size: int = 100_000,
        logger: logging.Logger = logger,
    ) -> None:
        if incoming_queue_size < 1 or outgoing_queue_size < 1 or max_payload_bytes < 1:
            raise MqttConfigError("queue sizes and max_payload_bytes must be >= 1")
        self.config = config
        suffix = client_id or uuid.uuid4().hex[:12]
        self.client_id = f"{config.client_id_prefix}-{suffix}" if config.client_id_prefix else suffix
        self._will = will
        self._max_payload = max_payload_bytes
        self._in_max = incoming_queue_size
        self._out_max = outgoing_queue_size
        self._high_water = min(_HIGH_WATER, outgoing_queue_size)
        self._log = logger
        self._signer = _signer_for(config)

        self._subs: dict[str, _Subscription] = {}  # by broker filter
        self._subs_by_id: dict[int, _Subscription] = {}
        self._next_sub_id = 1
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

        self._client: _BusClient | None = None  # set while a connection is up (even mid-resubscribe)
        self._connected = False
        self._connected_event = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._last_drop_log: dict[str, float] = {}
        self._c = dict.fromkeys(
            ("received", "dispatched", "unmatched", "oversized", "incoming_dropped", "handler_errors",
             "published", "publish_queued", "publish_dropped", "reconnects"), 0)

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
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._outgoing:
            lost = len(self._outgoing)
            self._c["publish_dropped"] += lost
            self._log.warning("mqtt %s stopped with %d unsent message(s); counted as dropped", self.client_id, lost)
            self._outgoing.clear()
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
                f"{len(self._outgoing) + self._inflight} message(s) still unsent after {timeout}s") from exc

    def stats(self) -> dict[str, int | bool]:
        """Counters since start, plus ``outgoing_pending`` (queued + in flight) and ``connected``.

        ``received`` counts every delivery from the broker; ``oversized`` and ``incoming_dropped``
        are the ones no handler saw; ``dispatched`` the ones handed to handlers (``unmatched``: no
        handler any more). ``published`` counts completed sends (PUBACK for QoS 1);
        ``publish_queued`` publishes accepted while disconnected; ``publish_dropped`` messages lost
        (QoS 0 while disconnected, queue overflow, unsent at stop, rejected by the client library).
        """
        out: dict[str, int | bool] = dict(self._c)
        out["outgoing_pending"] = len(self._outgoing) + self._inflight
        out["connected"] = self._connected
        return out

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
            sub = _Subscription(topic_filter, broker_filter, qos, self._next_sub_id, (handler,))
            self._next_sub_id += 1
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

    async def _subscribe_at_broker(self, client: _BusClient, sub: _Subscription) -> None:
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
    ) -> None:
        """Queue a message and return; never waits for a down broker (see :meth:`publish_nowait`).

        While connected and more than ~1000 messages are queued it waits for the senders to catch
        up, so a tight publishing loop cannot outrun the connection.
        """
        self.publish_nowait(topic, payload, qos=qos, retain=retain, response_topic=response_topic,
                            correlation_data=correlation_data, user_properties=user_properties)
        while self._connected and len(self._outgoing) >= self._high_water:
            self._room.clear()
            await self._room.wait()

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
    ) -> None:
        """Queue a message for the senders, for sync code (dict/list payloads become JSON).

        Disconnected: QoS ≥ 1 waits in the queue (``publish_queued``), QoS 0 is dropped. A full
        queue drops the new message. Every drop is counted in ``publish_dropped`` and logged.
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
            return
        if len(self._outgoing) >= self._out_max:
            self._drop("publish_dropped", f"outgoing queue full ({self._out_max})")
            return
        props = None
        if response_topic is not None or correlation_data is not None or user_properties:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation_data is not None:
                props.CorrelationData = (
                    correlation_data.encode() if isinstance(correlation_data, str) else correlation_data)
            if user_properties:
                pairs = user_properties.items() if isinstance(user_properties, Mapping) else user_properties
                props.UserProperty = [(str(k), str(v)) for k, v in pairs]
        self._outgoing.append(_Outgoing(topic, encode_payload(payload), qos, retain, props))
        self._out_items.release()
        self._drained.clear()
        if not connected:
            self._c["publish_queued"] += 1

    async def _send_loop(self, client: _BusClient) -> None:
        out = self._outgoing
        while True:
            await self._out_items.acquire()
            item = out.popleft()
            self._inflight += 1
            try:
                await client.publish(item.topic, item.payload, item.qos, item.retain, item.properties)
            except (ValueError, TypeError) as exc:  # paho refused this message; resending won't help
                self._log.error("mqtt publish to %s rejected: %s", item.topic, exc)
                self._drop("publish_dropped", "message rejected by the client library")
            except BaseException:
                # Connection lost or loop cancelled: QoS >= 1 goes back to the front for the next
                # connection (at least once); QoS 0 is gone.
                if item.qos:
                    out.appendleft(item)
                    self._out_items.release()
                else:
                    self._drop("publish_dropped", "QoS 0 message in flight at disconnect")
                raise
            else:
                self._c["published"] += 1
            finally:
                self._inflight -= 1
                if not out and not self._inflight:
                    self._drained.set()
            if len(out) < self._high_water // 2:
                self._room.set()

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
                return sub.handlers if sub is not None else ()
            merged: dict[Handler, None] = {}
            for sid in sub_ids:
                sub = self._subs_by_id.get(sid)
                if sub is not None:
                    merged.update(dict.fromkeys(sub.handlers))
            return tuple(merged)
        return self._matcher.match(topic)

    # -- connection --------------------------------------------------------------------------

    async def _main(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._connection_loop(), name=f"mqtt-connection:{self.client_id}")
            tg.create_task(self._dispatch_loop(), name=f"mqtt-dispatch:{self.client_id}")

    def _new_client(self) -> _BusClient:
        cfg = self.config
        will = None
        if self._will is not None:
            w = self._will
            will = aiomqtt.Will(w.topic, encode_payload(w.payload), w.qos, w.retain)
        return _BusClient(
            sink=self._on_paho_message,
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
        delay = self.config.reconnect_min_s
        ever_connected = False
        while True:
            try:
                client = self._new_client()
                async with client:
                    delay = self.config.reconnect_min_s
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
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.config.reconnect_max_s)

    async def _run_connection(self, client: _BusClient) -> None:
        self._client = client
        subs = list(self._subs.values())
        if subs:
            await asyncio.gather(*(self._subscribe_at_broker(client, s) for s in subs))
        self._connected = True
        self._connected_event.set()
        self._log.info("mqtt %s connected to %s (%d subscription(s), %d queued)", self.client_id,
                       self.config.redacted_url, len(subs), len(self._outgoing))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_watch_disconnect(client), name=f"mqtt-watch:{self.client_id}")
            for i in range(_SENDERS):
                tg.create_task(self._send_loop(client), name=f"mqtt-send-{i}:{self.client_id}")

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
