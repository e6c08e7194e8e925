"""The observer's view of service instances: presence messages, the offlines it holds until the broker
proves it is still up (``policies.health.outage_hold``), and the loss of a service's last online instance
published as an event (``policies.health.outage``).

A lost instance is an event: when the Last Will of a service's last online instance is believed,
observer 0 (the one that feeds presence to the monitors) publishes ``service_unavailable`` and every
observer answers the pending calls it owns at once. A Will is believed once the observer's own QoS-0
echo comes back through the broker (about 1 ms on a live broker); a stopping broker, which sends every
client's Will as it shuts down, never returns it, and the offline then waits for the reconnect and
the instance's own ``online`` (see ``policies.health.outage_hold``)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from actors.clock import Clock
from adapters.mqtt.bus import Message
from policies.health.monitor import Unavailable
from policies.health.outage import LastInstanceLost, OutageWatch
from policies.health.outage_hold import OfflineHold
from policies.health.status import HealthPolicy
from policies.observation.config import ObservationPolicy
from policies.observation.correlation import Correlator
from policies.supervision.discovery import ServiceAdmission
from protocol import topics
from protocol.names import is_segment, is_service_name

logger = logging.getLogger("sfa_ops.observer")

_HELD_POLL_S = 0.05  # while offlines are held: how often the connection and their deadlines are looked at
PROBE_PREFIX = "sfa-ops/probe/observer-echo"
"""Under the probe topics sfa-ops may publish and read (``policies.security.broker_acl.PROBE_TOPICS``)."""


class InstanceWatch:
    """Presence handling of one observer. Every presence message is counted once, by observer 0:
    ``presence`` or ``malformed``; a new service name beyond the discovery cap is counted by the
    admission (``presenceRefused``)."""

    def __init__(self, *, cluster_id: str, index: int, bus: Any, clock: Clock, policy: ObservationPolicy,
                 health: HealthPolicy, correlator: Correlator, admission: ServiceAdmission,
                 answer_pending: Callable[[str, Unavailable, float], int],
                 failed: Callable[[str], None]) -> None:
        self.cluster_id = cluster_id
        self.index = index
        self.bus = bus
        self.clock = clock
        self.correlator = correlator
        self.admission = admission
        self._answer_pending = answer_pending
        self._failed = failed
        self.prefix = f"system/{cluster_id}/presence/"
        self.outages = OutageWatch(cluster_id=cluster_id, owner=index == 0, health=health)
        self.hold = OfflineHold(echo_timeout=policy.offline_echo_timeout, recheck=policy.offline_recheck,
                                settle=policy.offline_settle)
        self.echo_topic = f"{PROBE_PREFIX}/{cluster_id}/{index}"
        self._nonce = uuid.uuid4().hex[:12]
        self._watch: asyncio.Task[None] | None = None
        self.presence = 0
        self.malformed = 0
        self.new_real: list[str] = []
        """Services whose first instance announced itself since the last tick."""

    async def subscribe(self) -> None:
        # Every observer learns which services announced presence (so they are never counted as
        # traffic-only names); observer 0 alone feeds presence to the monitors.
        await self.bus.subscribe(topics.presence_filter(self.cluster_id), self.on_presence, qos=1)
        await self.bus.subscribe(self.echo_topic, self.on_echo, qos=0)

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()

    # -- presence --------------------------------------------------------------------------------

    def on_presence(self, msg: Message) -> None:
        rest = msg.topic[len(self.prefix):].split("/")
        ok = len(rest) == 2 and is_service_name(rest[0]) and is_segment(rest[1])
        try:
            doc = orjson.loads(msg.payload) if msg.payload else {"status": "offline"}
        except orjson.JSONDecodeError:
            doc = None
        status = doc.get("status") if isinstance(doc, dict) else None
        if not ok or status not in ("online", "offline"):
            if self.index == 0:
                self.malformed += 1
            return
        service, instance = rest
        if not self.admission.may_announce(service):
            return  # counted in presenceRefused (reported by observer 0, as malformed is)
        if self.index == 0:
            self.presence += 1
        if self.admission.announce(service):
            self.new_real.append(service)
        now = self.clock.now()
        self._link(now)
        if status == "online":
            self.hold.online(service, instance)
        else:
            d = self.hold.offline(service, instance, now, was_online=self.outages.is_online(service, instance),
                                  retained=msg.retain)
            if not d.release:  # believed once the broker proves it is still up
                if d.echo is not None:
                    self._send_echo(d.echo)
                self._watch_held()
                return
        self._apply(service, instance, status == "online", now)

    def _apply(self, service: str, instance: str, online: bool, now: float) -> None:
        if self.index == 0:
            self.correlator.on_presence(service, instance, online)
        lost = self.outages.on_presence(service, instance, online, now)
        if lost is not None:
            self.publish_lost(lost)

    def publish_lost(self, lost: LastInstanceLost) -> None:
        """The service's last instance went offline: ``service_unavailable`` now (observer 0), then
        the pending calls this observer owns."""
        if lost.message is not None:
            try:
                self.bus.publish_nowait(topics.system_errors(self.cluster_id), lost.message, qos=1)
            except Exception:
                self._failed("service_unavailable event")
        self._answer_pending(lost.service, lost.unavailable, self.clock.now())

    # -- offlines believed only once the broker proves it is up -----------------------------------

    def _link(self, now: float) -> None:
        st = self.bus.stats()
        self.hold.link(bool(st["connected"]), int(st["connects"]), now)

    def _send_echo(self, token: int) -> None:
        try:
            self.bus.publish_nowait(self.echo_topic, f"{self._nonce}:{token}".encode(), qos=0)
        except Exception:  # the echo's deadline still releases the offline
            logger.exception("observer %d: presence echo not sent", self.index)

    def on_echo(self, msg: Message) -> None:
        """Our own echo came back through the broker: the offlines held for it are believed."""
        nonce, _, token = msg.payload.decode(errors="replace").partition(":")
        if nonce != self._nonce or not token.isdigit() or len(token) > 18:
            return  # an earlier process's echo, or not ours
        now = self.clock.now()
        self._link(now)
        for off in self.hold.echoed(int(token)):
            self._apply(off.service, off.instance, False, now)

    def release_held(self) -> None:
        """Apply the held offlines whose wait is over (an echo timed out on a live connection, the
        recheck window after a reconnect passed)."""
        now = self.clock.now()
        self._link(now)
        for off in self.hold.due(now):
            self._apply(off.service, off.instance, False, now)

    def _watch_held(self) -> None:
        """While offlines are held, look at the connection and their deadlines every 50 ms (the
        observer's tick may be long)."""
        if self._watch is not None and not self._watch.done():
            return
        try:
            self._watch = asyncio.get_running_loop().create_task(self._held_loop(), name="observer-held")
        except RuntimeError:  # no loop (a synchronous unit test): release_held() is called by hand
            self._watch = None

    async def _held_loop(self) -> None:
        while self.hold.held:
            await asyncio.sleep(_HELD_POLL_S)
            try:
                self.release_held()
            except Exception:
                logger.exception("observer %d: held offlines not released this time", self.index)

    def forget(self, service: str) -> None:
        self.outages.forget(service)
        self.hold.forget(service)

    def counters(self) -> dict[str, int]:
        return {"presence": self.presence, **self.hold.counters()}


__all__ = ["PROBE_PREFIX", "InstanceWatch"]
