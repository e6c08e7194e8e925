"""The embedded store: one stdlib sqlite3 connection (WAL mode) owned by one dedicated thread.

Every call hops to that thread, so the event loop never blocks on disk; an asyncio lock keeps one
transaction at a time on the single connection (SQLite allows one writer anyway).
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from adapters.store.audit import AUDIT_COLUMNS
from adapters.store.base import IntegrityError, SchemaError, StoreError, StoreUnavailable
from adapters.store.conn import Conn
from adapters.store.migrations import migrations, schema_version_ddl
from adapters.store.sql import SqlStore

T = TypeVar("T")

# Messages of sqlite3.OperationalError that mean "the file cannot be used now", not a bad query.
_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o", "readonly", "disk is full")


@functools.lru_cache(maxsize=512)
def _qmark(sql: str) -> tuple[str, tuple[int, ...]]:
    """``$N`` → plain ``?`` and the argument order they take, so one SQL text serves both dialects.
    (Numbered ``?N`` would do, but Python 3.12+ warns when a sequence binds them, and 3.14 refuses.)"""
    order = tuple(int(n) - 1 for n in re.findall(r"\$(\d+)", sql))
    return re.sub(r"\$\d+", "?", sql), order


def _bind(sql: str, args: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
    text, order = _qmark(sql)
    return text, tuple(args[i] for i in order)


def _guard(fn: Callable[..., T], *args: Any) -> T:
    """Run in the store thread; convert sqlite3 errors to the store's tree."""
    try:
        return fn(*args)
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(str(exc)) from exc
    except sqlite3.OperationalError as exc:
        if any(word in str(exc).lower() for word in _UNAVAILABLE):
            raise StoreUnavailable(f"sqlite: {exc}") from exc
        raise StoreError(f"sqlite: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"sqlite: {exc}") from exc


class _SqliteConn:
    """``Conn`` over the store's connection; every call runs in the store thread."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def execute(self, sql: str, *args: Any) -> int:
        cur = await self._store._call(self._store._db().execute, *_bind(sql, args))
        return max(cur.rowcount, 0)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        text, order = _qmark(sql)
        await self._store._call(self._store._db().executemany, text, [tuple(r[i] for i in order) for r in rows])

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self._store._call(_fetchall, self._store._db(), *_bind(sql, args))

    async def fetchrow(self, sql: str, *args: Any) -> Any | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]


def _fetchall(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[Any]:
    return db.execute(sql, args).fetchall()


class SqliteStore(SqlStore):
    """SQLite store on ``path`` (a file, created with its directory, or ``:memory:``)."""

    def __init__(self, *, path: str, clock: Callable[[], float] = time.time, busy_timeout: float = 5.0,
                 audit_key: bytes | None = None) -> None:
        super().__init__(clock=clock, audit_key=audit_key)
        self._path = path
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def dialect(self) -> str:
        return "sqlite"

    @property
    def path(self) -> str:
        """The database file (or ``:memory:``)."""
        return self._path

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sfa-store-sqlite")
        try:
            self._conn = await self._call(self._connect)
            await self._call(self._migrate)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=False)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreUnavailable("the SQLite store is not open: call `await store.open()` first")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(_guard, fn, *args)
        )

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("the SQLite store is not open: call `await store.open()` first")
        return self._conn

    def _connect(self) -> sqlite3.Connection:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        conn = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        conn.row_factory = sqlite3.Row
        # Switching to WAL needs a moment of exclusive access and does not always wait on the busy
        # timeout: several processes opening a new file at once can see "locked". Retry briefly.
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _migrate(self) -> None:
        db = self._db()
        known = migrations("sqlite")
        # BEGIN IMMEDIATE takes the write lock first, so a second process opening the same file
        # waits here instead of applying the same migration twice.
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(schema_version_ddl("sqlite"))
            applied = {int(r[0]) for r in db.execute("SELECT version FROM schema_version")}
            if applied and max(applied) > len(known):
                raise SchemaError(
                    f"database {self._path} has schema version {max(applied)}, newer than this code's "
                    f"{len(known)}: upgrade sfa-ops or point it at another database"
                )
            for m in known:
                if m.version in applied:
                    continue
                for stmt in m.statements:
                    db.execute(stmt)
                db.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (m.version, m.name, self._clock()),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @asynccontextmanager
    async def _tx(self, *, write: bool = True) -> AsyncIterator[Conn]:
        async with self._lock:
            if not write:  # reads run in autocommit; the lock already keeps them whole
                yield _SqliteConn(self)
                return
            await self._call(self._db().execute, "BEGIN IMMEDIATE")
            try:
                yield _SqliteConn(self)
            except BaseException:
                # Shielded: a cancelled caller must still leave the connection outside a transaction.
                await asyncio.shield(self._call(self._db().execute, "ROLLBACK"))
                raise
            await self._call(self._db().execute, "COMMIT")

    async def _lock_name(self, conn: Conn, name: str) -> None:
        return None  # write transactions are already exclusive

    async def _allocate_audit_ids(self, conn: Conn, n: int) -> list[int]:
        # AUTOINCREMENT's counter never goes back, even after a purge empties the table.
        start = await conn.fetchval("SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'")
        first = int(start or 0) + 1
        return list(range(first, first + n))

    async def _insert_audit_rows(self, conn: Conn, rows: list[tuple[Any, ...]]) -> None:
        cols = ", ".join(AUDIT_COLUMNS)
        marks = ", ".join(f"${i}" for i in range(1, len(AUDIT_COLUMNS) + 1))
        await conn.executemany(f"INSERT INTO audit_events ({cols}) VALUES ({marks})", rows)
