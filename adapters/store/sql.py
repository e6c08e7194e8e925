"""The SQL both stores share: every query is written once, with ``$1``-style parameters, against
the tables of ``migrations/``. A dialect supplies connections (``Conn``) inside transactions and the
few things SQL does not say the same way (locks, id allocation, bulk copy)."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson

from adapters.store.audit import AuditMixin
from adapters.store.base import Store, StoreError
from adapters.store.conn import Conn
from adapters.store.records import (
    CLOSED_INCIDENT_STATUSES,
    ActionRecord,
    AlertRecord,
    BaselineRecord,
    Dependency,
    IncidentRecord,
    MetricRollup,
    OutboxRecord,
)


def dumps(data: Any) -> str:
    """orjson text for a JSON column."""
    try:
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError as exc:
        raise StoreError(f"value is not JSON-serialisable: {exc}") from exc


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)


_OUTBOX_COLS = "id, topic, payload, qos, retain, kind, created_at, published_at"
_ALERT_COLS = "fingerprint, labels, annotations, status, starts_at, ends_at, updated_at"
_INCIDENT_COLS = (
    "id, type, severity, title, description, source, status, automated_response, created_at, updated_at, data"
)
_ACTION_COLS = "id, incident_id, action, target, params, status, created_at, until, undo_at, undone_at, error"
_METRIC_COLS = (
    "service, minute, calls, outcomes, latency_sketch, concurrency_max, concurrency_avg, timeouts, queue_depth"
)
# Constants, not input: safe to inline.
_OPEN = "status NOT IN (" + ", ".join(f"'{s}'" for s in CLOSED_INCIDENT_STATUSES) + ")"


def _outbox(r: Any) -> OutboxRecord:
    return OutboxRecord(
        id=int(r["id"]), topic=r["topic"], payload=loads(r["payload"]), qos=int(r["qos"]),
        retain=bool(r["retain"]), kind=r["kind"], created_at=float(r["created_at"]),
        published_at=None if r["published_at"] is None else float(r["published_at"]),
    )


def _alert(r: Any) -> AlertRecord:
    return AlertRecord(
        fingerprint=r["fingerprint"], labels=loads(r["labels"]), annotations=loads(r["annotations"]),
        status=r["status"], starts_at=float(r["starts_at"]), ends_at=_opt_float(r["ends_at"]),
        updated_at=float(r["updated_at"]),
    )


def _incident(r: Any) -> IncidentRecord:
    return IncidentRecord(
        id=r["id"], type=r["type"], severity=r["severity"], title=r["title"],
        description=r["description"], source=r["source"], status=r["status"],
        automated_response=bool(r["automated_response"]), created_at=float(r["created_at"]),
        updated_at=float(r["updated_at"]), data=loads(r["data"]),
    )


def _action(r: Any) -> ActionRecord:
    return ActionRecord(
        id=r["id"], incident_id=r["incident_id"], action=r["action"], target=r["target"],
        params=loads(r["params"]), status=r["status"], created_at=float(r["created_at"]),
        until=_opt_float(r["until"]), undo_at=_opt_float(r["undo_at"]),
        undone_at=_opt_float(r["undone_at"]), error=r["error"],
    )


def _metric(r: Any) -> MetricRollup:
    return MetricRollup(
        service=r["service"], minute=float(r["minute"]), calls=int(r["calls"]),
        outcomes=loads(r["outcomes"]), latency_sketch=bytes(r["latency_sketch"]),
        concurrency_max=int(r["concurrency_max"]), concurrency_avg=float(r["concurrency_avg"]),
        timeouts=int(r["timeouts"]), queue_depth=int(r["queue_depth"]),
    )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


class SqlStore(AuditMixin, Store):
    """Everything but connections, locks and bulk copy, shared by SQLite and PostgreSQL."""

    def __init__(self, *, clock: Callable[[], float] = time.time, audit_key: bytes | None = None) -> None:
        self._clock = clock
        self._audit_key = audit_key

    @abc.abstractmethod
    def _tx(self, *, write: bool = True) -> AbstractAsyncContextManager[Conn]:
        """A connection in a transaction, committed on normal exit; vendor errors converted."""

    @abc.abstractmethod
    async def _lock_name(self, conn: Conn, name: str) -> None:
        """Serialise writers of ``name`` until the transaction ends (no-op where writes already are)."""

    async def ping(self) -> None:
        async with self._tx(write=False) as conn:
            await conn.fetchval("SELECT 1")

    # ---------------------------------------------------------------- outbox

    async def outbox_add(
        self, topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False, kind: str = "finding"
    ) -> int:
        async with self._tx() as conn:
            new_id = await conn.fetchval(
                "INSERT INTO outbox (topic, payload, qos, retain, kind, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                topic, dumps(payload), qos, retain, kind, self._clock(),
            )
        return int(new_id)

    async def outbox_mark_published(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        now = self._clock()
        async with self._tx() as conn:
            await conn.executemany(
                "UPDATE outbox SET published_at = $1 WHERE id = $2 AND published_at IS NULL",
                [(now, int(i)) for i in ids],
            )

    async def outbox_pending(self, limit: int = 100) -> list[OutboxRecord]:
        async with self._tx(write=False) as conn:
            rows = await conn.fetch(
                f"SELECT {_OUTBOX_COLS} FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1", limit
            )
        return [_outbox(r) for r in rows]

    async def outbox_query(
        self, *, kind: str | None = None, since: float | None = None, until: float | None = None,
        limit: int = 1000,
    ) -> list[OutboxRecord]:
        where = ["created_at >= $1", "created_at < $2"]
        args: list[Any] = [float("-inf") if since is None else since, float("inf") if until is None else until]
        if kind is not None:
            args.append(kind)
            where.append(f"kind = ${len(args)}")
        args.append(limit)
        sql = f"SELECT {_OUTBOX_COLS} FROM outbox WHERE {' AND '.join(where)} ORDER BY id LIMIT ${len(args)}"
        async with self._tx(write=False) as conn:
            rows = await conn.fetch(sql, *args)
        return [_outbox(r) for r in rows]

    async def outbox_purge_published(self, before_ts: float) -> int:
        async with self._tx() as conn:
            return await conn.execute(
                "DELETE FROM outbox WHERE published_at IS NOT NULL AND created_at < $1", before_ts
            )

    # ---------------------------------------------------------------- state

    async def state_put(self, namespace: str, key: str, data: dict[str, Any]) -> None:
        async with self._tx() as conn:
            await conn.execute(
                "INSERT INTO actor_state (namespace, key, data, updated_at) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (namespace, key) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                namespace, key, dumps(data), self._clock(),
            )

    async def state_get(self, namespace: str, key: str) -> dict[str, Any] | None:
        async with self._tx(write=False) as conn:
            text = await conn.fetchval(
                "SELECT data FROM actor_state WHERE namespace = $1 AND key = $2", namespace, key
            )
        return None if text is None else dict(loads(text))

    async def state_list(self, namespace: str) -> dict[str, dict[str, Any]]:
        async with self._tx(write=False) as conn:
            rows = await conn.fetch(
                "SELECT key, data FROM actor_state WHERE namespace = $1 ORDER BY key", namespace
            )
        return {r["key"]: loads(r["data"]) for r in rows}

    async def state_delete(self, namespace: str, key: str) -> bool:
        async with self._tx() as conn:
            n = await conn.execute("DELETE FROM actor_state WHERE namespace = $1 AND key = $2", namespace, key)
        return n > 0

    # ---------------------------------------------------------------- alerts

    async def alert_upsert(self, alert: AlertRecord) -> None:
        async with self._tx() as conn:
            await conn.execute(
                f"INSERT INTO alerts ({_ALERT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                " ON CONFLICT (fingerprint) DO UPDATE SET labels = excluded.labels,"
                " annotations = excluded.annotations, status = excluded.status,"
                " starts_at = excluded.starts_at, ends_at = excluded.ends_at, updated_at = excluded.updated_at",
                alert.fingerprint, dumps(alert.labels), dumps(alert.annotations), alert.status,
                alert.starts_at, alert.ends_at, self._clock(),
            )

    async def alert_get(self, fingerprint: str) -> AlertRecord | None:
        async with self._tx(write=False) as conn:
            row = await conn.fetchrow(f"SELECT {_ALERT_COLS} FROM alerts WHERE fingerprint = $1", fingerprint)
        return None if row is None else _alert(row)

    async def alerts_list(self, status: str | None = None) -> list[AlertRecord]:
        async with self._tx(write=False) as conn:
            if status is None:
                rows = await conn.fetch(f"SELECT {_ALERT_COLS} FROM alerts ORDER BY starts_at, fingerprint")
            else:
                rows = await conn.fetch(
                    f"SELECT {_ALERT_COLS} FROM alerts WHERE status = $1 ORDER BY starts_at, fingerprint", status
                )
        return [_alert(r) for r in rows]

    # ---------------------------------------------------------------- incidents and actions

    async def incident_upsert(self, incident: IncidentRecord) -> None:
        i = incident
        async with self._tx() as conn:
            await conn.execute(
                f"INSERT INTO incidents ({_INCIDENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                " ON CONFLICT (id) DO UPDATE SET type = excluded.type, severity = excluded.severity,"
                " title = excluded.title, description = excluded.description, source = excluded.source,"
                " status = excluded.status, automated_response = excluded.automated_response,"
                " updated_at = excluded.updated_at, data = excluded.data",
                i.id, i.type, i.severity, i.title, i.description, i.source, i.status, i.automated_response,
                i.created_at, self._clock(), dumps(i.data),
            )

    async def incident_get(self, incident_id: str) -> IncidentRecord | None:
        async with self._tx(write=False) as conn:
            row = await conn.fetchrow(f"SELECT {_INCIDENT_COLS} FROM incidents WHERE id = $1", incident_id)
        return None if row is None else _incident(row)

    async def incidents_open(self) -> list[IncidentRecord]:
        async with self._tx(write=False) as conn:
            rows = await conn.fetch(f"SELECT {_INCIDENT_COLS} FROM incidents WHERE {_OPEN} ORDER BY created_at, id")
        return [_incident(r) for r in rows]

    async def incidents_query(self, *, since: float, until: float, limit: int = 1000) -> list[IncidentRecord]:
        async with self._tx(write=False) as conn:
            rows = await conn.fetch(
                f"SELECT {_INCIDENT_COLS} FROM incidents WHERE created_at >= $1 AND created_at < $2"
                " ORDER BY created_at, id LIMIT $3",
                since, until, limit,
            )
        return [_incident(r) for r in rows]

    async def action_upsert(self, action: ActionRecord) -> None:
        a = action
        async with self._tx() as conn:
            await conn.execute(
                f"INSERT INTO incident_actions ({_ACTION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                " ON CONFLICT (id) DO UPDATE SET incident_id = excluded.incident_id, action = excluded.action,"
                " target = excluded.target, params = excluded.params, status = excluded.status,"
                " until = excluded.until, undo_at = excluded.undo_at, undone_at = excluded.undone_at,"
                " error = excluded.error",
                a.id, a.incident_id, a.action, a.target, dumps(a.params), a.status, a.created_at,
                a.until, a.undo_at, a.undone_at, a.error,
            )

    async def actions_for_incident(self, incident_id: str) -> list[ActionRecord]:
        async with self._tx(write=False) as conn:
            rows = await conn.fetch(
                f"SELECT {_ACTION_COLS} FROM incident_actions WHERE incident_id = $1 ORDER BY created_at, id",
                incident_id,
            )
        return [_action(r) for r in rows]

    async def actions_pending_undo(self, now: float) -> list[ActionRecord]:
        async with self._tx(write=False) as conn:
            rows = await conn.fetch(
                f"SELECT {_ACTION_COLS} FROM incident_actions WHERE undone_at IS NULL AND undo_at <= $1"
                " ORDER BY undo_at, id",
                now,
            )
        return [_action(r) for r in rows]

    async def actions_active(self, now: float) -> list[ActionRecord]:
        async with self._tx(write=False) as conn:
            rows = await conn.fetch(
                f"SELECT {_ACTION_COLS} FROM incident_actions WHERE status = 'applied' AND undone_at IS NULL"
                " AND (until IS NULL OR until > $1) ORDER BY created_at, id",
                now,
            )
        return [_action(r) for r in rows]

    # ---------------------------------------------------------------- metrics, dependencies, baselines

    async def metrics_upsert(self, rows: Sequence[MetricRollup]) -> None:
        if not rows:
            return
        async with self._tx() as conn:
            await conn.executemany(
                f"INSERT INTO metrics_minute ({_METRIC_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                " ON CONFLICT (service, minute) DO UPDATE SET calls = excluded.calls,"
                " outcomes = excluded.outcomes, latency_sketch = excluded.latency_sketch,"
                " concurrency_max = excluded.concurrency_max, concurrency_avg = excluded.concurrency_avg,"
                " timeouts = excluded.timeouts, queue_depth = excluded.queue_depth",
                [
                    (m.service, float(m.minute), m.calls, dumps(m.outcomes), bytes(m.latency_sketch),
                     m.concurrency_max, float(m.concurrency_avg), m.timeouts, m.queue_depth)
                    for m in rows
                ],
            )

    async def metrics_query(self, service: str | None, since: float, until: float) -> list[MetricRollup]:
        async with self._tx(write=False) as conn:
            if service is None:
                rows = await conn.fetch(
                    f"SELECT {_METRIC_COLS} FROM metrics_minute WHERE minute >= $1 AND minute < $2"
                    " ORDER BY service, minute",
                    since, until,
                )
            else:
                rows = await conn.fetch(
                    f"SELECT {_METRIC_COLS} FROM metrics_minute WHERE service = $1 AND minute >= $2"
                    " AND minute < $3 ORDER BY minute",
                    service, since, until,
                )
        return [_metric(r) for r in rows]

    async def dependencies_upsert(self, rows: Sequence[Dependency]) -> None:
        if not rows:
            return
        async with self._tx() as conn:
            # CASE rather than GREATEST/MAX: the one spelling both dialects accept.
            await conn.executemany(
                "INSERT INTO dependencies (caller, callee, count, last_seen) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (caller, callee) DO UPDATE SET count = dependencies.count + excluded.count,"
                " last_seen = CASE WHEN excluded.last_seen > dependencies.last_seen"
                " THEN excluded.last_seen ELSE dependencies.last_seen END",
                [(d.caller, d.callee, d.count, float(d.last_seen)) for d in rows],
            )

    async def dependencies_list(self) -> list[Dependency]:
        async with self._tx(write=False) as conn:
            rows = await conn.fetch("SELECT caller, callee, count, last_seen FROM dependencies ORDER BY caller, callee")
        return [
            Dependency(caller=r["caller"], callee=r["callee"], count=int(r["count"]), last_seen=float(r["last_seen"]))
            for r in rows
        ]

    async def baseline_put(self, kind: str, data: dict[str, Any]) -> int:
        async with self._tx() as conn:
            await self._lock_name(conn, f"baseline:{kind}")
            latest = await conn.fetchval("SELECT MAX(version) FROM baselines WHERE kind = $1", kind)
            version = int(latest or 0) + 1
            await conn.execute(
                "INSERT INTO baselines (kind, version, data, created_at) VALUES ($1, $2, $3, $4)",
                kind, version, dumps(data), self._clock(),
            )
        return version

    async def baseline_latest(self, kind: str) -> BaselineRecord | None:
        async with self._tx(write=False) as conn:
            row = await conn.fetchrow(
                "SELECT kind, version, data, created_at FROM baselines WHERE kind = $1"
                " ORDER BY version DESC LIMIT 1",
                kind,
            )
        if row is None:
            return None
        return BaselineRecord(
            kind=row["kind"], version=int(row["version"]), data=loads(row["data"]),
            created_at=float(row["created_at"]),
        )
