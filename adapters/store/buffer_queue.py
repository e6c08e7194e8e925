"""What ``BufferedStore`` keeps while the database is away: a queued write, its counters, and the
:class:`BufferStats` snapshot it reports."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.store.base import Store


@dataclass(frozen=True, kw_only=True, slots=True)
class BufferStats:
    """A snapshot of the buffer: counts are of items (events, rows, messages), not calls."""

    available: bool
    queued: int
    dropped: dict[str, int]
    failed: dict[str, int]  # refused by the store on flush (e.g. IntegrityError): retrying cannot help
    flushed: int
    outages: int


@dataclass(kw_only=True, slots=True)
class QueuedWrite:
    kind: str
    weight: int
    run: Callable[[Store], Awaitable[Any]]
    ticket: int | None = None  # outbox_add answered with this ticket
    mark_published: bool = False  # the ticket was marked published before the flush


@dataclass(kw_only=True, slots=True)
class BufferCounters:
    dropped: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    flushed: int = 0
    outages: int = 0


__all__ = ["BufferCounters", "BufferStats", "QueuedWrite"]
