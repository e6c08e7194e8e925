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
  an Ed25519 key id and signature as MQTT 5 user properties (``adapters.mqtt.signing``).

Errors::

    MqttBusError
     ├── MqttConfigError     bad URL or option (adapters.mqtt.config)
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
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.client import BusClient, DeadLetter, Delivery
from adapters.mqtt.config import MqttBusError, MqttConfig, MqttConfigError
from adapters.mqtt.incoming import IncomingSide
from adapters.mqtt.message import (
    Handler,
    LastWill,
    Message,
    MqttBusClosed,
    MqttSubscribeError,
    MqttTimeout,
    Payload,
    encode_payload,
)
from adapters.mqtt.outgoing import OutgoingSide
from adapters.mqtt.signing import Signer, SigningKeyError
from adapters.mqtt.topics import MqttTopicError, topic_matches

__all__ = [
    "DeadLetter", "Delivery", "Handler", "LastWill", "Message", "MqttBus", "MqttBusClosed", "MqttBusError", "MqttConfig",
    "MqttConfigError", "MqttSubscribeError", "MqttTimeout", "MqttTopicError", "Payload", "encode_payload",
    "topic_matches",
]

logger = logging.getLogger("sfa_ops.mqtt")


class MqttBus(IncomingSide, OutgoingSide):
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
        self._log = logger
        self._signer = _signer_for(config)
        self._init_incoming(max_payload_bytes=max_payload_bytes, incoming_queue_size=incoming_queue_size)
        self._init_outgoing(max_publish_bytes=max_publish_bytes, max_send_attempts=max_send_attempts,
                            outgoing_queue_size=outgoing_queue_size)
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


def _signer_for(config: MqttConfig) -> Signer | None:
    """The signer of system messages, when the config names a key (see ``adapters.mqtt.signing``)."""
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


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
