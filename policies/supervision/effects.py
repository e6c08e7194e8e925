"""What the supervisor's policy (``policies.supervision.core``) decides, as values the actor carries out.

Each effect is a frozen dataclass; the actor matches on the type and does the I/O: the outbox and
the bus for :class:`Publish`, :class:`Persist` and :class:`ClearRetained`, the alert manager actor for
:class:`Alert`, a service monitor actor for :class:`OpenBreaker` and :class:`RetireMonitor`, the
store for :class:`SaveDependencies` and :class:`ReloadIncidents`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.base import WireModel


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``message`` on ``topic`` at QoS 1. With an outbox ``kind`` it is written to the outbox
    first and marked published once the broker acknowledged it; without one (retained state that is
    recomputed anyway, alerts without an alert manager) it goes straight to the bus."""

    topic: str
    message: WireModel | Mapping[str, Any]
    """A ``protocol/`` model; a mapping only for what another actor built and asked us to publish."""
    retain: bool = False
    kind: str | None = None

    def payload(self) -> dict[str, Any]:
        return self.message.to_wire() if isinstance(self.message, WireModel) else dict(self.message)


@dataclass(frozen=True, slots=True)
class Persist:
    """A message another actor already published: into the outbox, marked published."""

    topic: str
    message: WireModel | Mapping[str, Any]
    kind: str

    def payload(self) -> dict[str, Any]:
        return self.message.to_wire() if isinstance(self.message, WireModel) else dict(self.message)


@dataclass(frozen=True, slots=True)
class ClearRetained:
    """Publish an empty retained message on ``topic`` (the broker forgets the retained one)."""

    topic: str


@dataclass(frozen=True, slots=True)
class Alert:
    """Hand these alerts (the alert manager's ingest format) to the alert manager actor."""

    alerts: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class OpenBreaker:
    """Open ``service``'s breaker ahead of failures (a cascade); its monitor answers with the breaker
    events, which go back to the policy (``Supervision.on_breaker_events``)."""

    service: str
    reason: str


@dataclass(frozen=True, slots=True)
class RetireMonitor:
    """Stop ``service``'s monitor and delete its saved state (nothing respawns it on restart)."""

    service: str


@dataclass(frozen=True, slots=True)
class SaveDependencies:
    """Upsert learned dependency edges ``(caller, callee, count)`` as last seen ``at``."""

    edges: tuple[tuple[str, str, int], ...]
    at: float


@dataclass(frozen=True, slots=True)
class ReloadIncidents:
    """Read the open incidents from the store into the board (``OpsBoard.restore_incidents``), unless
    the board saw more than ``changes`` incident changes meanwhile."""

    changes: int


Effect = Publish | Persist | ClearRetained | Alert | OpenBreaker | RetireMonitor | SaveDependencies | ReloadIncidents

__all__ = ["Alert", "ClearRetained", "Effect", "OpenBreaker", "Persist", "Publish", "ReloadIncidents",
           "RetireMonitor", "SaveDependencies"]
