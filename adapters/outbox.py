"""Outbox rows waiting for the broker: :class:`UnackedOutbox` pairs each outbox id with the bus
:class:`~adapters.mqtt.Delivery` of its publish and marks a row published only once the broker
acknowledged that message.

A row whose message the bus dropped (full queue, stopped) or dead-lettered (oversized, refused,
abandoned) stays unpublished in the store: the next start republishes what it can, and the loss is
logged and counted here (``lost``).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter

from adapters.mqtt import Delivery, MqttBus, MqttBusError
from adapters.store import Store, StoreError

__all__ = ["UnackedOutbox"]


class UnackedOutbox:
    """Outbox ids published on the bus but not yet marked published in the store."""

    def __init__(self, *, store: Store, logger: logging.Logger) -> None:
        self.store = store
        self._log = logger
        self._waiting: list[tuple[int, Delivery]] = []
        self.lost: Counter[str] = Counter()  # outcome -> rows left unpublished

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, msg_id: int, delivery: Delivery) -> None:
        self._waiting.append((msg_id, delivery))

    async def mark(self, bus: MqttBus, timeout: float) -> int:
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
