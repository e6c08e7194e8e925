"""The production store: PostgreSQL through an asyncpg connection pool.

Vendor errors are converted at this boundary: lost or refused connections become StoreUnavailable,
constraint violations IntegrityError, a missing database or a refused login StoreConfigError.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg

from adapters.store.audit import AUDIT_COLUMNS
from adapters.store.base import IntegrityError, SchemaError, StoreConfigError, StoreError, StoreUnavailable
from adapters.store.conn import Conn
from adapters.store.migrations import migrations, schema_version_ddl
from adapters.store.sql import SqlStore

# pg_advisory_lock key held while migrating, so concurrent openers apply each version once.
MIGRATION_LOCK_KEY = 0x5FA0_0001
# Below this many rows executemany beats COPY's extra round trips.
_COPY_THRESHOLD = 32


def convert_error(exc: BaseException, where: str) -> StoreError:
    """The store error for an asyncpg/OS error raised while talking to ``where`` (a redacted URL)."""
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return IntegrityError(f"postgresql: {exc}")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StoreConfigError(
            f"{where}: {exc}; create the database (createdb) or fix the database part of the URL"
        )
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return StoreConfigError(f"{where}: {exc}; fix the user/password part of the URL (or PGPASSWORD)")
    if isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.PostgresConnectionError
        | asyncpg.OperatorInterventionError
        | asyncpg.InsufficientResourcesError,
    ):
        return StoreUnavailable(f"{where}: {type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.InterfaceError) and ("closed" in str(exc) or "closing" in str(exc)):
        return StoreUnavailable(f"{where}: {exc}")
    return StoreError(f"{where}: {type(exc).__name__}: {exc}")


_CONVERTED = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class _PgConn:
    """``Conn`` over one pooled asyncpg connection."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    async def execute(self, sql: str, *args: Any) -> int:
        status = await self.raw.execute(sql, *args)
        last = str(status).rsplit(" ", 1)[-1]  # "DELETE 3", "UPDATE 1", "INSERT 0 1"
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.raw.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(await self.raw.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Any | None:
        return await self.raw.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.raw.fetchval(sql, *args)


class PostgresStore(SqlStore):
    """PostgreSQL store on ``dsn`` (handed to asyncpg as is: TLS and credentials come from it or
    the usual PG* environment variables)."""

    _for_update = " FOR UPDATE"

    def __init__(
        self, *, dsn: str, redacted: str, clock: Callable[[], float] = time.time,
        pool_min_size: int = 1, pool_max_size: int = 10,
        connect_timeout: float = 5.0, command_timeout: float = 30.0, audit_key: bytes | None = None,
    ) -> None:
        super().__init__(clock=clock, audit_key=audit_key)
        self._dsn = dsn
        self._where = redacted
        self._pool_min = pool_min_size
        self._pool_max = pool_max_size
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._pool: Any = None

    @property
    def dialect(self) -> str:
        return "postgresql"

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self._pool_min, max_size=self._pool_max,
                timeout=self._connect_timeout, command_timeout=self._command_timeout,
            )
        except _CONVERTED as exc:
            raise convert_error(exc, self._where) from exc
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await pool.close()
            except _CONVERTED:
                pool.terminate()  # the server went away: nothing to close politely

    async def _migrate(self) -> None:
        known = migrations("postgresql")
        async with self._acquire() as con:
            await con.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
            try:
                await con.execute(schema_version_ddl("postgresql"))
                applied = {int(r[0]) for r in await con.fetch("SELECT version FROM schema_version")}
                if applied and max(applied) > len(known):
                    raise SchemaError(
                        f"{self._where} has schema version {max(applied)}, newer than this code's "
                        f"{len(known)}: upgrade sfa-ops or point it at another database"
                    )
                for m in known:
                    if m.version in applied:
                        continue
                    async with con.transaction():
                        for stmt in m.statements:
                            await con.execute(stmt)
                        await con.execute(
                            "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                            m.version, m.name, self._clock(),
                        )
            finally:
                await con.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Any]:
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open: call `await store.open()` first")
        try:
            async with self._pool.acquire(timeout=self._connect_timeout) as con:
                yield con
        except _CONVERTED as exc:
            raise convert_error(exc, self._where) from exc

    @asynccontextmanager
    async def _tx(self, *, write: bool = True) -> AsyncIterator[Conn]:
        async with self._acquire() as con:
            if write:
                async with con.transaction():
                    yield _PgConn(con)
            else:
                yield _PgConn(con)

    async def _lock_name(self, conn: Conn, name: str) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", name)

    async def _allocate_audit_ids(self, conn: Conn, n: int) -> list[int]:
        rows = await conn.fetch(
            "SELECT nextval(pg_get_serial_sequence('audit_events', 'id')) FROM generate_series(1, $1)", n
        )
        return sorted(int(r[0]) for r in rows)

    async def _insert_audit_rows(self, conn: Conn, rows: list[tuple[Any, ...]]) -> None:
        if len(rows) >= _COPY_THRESHOLD:
            await cast(_PgConn, conn).raw.copy_records_to_table(
                "audit_events", records=rows, columns=list(AUDIT_COLUMNS)
            )
        else:
            marks = ", ".join(f"${i}" for i in range(1, len(AUDIT_COLUMNS) + 1))
            await conn.executemany(f"INSERT INTO audit_events ({', '.join(AUDIT_COLUMNS)}) VALUES ({marks})", rows)
