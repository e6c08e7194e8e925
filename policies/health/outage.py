"""The loss of a service's last live instance, decided as an event from presence (pure).

A service instance's Last Will (``system/{c}/presence/{S}/{instance}`` ``offline``) reaches the
observer a few milliseconds after its process dies. :class:`OutageWatch` keeps which instances of
each service are online as the observer sees them and, when the one that just went offline was the
last online one, returns a :class:`LastInstanceLost`: the ``service_unavailable`` message (built
through ``protocol.system.ServiceUnavailable``) for the observer to publish at once, and the data of
its -32503 answers to pending calls. The monitor reaches the same conclusion on the next tick; the
watch then marks that tick's result as already published (:meth:`OutageWatch.reconcile`), so the
supervisor does not publish a second message for the same outage (it still raises the alerts and
runs the cascade, with the published message).

It decides exactly as the health policy would (``policies.health.status``): only while ``down.no_instance_online``
is on and ``down`` needs a single evaluation without hold; never for a service the monitors already
report down; never for an instance it has not seen online (a retained offline on subscribe, or an
offline for an unknown instance, is no event). Presence is authenticated by the broker (a service's
principal may publish only its own presence, ``policies.security.broker_acl``), so a forged offline cannot
come from another principal; the watch adds that a lone offline can only end an outage it saw begin.

If the monitor does not confirm the outage on its next result (the instance came back within the
tick, so the monitor never saw it offline), the watch closes it with a ``service_recovered`` for the
observer to publish, so every published outage is followed by its recovery.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

from policies.health.monitor import MAX_INSTANCES, MonitorResult, Unavailable
from policies.health.status import HealthPolicy, HealthStatus, Reason
from protocol.system import ServiceRecovered, ServiceUnavailable, UnavailableDetails

MAX_SERVICES = 10_000
"""Services whose instances are tracked; presence of a service beyond it is counted, never tracked."""


@dataclass(frozen=True, slots=True)
class LastInstanceLost:
    """The last online instance of ``service`` went offline: publish ``message`` now (the owner
    only, else ``None``), answer its pending calls with ``unavailable`` (every observer, its own)."""

    service: str
    instance: str
    message: dict[str, Any] | None
    unavailable: Unavailable


@dataclass(slots=True)
class _Announced:
    message: dict[str, Any]
    at: float
    tick: int
    """The observer's tick count when announced: the next tick's delta carries the offline."""


class OutageWatch:
    """One observer's view of online instances, and the outages it announced but the monitors have
    not confirmed yet."""

    def __init__(self, *, cluster_id: str, health: HealthPolicy, owner: bool = True) -> None:
        damping = health.damping_for(HealthStatus.DOWN)
        self.cluster_id = cluster_id
        self.owner = owner
        """Publishes the event (observer 0, which alone feeds presence to the monitors); the others
        only answer the pending calls they own."""
        self.enabled = health.down.no_instance_online and damping.evaluations == 1 and damping.hold is None
        self._recovery = health.recovery_for(Reason.NO_RUNNING_PODS)
        self.online: dict[str, dict[str, bool]] = {}
        self.down: set[str] = set()
        """Services the monitors reported down on their last result."""
        self.announced: dict[str, _Announced] = {}
        self.refused = 0
        """Presence changes not tracked (a service or instance beyond the bounds)."""
        self.published = 0
        self.ticks = 0
        """Ticks begun (:meth:`begin_tick`, at each collect of the observer's deltas)."""

    def begin_tick(self) -> int:
        """Called when the observer drains its deltas; returns the tick to pass to :meth:`reconcile`."""
        self.ticks += 1
        return self.ticks

    def on_presence(self, service: str, instance: str, online: bool, now: float) -> LastInstanceLost | None:
        """Record one presence change; the event when it took the service's last online instance."""
        instances = self.online.get(service)
        if instances is None:
            if len(self.online) >= MAX_SERVICES:
                self.refused += 1
                return None
            instances = self.online[service] = {}
        was_online = instances.get(instance, False)
        if instance not in instances and len(instances) >= MAX_INSTANCES:
            self.refused += 1
            return None
        instances[instance] = online
        if online or not was_online or any(instances.values()):
            return None
        if not self.enabled or service in self.down or service in self.announced:
            return None
        lost = self._lost(service, instance, len(instances), now)
        if lost.message is not None:
            self.announced[service] = _Announced(lost.message, now, self.ticks)
            self.published += 1
        return lost

    def _lost(self, service: str, instance: str, total: int, now: float) -> LastInstanceLost:
        reason = Reason.NO_RUNNING_PODS.value
        unavailable = Unavailable(reason, self._recovery.estimate, self._recovery.retry_after)
        if not self.owner:
            return LastInstanceLost(service, instance, None, unavailable)
        message = ServiceUnavailable(
            cluster_id=self.cluster_id, service=service, timestamp=now, correlation_id=f"incident-{uuid.uuid4()}",
            reason=reason,
            details=UnavailableDetails(running_pods=0, total_pods=total, failure_reason=reason),
            estimated_recovery=self._recovery.estimate,
            impact="high",
        ).to_wire()
        return LastInstanceLost(service, instance, message, unavailable)

    def reconcile(self, results: list[MonitorResult], tick: int,
                  now: float) -> tuple[list[MonitorResult], list[dict[str, Any]]]:
        """The monitors' results of ``tick``, with the outages announced here marked as published
        (their message replaced by the one published), and the ``service_recovered`` messages to
        publish for announced outages the monitors did not confirm. An outage announced after
        ``tick`` began is left for a later tick (its offline is not in these results)."""
        out: list[MonitorResult] = []
        recovered: list[dict[str, Any]] = []
        for r in results:
            status = r.summary.get("status")
            if status == HealthStatus.DOWN.value:
                self.down.add(r.service)
            else:
                self.down.discard(r.service)
            a = self.announced.get(r.service)
            if a is None or a.tick >= tick:
                out.append(r)
                continue
            del self.announced[r.service]
            msg = r.health_message
            if msg is not None and msg.get("type") == "service_unavailable":
                out.append(replace(r, health_message=a.message, health_published=True))
                continue
            out.append(r)
            if status != HealthStatus.DOWN.value:
                # The monitor never saw this outage (the instance was back within the tick): close it.
                recovered.append(ServiceRecovered(
                    cluster_id=self.cluster_id, service=r.service, timestamp=now,
                    correlation_id=a.message["correlationId"], previous_status=HealthStatus.DOWN.value,
                    downtime_seconds=round(max(0.0, now - a.at), 3)).to_wire())
        return out, recovered

    def is_online(self, service: str, instance: str) -> bool:
        """Whether ``instance`` of ``service`` is online as this watch saw it."""
        return self.online.get(service, {}).get(instance, False)

    def forget(self, service: str) -> None:
        self.online.pop(service, None)
        self.down.discard(service)
        self.announced.pop(service, None)


__all__ = ["MAX_SERVICES", "LastInstanceLost", "OutageWatch"]
