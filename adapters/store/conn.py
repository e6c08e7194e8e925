"""What a SQL dialect hands the shared SQL (``adapters.store.sql``) and the audit log
(``adapters.store.audit``): a connection inside a transaction. Its own module, so that the two
import it without importing each other."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Conn(Protocol):
    """A connection inside a transaction; rows support ``row["column"]``."""

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; returns the number of rows it changed (when known)."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement per parameter row."""
        ...

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """All rows."""
        ...

    async def fetchrow(self, sql: str, *args: Any) -> Any | None:
        """The first row or None."""
        ...

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, or None."""
        ...
