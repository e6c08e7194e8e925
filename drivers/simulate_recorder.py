"""What the simulator records of sfa-ops: every message on ``system/{cluster}/#`` with its arrival
time, and the latest retained health, breaker and presence states."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from adapters.mqtt.bus import Message, MqttBus
from drivers.scenarios import Observed


class Recorder:
    """Every message on ``system/{cluster}/#`` with its arrival time; the latest retained states."""

    def __init__(self, *, cluster: str, clock: Callable[[], float] = time.time) -> None:
        self.prefix = f"system/{cluster}/"
        self.clock = clock
        self.observed: list[Observed] = []
        self.health: dict[str, Any] | None = None
        self.breakers: dict[str, dict[str, Any]] = {}
        self.presence: dict[tuple[str, str], str] = {}
        self.events: deque[Observed] = deque(maxlen=50)
        self.unparsable = 0
        self._changed = asyncio.Event()

    async def start(self, bus: MqttBus) -> None:
        await bus.subscribe(self.prefix + "#", self.on_message, qos=1)

    def on_message(self, msg: Message) -> None:
        rest = msg.topic[len(self.prefix):]
        try:
            doc = orjson.loads(msg.payload) if msg.payload else {}
        except orjson.JSONDecodeError:
            self.unparsable += 1
            return
        if not isinstance(doc, dict):
            self.unparsable += 1
            return
        if rest.startswith("presence/"):
            parts = rest.split("/")
            if len(parts) == 3:
                self.presence[(parts[1], parts[2])] = str(doc.get("status", "offline"))
                self._changed.set()
            return  # published by the instances, not by sfa-ops
        if rest == "health":
            self.health = doc
        elif rest.startswith("circuit-breaker/"):
            self.breakers[rest.split("/", 1)[1]] = doc
        if msg.retain:
            return  # a state from before we subscribed, not a reaction to this run
        obs = Observed(self.clock(), rest, doc)
        self.observed.append(obs)
        if rest in ("errors", "circuit-breaker", "alerts", "emergency", "incidents"):
            self.events.append(obs)

    async def wait_presence(self, pairs: Sequence[tuple[str, str]], status: str, timeout: float) -> None:
        """Until every (service, instance) has announced ``status``; raises TimeoutError."""
        async with asyncio.timeout(timeout):
            while any(self.presence.get(p) != status for p in pairs):
                self._changed.clear()
                await self._changed.wait()

    def published_counts(self) -> dict[str, int]:
        """Messages per type (the payload's ``type``, else the topic)."""
        c = Counter(str(o.payload.get("type") or o.topic) for o in self.observed)
        return dict(sorted(c.items()))
