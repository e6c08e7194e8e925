"""``BufferedStore``: keep running while the database is away.

Writes (outbox, audit, metrics, state, alerts, incidents, actions, dependencies) that cannot reach
the store wait in a bounded in-memory queue and are retried with jittered exponential backoff, then
flushed in submission order once it is back; while anything is queued, new writes queue behind it so
order holds. A write that does not fit is dropped and counted per kind — never silently — and the
``on_unavailable`` / ``on_recovered`` / ``on_drop`` hooks let the caller raise an alert. Reads (and
the few writes whose answer the caller needs now: ``baseline_put``, purges) raise StoreUnavailable
while the store is away. Delivery is at least once: a write whose commit was lost with the
connection is retried, so the outbox may hold a message twice.

``outbox_add`` answers a queued message with a negative ticket instead of an id; passing the ticket
to ``outbox_mark_published`` works before and after the flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

from adapters.store.base import Store, StoreError, StoreUnavailable
from adapters.store.buffer_queue import BufferCounters, BufferStats, QueuedWrite
from adapters.store.records import (
    ActionRecord,
    AlertRecord,
    AuditRecord,
    BaselineRecord,
    Dependency,
    IncidentRecord,
    MetricRollup,
    OutboxRecord,
    VerifyResult,
)
from policies.audit.anchors import ChainState

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


def _mark_published(message_id: int) -> Callable[[Store], Awaitable[None]]:
    return lambda s: s.outbox_mark_published([message_id])


def _quiet(hook: Callable[..., None] | None, *args: Any) -> None:
    """Run a caller's hook; a failing hook is logged, never allowed to stop the buffer."""
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        log.exception("store buffer hook %r failed", hook)


class BufferedStore(Store):
    """Wraps ``inner``; see the module docstring. Hooks are plain callables run on the loop:
    ``on_unavailable(exc)``, ``on_recovered(outage_seconds, flushed_items)``, ``on_drop(kind, n)``."""

    def __init__(
        self, *, inner: Store, max_queued: int = 10_000,
        backoff_initial: float = 0.1, backoff_max: float = 5.0,
        on_unavailable: Callable[[StoreUnavailable], None] | None = None,
        on_recovered: Callable[[float, int], None] | None = None,
        on_drop: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        self._inner = inner
        self._max = max_queued
        self._backoff = (backoff_initial, backoff_max)
        self._on_unavailable, self._on_recovered, self._on_drop = on_unavailable, on_recovered, on_drop
        self._clock = clock
        self._queue: deque[QueuedWrite] = deque()
        self._queued = 0
        self._counters = BufferCounters()
        self._available = True
        self._opened = False
        self._down_since = 0.0
        self._flushed_at_down = 0
        self._flusher: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._next_ticket = -1
        self._tickets: dict[int, QueuedWrite] = {}  # queued outbox_add by ticket
        self._resolved: OrderedDict[int, int] = OrderedDict()  # flushed ticket -> real id

    @property
    def dialect(self) -> str:
        return self._inner.dialect

    @property
    def inner(self) -> Store:
        """The wrapped store."""
        return self._inner

    def stats(self) -> BufferStats:
        """Current availability, queue depth and per-kind drop/failure counts."""
        c = self._counters
        return BufferStats(available=self._available, queued=self._queued, dropped=dict(c.dropped),
                           failed=dict(c.failed), flushed=c.flushed, outages=c.outages)

    # ---------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        """Open the inner store; if it is unreachable, keep trying in the background instead."""
        try:
            await self._inner.open()
            self._opened = True
        except StoreUnavailable as exc:
            self._went_down(exc)

    async def close(self, *, flush_timeout: float = 5.0) -> None:
        """Give queued writes ``flush_timeout`` seconds, then stop; what is left is logged as lost."""
        if self._queue and not await self.drain(flush_timeout):
            log.error("closing the store with %d queued writes unflushed", self._queued)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self._inner.close()

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until the queue is flushed and the store is available; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def ping(self) -> None:
        await self._read(self._inner.ping)

    # ---------------------------------------------------------------- machinery

    def _went_down(self, exc: StoreUnavailable) -> None:
        if self._available:
            self._available = False
            self._idle.clear()
            self._counters.outages += 1
            self._down_since = self._clock()
            self._flushed_at_down = self._counters.flushed
            log.warning("store unavailable, buffering writes: %s", exc)
            _quiet(self._on_unavailable, exc)
        self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="store-buffer-flush")

    async def _submit(self, op: QueuedWrite) -> Any:
        """Write through when nothing is queued; otherwise (or on failure) queue behind the rest."""
        if self._available and not self._queue:
            try:
                return await op.run(self._inner)
            except StoreUnavailable as exc:
                self._went_down(exc)
        self._enqueue(op)
        return None

    def _enqueue(self, op: QueuedWrite) -> None:
        self._idle.clear()
        if self._queued + op.weight > self._max:
            self._counters.dropped[op.kind] = self._counters.dropped.get(op.kind, 0) + op.weight
            _quiet(self._on_drop, op.kind, op.weight)
        else:
            self._queue.append(op)
            self._queued += op.weight
            if op.ticket is not None:
                self._tickets[op.ticket] = op
        self._ensure_flusher()

    async def _flush_loop(self) -> None:
        delay = self._backoff[0]
        while True:
            try:
                if not self._opened:
                    await self._inner.open()
                    self._opened = True
                if not self._queue:
                    if not self._available:
                        await self._inner.ping()  # a read failed with nothing queued: wait for it
                    self._recovered()
                    return
                await self._flush_one(self._queue[0])
                delay = self._backoff[0]
            except StoreUnavailable:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter: restarts don't stampede
                delay = min(delay * 2, self._backoff[1])
            except Exception:
                # Never let the flusher die with writes queued; back off and try again.
                log.exception("store buffer flush step failed")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff[1])

    async def _flush_one(self, op: QueuedWrite) -> None:
        try:
            result = await op.run(self._inner)
        except StoreUnavailable:
            raise
        except StoreError as exc:
            log.error("store refused a buffered %s write (%d items), dropping it: %s", op.kind, op.weight, exc)
            self._counters.failed[op.kind] = self._counters.failed.get(op.kind, 0) + op.weight
            self._pop(op)
            return
        if op.ticket is not None:
            self._tickets.pop(op.ticket, None)
            if op.mark_published:
                # Stays at the head until this succeeds too.
                op.run, op.ticket = _mark_published(int(result)), None
                return
            self._resolved[op.ticket] = int(result)
            while len(self._resolved) > self._max:
                self._resolved.popitem(last=False)
        self._pop(op)

    def _pop(self, op: QueuedWrite) -> None:
        self._queue.popleft()
        self._queued -= op.weight
        self._counters.flushed += op.weight

    def _recovered(self) -> None:
        if not self._available:
            self._available = True
            outage = self._clock() - self._down_since
            flushed = self._counters.flushed - self._flushed_at_down
            log.warning("store available again after %.1fs; flushed %d buffered items", outage, flushed)
            _quiet(self._on_recovered, outage, flushed)
        self._idle.set()

    async def _read(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        if not self._available:
            raise StoreUnavailable(f"store unavailable ({self._queued} writes buffered); try again later")
        try:
            return await fn(*args, **kwargs)
        except StoreUnavailable as exc:
            self._went_down(exc)
            raise

    # ---------------------------------------------------------------- buffered writes

    async def outbox_add(
        self, topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False, kind: str = "finding"
    ) -> int:
        """The message id, or a negative ticket when the message was queued (or dropped)."""
        ticket, self._next_ticket = self._next_ticket, self._next_ticket - 1
        op = QueuedWrite(kind="outbox", weight=1, ticket=ticket,
                 run=lambda s: s.outbox_add(topic, payload, qos=qos, retain=retain, kind=kind))
        result = await self._submit(op)
        return ticket if result is None else int(result)

    async def outbox_mark_published(self, ids: Sequence[int]) -> None:
        real = [i for i in ids if i > 0]
        for ticket in (i for i in ids if i < 0):
            if ticket in self._tickets:
                self._tickets[ticket].mark_published = True
            elif ticket in self._resolved:
                real.append(self._resolved.pop(ticket))
        if real:
            await self._submit(QueuedWrite(kind="outbox", weight=1, run=lambda s: s.outbox_mark_published(real)))

    async def state_put(self, namespace: str, key: str, data: dict[str, Any]) -> None:
        await self._submit(QueuedWrite(kind="state", weight=1, run=lambda s: s.state_put(namespace, key, data)))

    async def state_delete(self, namespace: str, key: str) -> bool:
        """True when it existed; a queued delete answers False."""
        return bool(await self._submit(QueuedWrite(kind="state", weight=1, run=lambda s: s.state_delete(namespace, key))))

    async def alert_upsert(self, alert: AlertRecord) -> None:
        await self._submit(QueuedWrite(kind="alert", weight=1, run=lambda s: s.alert_upsert(alert)))

    async def incident_upsert(self, incident: IncidentRecord) -> None:
        await self._submit(QueuedWrite(kind="incident", weight=1, run=lambda s: s.incident_upsert(incident)))

    async def action_upsert(self, action: ActionRecord) -> None:
        await self._submit(QueuedWrite(kind="action", weight=1, run=lambda s: s.action_upsert(action)))

    async def audit_append(self, events: Sequence[Mapping[str, Any]]) -> None:
        if events:
            batch = list(events)
            await self._submit(QueuedWrite(kind="audit", weight=len(batch), run=lambda s: s.audit_append(batch)))

    async def metrics_upsert(self, rows: Sequence[MetricRollup]) -> None:
        if rows:
            batch = list(rows)
            await self._submit(QueuedWrite(kind="metrics", weight=len(batch), run=lambda s: s.metrics_upsert(batch)))

    async def dependencies_upsert(self, rows: Sequence[Dependency]) -> None:
        if rows:
            batch = list(rows)
            await self._submit(QueuedWrite(kind="dependency", weight=len(batch), run=lambda s: s.dependencies_upsert(batch)))

    # ---------------------------------------------------------------- reads and immediate writes

    async def outbox_pending(self, limit: int = 100) -> list[OutboxRecord]:
        return await self._read(self._inner.outbox_pending, limit)

    async def outbox_query(
        self, *, kind: str | None = None, since: float | None = None, until: float | None = None,
        limit: int = 1000,
    ) -> list[OutboxRecord]:
        return await self._read(self._inner.outbox_query, kind=kind, since=since, until=until, limit=limit)

    async def outbox_purge_published(self, before_ts: float) -> int:
        return await self._read(self._inner.outbox_purge_published, before_ts)

    async def state_get(self, namespace: str, key: str) -> dict[str, Any] | None:
        return await self._read(self._inner.state_get, namespace, key)

    async def state_list(self, namespace: str) -> dict[str, dict[str, Any]]:
        return await self._read(self._inner.state_list, namespace)

    async def alert_get(self, fingerprint: str) -> AlertRecord | None:
        return await self._read(self._inner.alert_get, fingerprint)

    async def alerts_list(self, status: str | None = None) -> list[AlertRecord]:
        return await self._read(self._inner.alerts_list, status)

    async def incident_get(self, incident_id: str) -> IncidentRecord | None:
        return await self._read(self._inner.incident_get, incident_id)

    async def incidents_open(self) -> list[IncidentRecord]:
        return await self._read(self._inner.incidents_open)

    async def incidents_query(self, *, since: float, until: float, limit: int = 1000) -> list[IncidentRecord]:
        return await self._read(self._inner.incidents_query, since=since, until=until, limit=limit)

    async def actions_for_incident(self, incident_id: str) -> list[ActionRecord]:
        return await self._read(self._inner.actions_for_incident, incident_id)

    async def actions_pending_undo(self, now: float) -> list[ActionRecord]:
        return await self._read(self._inner.actions_pending_undo, now)

    async def actions_active(self, now: float) -> list[ActionRecord]:
        return await self._read(self._inner.actions_active, now)

    async def _audit_rows(self, since: float | None, until: float | None, batch: int) -> AsyncIterator[AuditRecord]:
        if not self._available:
            raise StoreUnavailable(f"store unavailable ({self._queued} writes buffered); try again later")
        try:
            async for row in self._inner.audit_iter(since, until, batch):
                yield row
        except StoreUnavailable as exc:
            self._went_down(exc)
            raise

    def audit_iter(
        self, since: float | None = None, until: float | None = None, batch: int = 500
    ) -> AsyncIterator[AuditRecord]:
        return self._audit_rows(since, until, batch)

    async def audit_verify(self) -> VerifyResult:
        return await self._read(self._inner.audit_verify)

    async def audit_heads(self) -> list[ChainState]:
        return await self._read(self._inner.audit_heads)

    async def audit_row_hashes(self, rows: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
        return await self._read(self._inner.audit_row_hashes, rows)

    async def audit_purge(self, before_ts: float, retention_key: str | None = None) -> int:
        return await self._read(self._inner.audit_purge, before_ts, retention_key)

    async def metrics_query(self, service: str | None, since: float, until: float) -> list[MetricRollup]:
        return await self._read(self._inner.metrics_query, service, since, until)

    async def dependencies_list(self) -> list[Dependency]:
        return await self._read(self._inner.dependencies_list)

    async def baseline_put(self, kind: str, data: dict[str, Any]) -> int:
        return await self._read(self._inner.baseline_put, kind, data)

    async def baseline_latest(self, kind: str) -> BaselineRecord | None:
        return await self._read(self._inner.baseline_latest, kind)
