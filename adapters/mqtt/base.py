"""The state every part of :class:`~adapters.mqtt.bus.MqttBus` shares, and its loss counting."""

from __future__ import annotations

import asyncio
import logging
import time

from adapters.mqtt.client import BusClient
from adapters.mqtt.config import MqttConfig
from adapters.mqtt.message import MqttBusClosed


class BusCore:
    """Attributes set by ``MqttBus.__init__``; helpers both directions use."""

    config: MqttConfig
    client_id: str
    _log: logging.Logger
    _c: dict[str, int]
    _closed: bool
    _connected: bool
    _connected_event: asyncio.Event
    _client: BusClient | None
    _last_drop_log: dict[str, float]

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


__all__ = ["BusCore"]
