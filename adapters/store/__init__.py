"""sfa-ops persistence: ``open_store(url)`` gives the SQLite or PostgreSQL implementation of ``Store``.

URLs::

    sqlite:///var/sfa-ops.db        a file relative to the working directory (the embedded default)
    sqlite:////srv/sfa/ops.db       an absolute path
    sqlite://:memory:               in memory (tests); also sqlite:///:memory:
    postgresql://user:pw@host:5432/db?sslmode=require   (also postgres://…), via asyncpg

Usage::

    async with open_store(url) as store:
        oid = await store.outbox_add("system/c1/errors", finding)

Errors are in ``adapters.store.base`` (``StoreError`` and its tree).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from adapters.runtime.urls import postgres_tls_problem, redact_url
from adapters.store.audit_hashing import DEFAULT_CHAIN
from adapters.store.base import (
    IntegrityError,
    SchemaError,
    Store,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
)
from adapters.store.records import (
    CLOSED_INCIDENT_STATUSES,
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

DEFAULT_URL = "sqlite:///var/sfa-ops.db"

__all__ = [
    "CLOSED_INCIDENT_STATUSES",
    "DEFAULT_CHAIN",
    "DEFAULT_URL",
    "ActionRecord",
    "AlertRecord",
    "AuditRecord",
    "BaselineRecord",
    "Dependency",
    "IncidentRecord",
    "IntegrityError",
    "MetricRollup",
    "OutboxRecord",
    "SchemaError",
    "Store",
    "StoreConfigError",
    "StoreError",
    "StoreUnavailable",
    "VerifyResult",
    "open_store",
    "redact_url",
]

_EXAMPLES = "sqlite:///var/sfa-ops.db or postgresql://user@host:5432/dbname"




def _sqlite_path(url: str, netloc: str, path: str) -> str:
    if netloc == ":memory:" or path in ("/:memory:", ":memory:"):
        return ":memory:"
    if netloc:
        raise StoreConfigError(
            f"store URL {url!r}: the host part {netloc!r} must be empty for SQLite; write "
            "sqlite:///relative/path.db (three slashes) or sqlite:////absolute/path.db (four)"
        )
    # sqlite:///var/x.db -> path "/var/x.db" -> relative "var/x.db"; four slashes keep it absolute.
    relative = path[1:] if path.startswith("/") else path
    if not relative or relative.endswith("/"):
        raise StoreConfigError(
            f"store URL {url!r} names no database file; write e.g. {DEFAULT_URL}"
        )
    return relative


def open_store(
    url: str, *, clock: Callable[[], float] = time.time,
    pool_min_size: int = 1, pool_max_size: int = 10,
    connect_timeout: float = 5.0, command_timeout: float = 30.0, env: Mapping[str, str] | None = None,
    audit_key: bytes | None = None,
) -> Store:
    """The store for ``url``, not yet opened: ``await store.open()`` or ``async with``.

    Raises StoreConfigError naming the wrong part of the URL and how to fix it; connecting (and
    so StoreUnavailable) happens at ``open()``. Pool options apply to PostgreSQL only. A
    PostgreSQL URL to another machine must name its ``sslmode`` (or ``PGSSLMODE`` in ``env``,
    default ``os.environ``): see :func:`adapters.runtime.urls.postgres_tls_problem`. ``audit_key`` (from
    :mod:`adapters.store.audit_key`) makes the audit chain an HMAC chain; see :mod:`adapters.store.audit`.
    """
    if not isinstance(url, str) or not url.strip():
        raise StoreConfigError(f"store URL is empty; use {_EXAMPLES}")
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise StoreConfigError(f"store URL {redact_url(url)!r} cannot be parsed ({exc}); use {_EXAMPLES}") from exc
    scheme = parts.scheme.lower()
    if not scheme:
        raise StoreConfigError(f"store URL {redact_url(url)!r} has no scheme; use {_EXAMPLES}")
    if scheme == "sqlite":
        from adapters.store.sqlite import SqliteStore

        if parts.query:
            raise StoreConfigError(f"store URL {url!r}: SQLite takes no query options ({parts.query!r}); remove them")
        return SqliteStore(path=_sqlite_path(url, parts.netloc, parts.path), clock=clock, audit_key=audit_key)
    if scheme in ("postgresql", "postgres"):
        from adapters.store.postgres import PostgresStore

        redacted = redact_url(url)
        try:
            port = parts.port
        except ValueError as exc:
            raise StoreConfigError(
                f"store URL {redacted!r}: the port is not a number in 1..65535; write host:5432"
            ) from exc
        if not parts.hostname and "host=" not in parts.query:
            raise StoreConfigError(f"store URL {redacted!r} names no host; write postgresql://user@host:{port or 5432}/db")
        tls_problem = postgres_tls_problem(url.strip(), os.environ if env is None else env)
        if tls_problem:
            raise StoreConfigError(f"store URL {redacted!r}: {tls_problem}")
        if pool_min_size < 0 or pool_max_size < max(1, pool_min_size):
            raise StoreConfigError(
                f"pool sizes min={pool_min_size} max={pool_max_size}: need 0 <= min <= max and max >= 1"
            )
        return PostgresStore(
            dsn=url.strip(), redacted=redacted, clock=clock, pool_min_size=pool_min_size,
            pool_max_size=pool_max_size, connect_timeout=connect_timeout, command_timeout=command_timeout,
            audit_key=audit_key,
        )
    raise StoreConfigError(
        f"store URL {redact_url(url)!r}: scheme {parts.scheme!r} is not supported; use sqlite:// or "
        f"postgresql:// (e.g. {_EXAMPLES})"
    )
