"""The store interface every sfa-ops component writes through, and its errors (its records are in
``adapters.store.records``, the audit chain hashing in ``adapters.store.audit_hashing``).

Two implementations pass one contract suite (tests/integration/test_store_contract.py): SQLite
(embedded default, ``sqlite:///var/sfa-ops.db``) and PostgreSQL (``postgresql://…``, asyncpg).

Conventions, the same in both:

- every timestamp is a float of epoch seconds (UTC); ``minute`` keys are the epoch seconds of the
  minute's start;
- JSON columns hold orjson-serialised dicts (TEXT in SQLite, JSONB in PostgreSQL), except the audit
  payload, which is TEXT in both so the hashed bytes are the stored bytes;
- ``updated_at`` columns are stamped by the store from its injected clock; every other time comes
  from the caller (decisions carry their own ``now``).

Errors::

    StoreError
     ├── StoreConfigError   bad URL or option: the message names the part and the fix
     ├── StoreUnavailable   cannot reach the database, or the connection was lost
     ├── IntegrityError     a constraint refused the write (duplicate id, unknown incident, …)
     └── SchemaError        the database holds a schema newer than this code knows
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

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


class StoreError(Exception):
    """Base of every error the store raises."""


class StoreConfigError(StoreError):
    """The store URL or an option is wrong; the message says which part and how to fix it."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (or went away); retrying later may succeed."""


class IntegrityError(StoreError):
    """A constraint refused the write; retrying the same write will fail again."""


class SchemaError(StoreError):
    """The database schema is newer than the migrations this code ships."""


# ---------------------------------------------------------------- the interface


class Store(abc.ABC):
    """One async store. ``open()`` connects and applies migrations; ``close()`` releases it.

    Use as ``async with open_store(url) as store: …``.
    """

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    @abc.abstractmethod
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema to the latest version (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; safe to call twice."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Round-trip to the database; raises StoreUnavailable when it cannot."""

    # outbox
    @abc.abstractmethod
    async def outbox_add(
        self, topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False, kind: str = "finding"
    ) -> int:
        """Record a message before publishing it; returns its id."""

    @abc.abstractmethod
    async def outbox_mark_published(self, ids: Sequence[int]) -> None:
        """Mark messages as published (unknown ids are ignored)."""

    @abc.abstractmethod
    async def outbox_pending(self, limit: int = 100) -> list[OutboxRecord]:
        """Oldest unpublished messages first, to republish after a crash."""

    @abc.abstractmethod
    async def outbox_query(
        self, *, kind: str | None = None, since: float | None = None, until: float | None = None,
        limit: int = 1000,
    ) -> list[OutboxRecord]:
        """Messages with ``since <= created_at < until``, oldest first."""

    @abc.abstractmethod
    async def outbox_purge_published(self, before_ts: float) -> int:
        """Delete published messages created before ``before_ts``; returns how many."""

    # generic key/value state
    @abc.abstractmethod
    async def state_put(self, namespace: str, key: str, data: dict[str, Any]) -> None:
        """Insert or replace one state document."""

    @abc.abstractmethod
    async def state_get(self, namespace: str, key: str) -> dict[str, Any] | None:
        """One state document, or None."""

    @abc.abstractmethod
    async def state_list(self, namespace: str) -> dict[str, dict[str, Any]]:
        """Every document of a namespace, by key."""

    @abc.abstractmethod
    async def state_delete(self, namespace: str, key: str) -> bool:
        """Delete one document; True when it existed."""

    async def notification_log_put(self, key: str, data: dict[str, Any]) -> None:
        """Alert notification log entry (Alertmanager's nflog), kept as state."""
        await self.state_put("notification_log", key, data)

    async def notification_log_get_all(self) -> dict[str, dict[str, Any]]:
        """The whole notification log, by key."""
        return await self.state_list("notification_log")

    # alerts
    @abc.abstractmethod
    async def alert_upsert(self, alert: AlertRecord) -> None:
        """Insert or replace an alert by fingerprint."""

    @abc.abstractmethod
    async def alert_get(self, fingerprint: str) -> AlertRecord | None:
        """One alert, or None."""

    @abc.abstractmethod
    async def alerts_list(self, status: str | None = None) -> list[AlertRecord]:
        """Alerts (optionally of one status), oldest ``starts_at`` first."""

    # incidents and their actions
    @abc.abstractmethod
    async def incident_upsert(self, incident: IncidentRecord) -> None:
        """Insert or update an incident (``created_at`` of the first insert is kept)."""

    @abc.abstractmethod
    async def incident_get(self, incident_id: str) -> IncidentRecord | None:
        """One incident, or None."""

    @abc.abstractmethod
    async def incidents_open(self) -> list[IncidentRecord]:
        """Incidents whose status is not in CLOSED_INCIDENT_STATUSES, oldest first."""

    @abc.abstractmethod
    async def incidents_query(self, *, since: float, until: float, limit: int = 1000) -> list[IncidentRecord]:
        """Incidents created in ``[since, until)``, oldest first."""

    @abc.abstractmethod
    async def action_upsert(self, action: ActionRecord) -> None:
        """Insert or update an action; raises IntegrityError for an unknown incident."""

    @abc.abstractmethod
    async def actions_for_incident(self, incident_id: str) -> list[ActionRecord]:
        """An incident's actions, oldest first."""

    @abc.abstractmethod
    async def actions_pending_undo(self, now: float) -> list[ActionRecord]:
        """Actions with ``undo_at <= now`` not yet undone, earliest undo first."""

    @abc.abstractmethod
    async def actions_active(self, now: float) -> list[ActionRecord]:
        """Applied, not undone, and not expired (``until`` unset or after ``now``)."""

    # audit
    @abc.abstractmethod
    async def audit_append(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Append events to their chains in order (see ``audit_input`` for the fields used)."""

    @abc.abstractmethod
    def audit_iter(
        self, since: float | None = None, until: float | None = None, batch: int = 500
    ) -> AsyncIterator[AuditRecord]:
        """Rows with ``since <= ts < until`` in append (id) order, fetched ``batch`` at a time."""

    @abc.abstractmethod
    async def audit_verify(self) -> VerifyResult:
        """Walk every chain from its anchor; report the first row that does not link."""

    @abc.abstractmethod
    async def audit_heads(self) -> list[ChainState]:
        """Each chain's head, purge point and count of rows ever appended (present plus purged)."""

    @abc.abstractmethod
    async def audit_row_hashes(self, rows: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """The hash of each (chain, row id) that is present."""

    @abc.abstractmethod
    async def audit_purge(self, before_ts: float, retention_key: str | None = None) -> int:
        """Delete the longest prefix of each chain (or of one) whose rows all have ``ts < before_ts``,
        anchoring the chain at the last deleted row so it still verifies; returns how many."""

    # metrics, dependencies, baselines
    @abc.abstractmethod
    async def metrics_upsert(self, rows: Sequence[MetricRollup]) -> None:
        """Insert or replace rollups by (service, minute); the caller merges sketches."""

    @abc.abstractmethod
    async def metrics_query(
        self, service: str | None, since: float, until: float
    ) -> list[MetricRollup]:
        """Rollups with ``since <= minute < until`` ordered by (service, minute)."""

    @abc.abstractmethod
    async def dependencies_upsert(self, rows: Sequence[Dependency]) -> None:
        """Add ``count`` to each edge's total and keep the latest ``last_seen``."""

    @abc.abstractmethod
    async def dependencies_list(self) -> list[Dependency]:
        """Every learned edge, ordered by (caller, callee)."""

    @abc.abstractmethod
    async def baseline_put(self, kind: str, data: dict[str, Any]) -> int:
        """Store a new version of a baseline; returns its version (1, 2, …)."""

    @abc.abstractmethod
    async def baseline_latest(self, kind: str) -> BaselineRecord | None:
        """The highest version of a baseline, or None."""
