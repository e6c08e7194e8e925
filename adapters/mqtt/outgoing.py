"""The outgoing side of :class:`~adapters.mqtt.bus.MqttBus`: a bounded queue that never blocks on a
down broker, concurrent senders pipelining QoS 1 acknowledgements, re-sending what was in flight at a
connection loss (one at a time, in order), and dead letters for what can never be sent."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from paho.mqtt.properties import Properties

from adapters.mqtt.base import BusCore
from adapters.mqtt.client import (
    ACKED,
    BusClient,
    DeadLetter,
    Delivery,
    PublishProperties,
    publish_packet_size,
)
from adapters.mqtt.message import Payload, encode_payload
from adapters.mqtt.signing import Signer
from adapters.mqtt.topics import MqttTopicError, validate_topic
from protocol.signing import is_signed_topic

_SENDERS = 8  # concurrent publish awaits per connection: pipelines QoS 1 PUBACK round trips
_HIGH_WATER = 1024  # while connected, `await publish()` waits when this many are queued
_DEAD_LETTERS_KEPT = 100


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



class OutgoingSide(BusCore):
    """Publish, send and dead-letter (mixed into ``MqttBus``)."""

    _signer: Signer | None
    _outgoing: deque[_Outgoing]
    _out_items: asyncio.Semaphore
    _inflight: int
    _drained: asyncio.Event
    _room: asyncio.Event
    _resend: list[_Outgoing]
    _dead: deque[DeadLetter]
    _seq: int
    _max_publish: int
    _max_attempts: int
    _out_max: int
    _high_water: int

    def _init_outgoing(self, *, max_publish_bytes: int, max_send_attempts: int, outgoing_queue_size: int) -> None:
        self._max_publish = max_publish_bytes
        self._max_attempts = max_send_attempts
        self._seq = 0
        self._resend = []  # in flight at a connection loss: re-sent one by one
        self._dead = deque(maxlen=_DEAD_LETTERS_KEPT)
        self._out_max = outgoing_queue_size
        self._high_water = min(_HIGH_WATER, outgoing_queue_size)
        self._outgoing = deque()
        self._out_items = asyncio.Semaphore(0)  # == len(self._outgoing); wakes one sender per item
        self._inflight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._room = asyncio.Event()
        self._room.set()

    def dead_letters(self) -> list[DeadLetter]:
        """The last messages the bus gave up on, oldest first (no payloads)."""
        return list(self._dead)

    def _pending(self) -> int:
        return len(self._outgoing) + len(self._resend) + self._inflight

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



__all__ = ["OutgoingSide"]
