"""The audit chain as an HMAC chain with a key kept out of the database, on real SQLite and
PostgreSQL: someone who can write the database but lacks the key cannot edit a row and rehash the
chain (with plain SHA-256 or another key) without verification failing; the operators' CLI
verifies with the key operate generated; chains written before the key existed stay verifiable."""

from __future__ import annotations

import os
import sqlite3
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from adapters.store import StoreConfigError, StoreError, open_store
from adapters.store.audit_hashing import KEYED_PREFIX, chain_hash
from adapters.store.audit_key import load_audit_key
from drivers import audit as audit_cli

pytestmark = pytest.mark.integration
KEY = b"k" * 16 + uuid.uuid4().hex.encode()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path, pg_database: str) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ops.db"
        return
    schema = f"h_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_database)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        yield f"{pg_database}?search_path={schema}"
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await admin.close()


async def sql(url: str, query: str, *args: Any) -> list[Any]:
    """Raw access, as someone with database rights but not the key would have."""
    if url.startswith("sqlite"):
        db = sqlite3.connect(url[len("sqlite:///"):])
        db.row_factory = sqlite3.Row
        try:
            rows = db.execute(query.replace("$1", "?").replace("$2", "?").replace("$3", "?"), args).fetchall()
            db.commit()
            return [dict(r) for r in rows]
        finally:
            db.close()
    conn = await asyncpg.connect(url)
    try:
        return [dict(r) for r in await conn.fetch(query, *args)]
    finally:
        await conn.close()


async def rehash_after_edit(url: str, row_id: int, key: bytes | None) -> None:
    """Edit one row's payload, then recompute every hash from there on and move the head: the
    forgery that fools a plain hash chain."""
    await sql(url, "UPDATE audit_events SET payload = $1 WHERE id = $2", '{"userId":"mallory"}', row_id)
    rows = await sql(url, "SELECT id, chain, ts, kind, payload, prev_hash, hash FROM audit_events ORDER BY id")
    prev = None
    for r in rows:
        if r["id"] < row_id:
            prev = r["hash"]
            continue
        assert prev is not None
        digest = chain_hash(prev, id=r["id"], chain=r["chain"], ts=float(r["ts"]), kind=r["kind"],
                            payload_json=r["payload"], key=key)
        await sql(url, "UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE id = $3", prev, digest, r["id"])
        prev = digest
    await sql(url, "UPDATE audit_chain SET head_hash = $1 WHERE chain = $2", prev, rows[-1]["chain"])


async def append(url: str, n: int, key: bytes | None, start: int = 0) -> None:
    async with open_store(url, audit_key=key) as store:
        await store.audit_append([{"ts": 1000.0 + i, "kind": "service_call", "n": i} for i in range(start, start + n)])


async def verify(url: str, key: bytes | None) -> tuple[bool, str | None]:
    async with open_store(url, audit_key=key) as store:
        r = await store.audit_verify()
    return r.ok, r.reason


@pytest.mark.parametrize("forger_key", [None, b"w" * 40], ids=["plain-sha256", "wrong-key"])
async def test_edit_and_rehash_without_the_key_is_caught(store_url: str, forger_key: bytes | None) -> None:
    """The rows are keyed; an edit rehashed with plain SHA-256 or another key, head moved along,
    still fails verification. (The same forgery passes a store run without a key: the contrast.)"""
    await append(store_url, 5, KEY)
    rows = await sql(store_url, "SELECT hash FROM audit_events ORDER BY id")
    assert all(r["hash"].startswith(KEYED_PREFIX) for r in rows)
    assert await verify(store_url, KEY) == (True, "")
    await rehash_after_edit(store_url, 3, forger_key)
    ok, reason = await verify(store_url, KEY)
    assert not ok and reason is not None and "row 3" in reason


async def test_plain_chain_falls_to_the_same_forgery(store_url: str) -> None:
    """Why the key matters: without one, editing and rehashing verifies "ok"."""
    await append(store_url, 5, None)
    await rehash_after_edit(store_url, 3, None)
    assert await verify(store_url, None) == (True, "")
    ok, reason = await verify(store_url, KEY)  # a key-holder sees the chain was never keyed
    assert not ok and reason is not None and "no keyed row" in reason


async def test_chain_started_before_the_key_is_pinned_by_the_first_keyed_row(store_url: str) -> None:
    """Upgrade: plain rows then keyed rows verify with the key; rewriting the plain prefix breaks
    the first keyed row's link; a keyed chain refuses appends from a store without the key."""
    await append(store_url, 3, None)
    await append(store_url, 3, KEY, start=3)
    assert await verify(store_url, KEY) == (True, "")
    ok, reason = await verify(store_url, None)
    assert not ok and reason is not None and "audit key" in reason
    with pytest.raises(StoreError, match="keyed"):
        await append(store_url, 1, None, start=6)
    await sql(store_url, "UPDATE audit_events SET payload = $1 WHERE id = $2", '{"n":9}', 2)
    prev = (await sql(store_url, "SELECT hash FROM audit_events WHERE id = 1"))[0]["hash"]
    for row_id in (2, 3):  # the forger rehashes the plain prefix, which they can
        r = (await sql(store_url, "SELECT chain, ts, kind, payload FROM audit_events WHERE id = $1", row_id))[0]
        digest = chain_hash(prev, id=row_id, chain=r["chain"], ts=float(r["ts"]), kind=r["kind"],
                            payload_json=r["payload"])
        await sql(store_url, "UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE id = $3", prev, digest, row_id)
        prev = digest
    ok, reason = await verify(store_url, KEY)
    assert not ok and reason is not None and "row 4" in reason


async def test_cli_verifies_with_the_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """drivers.audit verify --audit-key-file: ok on the intact keyed chain, BROKEN after a rehash;
    without the key it says the chain needs it."""
    key_file = tmp_path / "audit.key"
    key_file.write_text(KEY.decode() + "\n")
    url = f"sqlite:///{tmp_path}/ops.db"
    await append(url, 4, KEY)
    assert await audit_cli.run(["--store", url, "--audit-key-file", str(key_file), "verify"]) == 0
    assert "ok: 4 audit events verified" in capsys.readouterr().out
    assert await audit_cli.run(["--store", url, "verify"]) == 1
    assert "verify with the audit key" in capsys.readouterr().out
    await rehash_after_edit(url, 2, None)
    assert await audit_cli.run(["--store", url, "--audit-key-file", str(key_file), "verify"]) == 1
    assert "BROKEN at row 2" in capsys.readouterr().out


def test_key_is_generated_once_private_and_never_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default file is generated (mode 0600) on first use and reused; a named file must exist;
    SFA_OPS_AUDIT_KEY wins; short keys are refused."""
    monkeypatch.chdir(tmp_path)
    assert load_audit_key(env={}) == (None, "none")
    key, where = load_audit_key(env={}, create=True)
    assert key is not None and len(key) == 64 and where == str(tmp_path / "var" / "audit.key")
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o600
    assert load_audit_key(env={}, create=True)[0] == key
    assert load_audit_key(env={"SFA_OPS_AUDIT_KEY": "e" * 40})[0] == b"e" * 40
    with pytest.raises(StoreConfigError, match="does not exist"):
        load_audit_key(str(tmp_path / "missing"), env={})
    with pytest.raises(StoreConfigError, match="at least"):
        load_audit_key(env={"SFA_OPS_AUDIT_KEY": "short"})
    (tmp_path / "short.key").write_text("abc\n")
    with pytest.raises(StoreConfigError, match="at least"):
        load_audit_key(str(tmp_path / "short.key"), env={})
