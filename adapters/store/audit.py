"""The hash-chained audit log, shared by both SQL stores.

Each retention class (``retention`` field of an event, default "default") is its own chain, so one
class can be purged without breaking another. A chain is the rows of ``audit_events`` with its name
in id order; each row stores ``prev_hash`` and ``hash = HMAC-SHA256(key, prev_hash + canonical JSON
of {chain, id, kind, payload, ts})`` (stored as ``hmac-sha256:<hex>``), with a key that is not in the
database (:mod:`adapters.store.audit_key`); a store opened without a key writes and verifies plain
sha256 hex instead. Verified with the key, a chain must end in keyed rows and may start with plain
ones (written before the key existed: the first keyed row's HMAC covers their last hash, so they
are pinned too); a keyed chain refuses appends from a store without the key. The ``audit_chain`` row of a chain holds its head (last id and
hash: appenders lock it and continue from it, so truncating the tail is caught too) and its anchor
(the last purged row's id and hash: verification starts there).

What verification catches: an edited row (its hash no longer matches), a deleted row (the next row
does not link), rows swapped or moved to other ids (the id is hashed, and links break), rows cut from
the end (the head no longer matches). Without the key nobody can rehash an edited row, so
rewriting the chain and its head consistently needs the key; deleting whole chains or the tail with
the head moved back shows only against the heads published elsewhere: ``audit_heads`` feeds the
anchors of ``policies.audit.anchors`` (``drivers.audit verify --anchors``).

While one appender holds a chain's head, another appending to it waits (``FOR UPDATE`` on
PostgreSQL, the single writer on SQLite); ids within a chain therefore grow in append order.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson

from adapters.store.audit_hashing import GENESIS_HASH, KEYED_PREFIX, AuditInput, audit_input, chain_hash
from adapters.store.base import StoreError
from adapters.store.conn import Conn
from adapters.store.records import AuditRecord, VerifyResult
from policies.audit.anchors import ChainState

AUDIT_COLUMNS = ("id", "chain", "ts", "kind", "payload", "prev_hash", "hash")
_SELECT = "SELECT id, chain, ts, kind, payload, prev_hash, hash FROM audit_events"
_VERIFY_PAGE = 2000


def _record(r: Any) -> AuditRecord:
    return AuditRecord(
        id=int(r["id"]), chain=r["chain"], ts=float(r["ts"]), kind=r["kind"],
        payload=orjson.loads(r["payload"]), prev_hash=r["prev_hash"], hash=r["hash"],
    )


class AuditMixin(abc.ABC):
    """``audit_*`` methods over the dialect hooks declared here."""

    _clock: Callable[[], float]
    _audit_key: bytes | None = None
    # Row-lock suffix for reading a chain head: " FOR UPDATE" on PostgreSQL, "" on SQLite (whose
    # write transactions are already exclusive).
    _for_update: str = ""

    @abc.abstractmethod
    def _tx(self, *, write: bool = True) -> AbstractAsyncContextManager[Conn]: ...

    @abc.abstractmethod
    async def _allocate_audit_ids(self, conn: Conn, n: int) -> list[int]:
        """``n`` new increasing ids, larger than any audit row id ever used."""

    @abc.abstractmethod
    async def _insert_audit_rows(self, conn: Conn, rows: list[tuple[Any, ...]]) -> None:
        """Insert full rows in AUDIT_COLUMNS order (COPY where the dialect has it)."""

    async def _lock_chain(self, conn: Conn, chain: str, now: float) -> Any:
        await conn.execute(
            "INSERT INTO audit_chain (chain, head_id, head_hash, anchor_id, anchor_hash, purged, updated_at)"
            " VALUES ($1, 0, $2, 0, $2, 0, $3) ON CONFLICT (chain) DO NOTHING",
            chain, GENESIS_HASH, now,
        )
        return await conn.fetchrow(
            "SELECT chain, head_id, head_hash, anchor_id, anchor_hash FROM audit_chain WHERE chain = $1"
            + self._for_update,
            chain,
        )

    async def audit_append(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Append events to their chains; ids follow the order of ``events``."""
        if not events:
            return
        now = self._clock()
        inputs = [audit_input(e, now) for e in events]
        async with self._tx() as conn:
            heads: dict[str, str] = {}
            for chain in sorted({i.chain for i in inputs}):  # one lock order: no deadlocks
                heads[chain] = (await self._lock_chain(conn, chain, now))["head_hash"]
                if self._audit_key is None and heads[chain].startswith(KEYED_PREFIX):
                    raise StoreError(f"audit chain {chain!r} is keyed (HMAC): open the store with the audit key"
                                     " to append to it")
            ids = await self._allocate_audit_ids(conn, len(inputs))
            rows: list[tuple[Any, ...]] = []
            last_id: dict[str, int] = {}
            for new_id, item in zip(ids, inputs, strict=True):
                rows.append(_row(new_id, item, heads[item.chain], self._audit_key))
                heads[item.chain] = rows[-1][-1]
                last_id[item.chain] = new_id
            await self._insert_audit_rows(conn, rows)
            for chain, head_id in last_id.items():
                await conn.execute(
                    "UPDATE audit_chain SET head_id = $1, head_hash = $2, updated_at = $3 WHERE chain = $4",
                    head_id, heads[chain], now, chain,
                )

    async def _audit_pages(
        self, since: float | None, until: float | None, batch: int
    ) -> AsyncIterator[AuditRecord]:
        lo = float("-inf") if since is None else since
        hi = float("inf") if until is None else until
        after = 0
        while True:
            # One short transaction per page: never hold a connection (or SQLite's lock) across a yield.
            async with self._tx(write=False) as conn:
                rows = await conn.fetch(
                    f"{_SELECT} WHERE id > $1 AND ts >= $2 AND ts < $3 ORDER BY id LIMIT $4", after, lo, hi, batch
                )
            for r in rows:
                yield _record(r)
            if len(rows) < batch:
                return
            after = int(rows[-1]["id"])

    def audit_iter(
        self, since: float | None = None, until: float | None = None, batch: int = 500
    ) -> AsyncIterator[AuditRecord]:
        """Rows with ``since <= ts < until`` in id order, ``batch`` rows per query."""
        return self._audit_pages(since, until, batch)

    async def audit_verify(self) -> VerifyResult:
        """Walk each chain from its anchor to the head it recorded when verification started."""
        async with self._tx(write=False) as conn:
            chains = await conn.fetch(
                "SELECT chain, head_id, head_hash, anchor_id, anchor_hash FROM audit_chain ORDER BY chain"
            )
        checked = 0
        for c in chains:
            chain, head_id = c["chain"], int(c["head_id"])
            prev, last = c["anchor_hash"], int(c["anchor_id"])
            seen_keyed = str(prev).startswith(KEYED_PREFIX)
            while True:
                async with self._tx(write=False) as conn:
                    rows = await conn.fetch(
                        f"{_SELECT} WHERE chain = $1 AND id > $2 AND id <= $3 ORDER BY id LIMIT $4",
                        chain, last, head_id, _VERIFY_PAGE,
                    )
                for r in rows:
                    checked += 1
                    row_id = int(r["id"])
                    keyed = str(r["hash"]).startswith(KEYED_PREFIX)
                    problem = _key_problem(keyed, seen_keyed, self._audit_key is not None)
                    if problem:
                        return VerifyResult(ok=False, checked=checked, first_broken_id=row_id,
                                            reason=f"chain {chain!r}: row {row_id} {problem}")
                    seen_keyed = seen_keyed or keyed
                    if r["prev_hash"] != prev:
                        return VerifyResult(
                            ok=False, checked=checked, first_broken_id=row_id,
                            reason=f"chain {chain!r}: row {row_id} does not link to the row before it"
                            " (a row was deleted, moved or rewritten)",
                        )
                    expected = chain_hash(
                        r["prev_hash"], id=row_id, chain=r["chain"], ts=float(r["ts"]), kind=r["kind"],
                        payload_json=r["payload"], key=self._audit_key if keyed else None,
                    )
                    if expected != r["hash"]:
                        return VerifyResult(
                            ok=False, checked=checked, first_broken_id=row_id,
                            reason=f"chain {chain!r}: row {row_id} content does not match its hash"
                            " (edited or moved)",
                        )
                    prev, last = r["hash"], row_id
                if len(rows) < _VERIFY_PAGE:
                    break
            if last != head_id or prev != c["head_hash"]:
                return VerifyResult(
                    ok=False, checked=checked, first_broken_id=head_id,
                    reason=f"chain {chain!r} ends at row {last} but its head is row {head_id}"
                    " (rows removed from the end, or the head was altered)",
                )
            if self._audit_key is not None and head_id and not seen_keyed:
                return VerifyResult(
                    ok=False, checked=checked, first_broken_id=head_id,
                    reason=f"chain {chain!r} holds no keyed row: written without the audit key, or rewritten"
                    " by someone without it",
                )
        return VerifyResult(ok=True, checked=checked)

    async def audit_heads(self) -> list[ChainState]:
        """Each chain's head, purge point and count (rows present plus purged): what an anchor records."""
        async with self._tx(write=False) as conn:
            rows = await conn.fetch(
                "SELECT c.chain, c.head_id, c.head_hash, c.anchor_id, c.anchor_hash, c.purged,"
                " (SELECT COUNT(*) FROM audit_events e WHERE e.chain = c.chain) AS present"
                " FROM audit_chain c ORDER BY c.chain"
            )
        return [ChainState(chain=r["chain"], head_id=int(r["head_id"]), head_hash=r["head_hash"],
                           purged_id=int(r["anchor_id"]), purged_hash=r["anchor_hash"],
                           count=int(r["purged"]) + int(r["present"])) for r in rows]

    async def audit_row_hashes(self, rows: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """The hash of each (chain, id) row that is present."""
        found: dict[tuple[str, int], str] = {}
        async with self._tx(write=False) as conn:
            for chain, row_id in rows:
                h = await conn.fetchval("SELECT hash FROM audit_events WHERE chain = $1 AND id = $2", chain, row_id)
                if h is not None:
                    found[(chain, row_id)] = h
        return found

    async def audit_purge(self, before_ts: float, retention_key: str | None = None) -> int:
        """Delete each chain's longest prefix older than ``before_ts`` and move its anchor there."""
        now = self._clock()
        purged = 0
        async with self._tx() as conn:
            if retention_key is None:
                rows = await conn.fetch("SELECT chain FROM audit_chain ORDER BY chain")
            else:
                rows = await conn.fetch("SELECT chain FROM audit_chain WHERE chain = $1", retention_key)
            names = [r["chain"] for r in rows]
            for chain in names:
                c = await self._lock_chain(conn, chain, now)
                anchor = int(c["anchor_id"])
                first_kept = await conn.fetchval(
                    "SELECT MIN(id) FROM audit_events WHERE chain = $1 AND id > $2 AND ts >= $3",
                    chain, anchor, before_ts,
                )
                bound = int(c["head_id"]) + 1 if first_kept is None else int(first_kept)
                last = await conn.fetchrow(
                    "SELECT id, hash FROM audit_events WHERE chain = $1 AND id > $2 AND id < $3"
                    " ORDER BY id DESC LIMIT 1",
                    chain, anchor, bound,
                )
                if last is None:
                    continue
                n = await conn.execute(
                    "DELETE FROM audit_events WHERE chain = $1 AND id > $2 AND id <= $3", chain, anchor, last["id"]
                )
                await conn.execute(
                    "UPDATE audit_chain SET anchor_id = $1, anchor_hash = $2, purged = purged + $3,"
                    " updated_at = $4 WHERE chain = $5",
                    int(last["id"]), last["hash"], n, now, chain,
                )
                purged += n
        return purged


def _key_problem(keyed: bool, seen_keyed: bool, have_key: bool) -> str | None:
    """Why a row's hash kind is wrong here, or None. With the key, rows after the first keyed row
    must be keyed (plain rows before it are pinned by its HMAC, which covers their last hash);
    without it, a keyed row cannot be checked."""
    if keyed and not have_key:
        return "is keyed (HMAC): verify with the audit key (--audit-key-file)"
    if have_key and seen_keyed and not keyed:
        return "is not keyed but follows keyed rows: rewritten by someone without the audit key"
    return None


def _row(new_id: int, item: AuditInput, prev_hash: str, key: bytes | None) -> tuple[Any, ...]:
    digest = chain_hash(
        prev_hash, id=new_id, chain=item.chain, ts=item.ts, kind=item.kind, payload_json=item.payload_json,
        key=key,
    )
    return (new_id, item.chain, item.ts, item.kind, item.payload_json, prev_hash, digest)
