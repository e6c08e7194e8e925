"""Persist-then-publish, the one implementation the supervisor and the security actors share.

:class:`Outbox` writes a message to the store's outbox first, then publishes it at QoS 1, and marks
the row published once the broker acknowledged that message (:class:`UnackedOutbox` pairs each
outbox id with the bus :class:`~adapters.mqtt.bus.Delivery` of its publish). A row whose message the bus
dropped (full queue, stopped) or dead-lettered (oversized, refused, abandoned) stays unpublished in
the store: the next start republishes what it can (:meth:`Outbox.republish`), and the loss is logged
and counted (``UnackedOutbox.lost``).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from adapters.mqtt.bus import Delivery, MqttBusError, Payload
from adapters.store import OutboxRecord, Store, StoreError

__all__ = ["Outbox", "UnackedOutbox"]


class PublishingBus(Protocol):
    """The part of :class:`~adapters.mqtt.bus.MqttBus` the outbox uses (``CapturingBus`` has it too)."""

    def publish_nowait(self, topic: str, payload: Payload, *, qos: int = 0, retain: bool = False) -> Delivery: ...

    async def flush(self, timeout: float) -> None: ...


class UnackedOutbox:
    """Outbox ids published on the bus but not yet marked published in the store."""

    def __init__(self, *, store: Store, logger: logging.Logger) -> None:
        self.store = store
        self._log = logger
        self._waiting: list[tuple[int, Delivery]] = []
        self._ids: set[int] = set()
        self.lost: Counter[str] = Counter()  # outcome -> rows left unpublished

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._ids

    def add(self, msg_id: int, delivery: Delivery) -> None:
        self._waiting.append((msg_id, delivery))
        self._ids.add(msg_id)

    async def mark(self, bus: PublishingBus, timeout: float) -> int:
        """Wait up to ``timeout`` s for the bus to drain, then mark the acknowledged rows published;
        rows still in flight wait for a later call. Returns how many rows were marked."""
        if not self._waiting:
            return 0
        with contextlib.suppress(MqttBusError):
            await bus.flush(timeout)
        acked: list[int] = []
        pending: list[tuple[int, Delivery]] = []
        lost: Counter[str] = Counter()
        for msg_id, delivery in self._waiting:
            if delivery.acked:
                acked.append(msg_id)
            elif delivery.done:
                lost[delivery.outcome] += 1
            else:
                pending.append((msg_id, delivery))
        self._waiting = pending
        self._ids = {i for i, _ in pending}
        if lost:
            self.lost.update(lost)
            self._log.warning("%d outbox message(s) not acknowledged by the broker (%s); left unpublished",
                              sum(lost.values()), ", ".join(f"{k}: {n}" for k, n in sorted(lost.items())))
        if acked:
            try:
                await self.store.outbox_mark_published(acked)
            except StoreError:
                self._log.exception("could not mark %d outbox messages published", len(acked))
        return len(acked)


class Outbox:
    """Outbox row first, then QoS 1 on ``bus``; marked published by :meth:`flush` once acknowledged.
    ``published`` counts the messages written, by outbox ``kind``."""

    def __init__(self, *, store: Store, bus: PublishingBus, logger: logging.Logger) -> None:
        self.store = store
        self.bus = bus
        self.unacked = UnackedOutbox(store=store, logger=logger)
        self.published: Counter[str] = Counter()
        self._log = logger

    async def publish(self, topic: str, payload: Mapping[str, Any], *, retain: bool = False, kind: str) -> None:
        """Persist, then publish (QoS 1)."""
        doc = dict(payload)
        msg_id = await self.store.outbox_add(topic, doc, qos=1, retain=retain, kind=kind)
        self.unacked.add(msg_id, self.bus.publish_nowait(topic, doc, qos=1, retain=retain))
        self.published[kind] += 1

    async def record(self, topic: str, payload: Mapping[str, Any], *, kind: str) -> None:
        """A message another actor already published: into the outbox, marked published (the store
        holds every finding)."""
        msg_id = await self.store.outbox_add(topic, dict(payload), qos=1, kind=kind)
        await self.store.outbox_mark_published([msg_id])
        self.published[kind] += 1

    def republish(self, rows: Iterable[OutboxRecord]) -> int:
        """Publish again the rows a previous run wrote but never saw acknowledged (at start). A row
        already waiting for its acknowledgement is not sent twice, so a start that is retried after
        a failure may call this again. Returns how many were sent."""
        sent = 0
        for rec in rows:
            if rec.id in self.unacked:
                continue
            self.unacked.add(rec.id, self.bus.publish_nowait(rec.topic, rec.payload, qos=rec.qos, retain=rec.retain))
            sent += 1
        if sent:
            self._log.info("republished %d messages a previous run had not published", sent)
        return sent

    async def flush(self, timeout: float) -> int:
        """Wait for the bus, then mark what the broker acknowledged as published; what is still in
        flight is marked by a later call. Returns how many rows were marked."""
        return await self.unacked.mark(self.bus, timeout)
