"""What ``PlatformAwareClient`` tells the application: the typed events its ``on_event`` callbacks
receive, and a call's :class:`CallResult` (flagged ``stale`` when served from the cache)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """Base of what ``on_event`` callbacks receive; ``at`` is epoch seconds."""

    at: float


@dataclass(frozen=True, slots=True)
class ServiceUnavailableEvent(ClientEvent):
    service: str
    reason: str
    retry_after: float | None
    estimated_recovery: str | None


@dataclass(frozen=True, slots=True)
class ServiceRecoveredEvent(ClientEvent):
    service: str


@dataclass(frozen=True, slots=True)
class ServiceDegradedEvent(ClientEvent):
    service: str
    reason: str


@dataclass(frozen=True, slots=True)
class BreakerChangedEvent(ClientEvent):
    service: str
    state: str
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class CascadePreventedEvent(ClientEvent):
    origin_service: str
    affected_services: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InfrastructureWarningEvent(ClientEvent):
    component: str
    severity: str
    message: str
    impact: str


@dataclass(frozen=True, slots=True)
class InfrastructureRecoveredEvent(ClientEvent):
    component: str


@dataclass(frozen=True, slots=True)
class StaleDataServedEvent(ClientEvent):
    service: str
    method: str
    age_seconds: float
    reason: str


@dataclass(frozen=True, slots=True)
class CallResult:
    """A call's value; ``stale`` when it came from the cache because the service could not be
    called (``age_seconds`` old)."""

    value: Any
    stale: bool = False
    age_seconds: float = 0.0


EventCallback = Callable[[ClientEvent], Awaitable[None] | None]
