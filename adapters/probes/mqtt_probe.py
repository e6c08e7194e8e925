"""The ``mqtt_broker`` probe: a round trip through the broker on a private topic, over the
process's :class:`~adapters.mqtt.bus.MqttBus`, plus mosquitto's ``$SYS/broker/#`` statistics.

Each check publishes a nonce (QoS 0, see ``_body``) on ``sfa-ops/probe/{uuid}`` and waits for it to come back;
the latency is kept in a small window whose p95 is judged (seed: > 100 ms is a warning). A bus
that is not connected fails the check at once; a round trip that never completes fails it at the
timeout.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

from adapters.mqtt.bus import Message, MqttBus
from adapters.probes import ProbeResult, ProbeSet, ProbeSetup, Problem, run_check
from policies.infrastructure.thresholds import BrokerThresholds

logger = logging.getLogger("sfa_ops.infra")

COMPONENT = "mqtt_broker"
PROBE_TOPIC_PREFIX = "sfa-ops/probe"
SYS_FILTER = "$SYS/broker/#"

_SYS_FIELDS: dict[str, str] = {  # $SYS/broker/<suffix> → details key (mosquitto src/sys_tree.c)
    "clients/connected": "clientsConnected",
    "clients/total": "clientsTotal",
    "clients/maximum": "clientsMaximum",
    "clients/disconnected": "clientsDisconnected",
    "clients/expired": "clientsExpired",
    "messages/received": "messagesReceived",
    "messages/sent": "messagesSent",
    "messages/stored": "messagesStored",
    "publish/messages/dropped": "messagesDropped",
    "subscriptions/count": "subscriptions",
    "retained messages/count": "retainedMessages",
    "heap/current": "heapCurrent",
    "heap/maximum": "heapMaximum",
    "load/messages/received/1min": "messagesReceivedPerMin",
    "load/messages/sent/1min": "messagesSentPerMin",
    "load/publish/dropped/1min": "publishDroppedPerMin",
}


def _number(text: str) -> int | float | str:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


def parse_mosquitto_sys(snapshot: Mapping[str, str | bytes]) -> dict[str, Any]:
    """Mosquitto ``$SYS/broker/…`` topic → payload map → camelCase details (absent topics are left
    out: heap figures exist only in builds with memory tracking)."""
    out: dict[str, Any] = {}
    for topic, raw in snapshot.items():
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        suffix = topic.removeprefix("$SYS/broker/")
        if suffix == "version":
            out["version"] = text
        elif suffix == "uptime":
            out["uptimeSeconds"] = _number(text.split()[0]) if text.split() else None
        elif suffix in _SYS_FIELDS:
            out[_SYS_FIELDS[suffix]] = _number(text.strip())
    return out


def p95(samples: list[float]) -> float | None:
    """Nearest-rank 95th percentile. Sorting is fine here: the window holds a few dozen probe
    round trips (one per check), not traffic samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class BrokerProbe:
    """``mqtt_broker`` round trips over ``bus``; ``await start()`` once (subscribes the probe topic
    and, with ``sys_stats``, ``$SYS/broker/#``), then ``check()`` per interval."""

    component = COMPONENT

    def __init__(
        self, *, bus: MqttBus, timeout_s: float, thresholds: BrokerThresholds, sys_stats: bool = True,
    ) -> None:
        self.bus = bus
        self.timeout_s = timeout_s
        self.thresholds = thresholds
        self.sys_stats = sys_stats
        self.topic = f"{PROBE_TOPIC_PREFIX}/{uuid.uuid4()}"
        self.latencies_ms: deque[float] = deque(maxlen=thresholds.latency_window)
        self.sys: dict[str, str] = {}
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self._last_dropped: int | None = None

    async def start(self, *, connect_timeout_s: float | None = None) -> None:
        """Subscribe; waits up to ``connect_timeout_s`` (default: the check timeout) for the bus."""
        await self.bus.subscribe(self.topic, self._on_probe, qos=0)
        if self.sys_stats:
            await self.bus.subscribe(SYS_FILTER, self._on_sys, qos=0)
        await self.bus.wait_connected(connect_timeout_s or self.timeout_s)

    def _on_probe(self, msg: Message) -> None:
        fut = self._waiting.pop(msg.payload.decode(errors="replace"), None)
        if fut is not None and not fut.done():
            fut.set_result(time.perf_counter())

    def _on_sys(self, msg: Message) -> None:
        self.sys[msg.topic] = msg.payload.decode(errors="replace")

    def p95_ms(self) -> float | None:
        return p95(list(self.latencies_ms))

    async def check(self) -> ProbeResult:
        return await run_check(COMPONENT, self.timeout_s, self._body)

    async def _body(self) -> tuple[dict[str, Any], list[Problem]]:
        if not self.bus.connected:
            raise ConnectionError(f"not connected to the broker at {self.bus.config.redacted_url}")
        nonce = uuid.uuid4().hex
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[nonce] = fut
        try:
            sent = time.perf_counter()
            # QoS 0 both ways: with QoS 1 the broker's PUBACK and the delivery are two small writes,
            # and Nagle plus delayed ACK on mosquitto's socket adds ~40 ms to every round trip.
            await self.bus.publish(self.topic, nonce, qos=0)
            received = await fut
        finally:
            self._waiting.pop(nonce, None)
        rtt = (received - sent) * 1000.0
        self.latencies_ms.append(rtt)
        p95_ms = self.p95_ms()
        problems: list[Problem] = []
        limit_ms = self.thresholds.round_trip_p95 * 1000.0
        if p95_ms is not None and p95_ms > limit_ms:
            problems.append(Problem(code="slow_round_trip", severity="warning",
                                    message=f"MQTT round trip p95 {p95_ms:.0f} ms is over {limit_ms:.0f} ms"))
        details: dict[str, Any] = {"roundTripMs": round(rtt, 3), "p95Ms": round(p95_ms or 0.0, 3),
                                   "samples": len(self.latencies_ms), "probeTopic": self.topic}
        if self.sys:
            stats = parse_mosquitto_sys(self.sys)
            details["broker"] = stats
            dropped = stats.get("messagesDropped")
            if isinstance(dropped, int):
                if self._last_dropped is not None and dropped - self._last_dropped >= self.thresholds.dropped_per_check:
                    problems.append(Problem(
                        code="messages_dropped", severity="warning",
                        message=f"the broker dropped {dropped - self._last_dropped} messages since the last check"))
                self._last_dropped = dropped
        return details, problems

    async def close(self) -> None:
        """Unsubscribe (the bus belongs to the caller and stays up)."""
        for fut in self._waiting.values():
            fut.cancel()
        self._waiting.clear()
        await self.bus.unsubscribe(self.topic)
        if self.sys_stats:
            await self.bus.unsubscribe(SYS_FILTER)


async def build(setup: ProbeSetup) -> ProbeSet:
    """``mqtt_broker``: round trips over a bus of its own to the operated broker."""
    # A probe measures the broker now: nothing queued from before is worth receiving.
    bus = MqttBus(config=setup.settings.mqtt_config(persistent=False),
                  client_id=f"infra-{setup.cluster}-{setup.component}-{uuid.uuid4().hex[:6]}")
    await bus.start()
    broker = BrokerProbe(bus=bus, timeout_s=setup.timeout, thresholds=setup.thresholds)
    try:
        await broker.start(connect_timeout_s=setup.timeout)
    except Exception:  # not connected yet: the checks say so; the bus keeps reconnecting
        logger.warning("infra checker %s: broker not reachable at start", setup.component)
    return ProbeSet(probes={"broker": broker}, closers=[bus.stop])
