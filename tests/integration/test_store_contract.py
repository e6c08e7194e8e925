"""One contract, two stores: every test here runs against SQLite (a file in tmp_path) and a real
PostgreSQL (a fresh database per test on the session's server)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from adapters.runtime.processes import ChildService, free_port
from adapters.store import (
    ActionRecord,
    AlertRecord,
    Dependency,
    IncidentRecord,
    IntegrityError,
    MetricRollup,
    SchemaError,
    Store,
    StoreConfigError,
    StoreUnavailable,
    open_store,
)
from adapters.store.migrations import migrations

pytestmark = pytest.mark.integration


class Clock:
    """A settable clock for the store's ``updated_at``/``created_at`` stamps."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Any, pg_database: str) -> AsyncIterator[str]:
    """A URL to an empty database of each kind: for PostgreSQL a fresh schema of the module's
    database, selected through the URL (asyncpg sends ``search_path`` as a server setting) —
    milliseconds, where CREATE DATABASE per test costs about half a second."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ops.db"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_database)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        yield f"{pg_database}?search_path={schema}"
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await admin.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(store_url: str, clock: Clock) -> AsyncIterator[Store]:
    """An opened store on a fresh database."""
    async with open_store(store_url, clock=clock) as s:
        yield s


async def raw(store: Store, url: str, sql: str, *args: Any) -> list[Any]:
    """Run SQL behind the store's back (``$1`` parameters), as a tamperer would."""
    if store.dialect == "sqlite":
        path = url.removeprefix("sqlite:///")

        def run() -> list[Any]:
            con = sqlite3.connect(path)
            try:
                rows = con.execute(sql.replace("$", "?"), args).fetchall()
                con.commit()
                return rows
            finally:
                con.close()

        return await asyncio.to_thread(run)
    con = await asyncpg.connect(url)
    try:
        return list(await con.fetch(sql, *args))
    finally:
        await con.close()


# ---------------------------------------------------------------- schema


async def test_migrations_are_idempotent(store_url: str) -> None:
    """Opening the same database twice applies each migration once and keeps the data."""
    async with open_store(store_url) as first:
        await first.state_put("ns", "k", {"v": 1})
    async with open_store(store_url) as second:
        assert await second.state_get("ns", "k") == {"v": 1}
        rows = await raw(second, store_url, "SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == [m.version for m in migrations(second.dialect)]


async def test_concurrent_openers_migrate_once(store_url: str) -> None:
    """Several stores opening an empty database at once all succeed and record each version once."""
    stores = [open_store(store_url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        rows = await raw(stores[0], store_url, "SELECT COUNT(*) FROM schema_version")
        assert rows[0][0] == len(migrations(stores[0].dialect))
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_newer_schema_is_refused(store: Store, store_url: str) -> None:
    """A database migrated by newer code raises SchemaError instead of being used blindly."""
    await raw(store, store_url, "INSERT INTO schema_version (version, name, applied_at) VALUES (999, 'future', 0)")
    with pytest.raises(SchemaError, match="999"):
        async with open_store(store_url):
            pass


async def test_closed_store_is_unavailable(store_url: str) -> None:
    """Using a store after close() raises StoreUnavailable, and close() is safe twice."""
    s = open_store(store_url)
    await s.open()
    await s.close()
    await s.close()
    with pytest.raises(StoreUnavailable):
        await s.state_get("ns", "k")


# ---------------------------------------------------------------- outbox, state, alerts


async def test_outbox_lifecycle(store: Store, clock: Clock) -> None:
    """Messages are pending until marked published, in order, and queryable by kind and time."""
    ids = []
    for n, kind in enumerate(["finding", "system", "finding"]):
        clock.now = 100.0 + n
        ids.append(await store.outbox_add(f"t/{n}", {"n": n}, qos=n % 2, retain=n == 1, kind=kind))
    assert ids == sorted(ids)
    pending = await store.outbox_pending()
    assert [(p.topic, p.payload, p.qos, p.retain) for p in pending] == [
        ("t/0", {"n": 0}, 0, False), ("t/1", {"n": 1}, 1, True), ("t/2", {"n": 2}, 0, False)
    ]
    clock.now = 200.0
    await store.outbox_mark_published(ids[:2])
    await store.outbox_mark_published(ids[:1])  # again: the first publish time stays
    assert [p.id for p in await store.outbox_pending()] == [ids[2]]
    assert [p.id for p in await store.outbox_pending(limit=0)] == []
    findings = await store.outbox_query(kind="finding")
    assert [f.id for f in findings] == [ids[0], ids[2]]
    assert findings[0].published_at == 200.0 and findings[1].published_at is None
    assert [r.id for r in await store.outbox_query(since=101.0, until=102.0)] == [ids[1]]
    assert await store.outbox_purge_published(before_ts=150.0) == 2
    assert [r.id for r in await store.outbox_query()] == [ids[2]]


async def test_state_documents(store: Store) -> None:
    """State is put, replaced, listed per namespace, deleted; the notification log is state too."""
    await store.state_put("breaker", "svcA", {"state": "open"})
    await store.state_put("breaker", "svcA", {"state": "half_open"})
    await store.state_put("breaker", "svcB", {"state": "closed"})
    await store.state_put("health", "svcA", {"ok": True})
    assert await store.state_get("breaker", "svcA") == {"state": "half_open"}
    assert await store.state_get("breaker", "nope") is None
    assert await store.state_list("breaker") == {"svcA": {"state": "half_open"}, "svcB": {"state": "closed"}}
    assert await store.state_delete("breaker", "svcA") is True
    assert await store.state_delete("breaker", "svcA") is False
    assert list(await store.state_list("breaker")) == ["svcB"]
    await store.notification_log_put("group1:receiverX", {"firingAlerts": [1, 2]})
    assert await store.notification_log_get_all() == {"group1:receiverX": {"firingAlerts": [1, 2]}}


async def test_alerts_upsert_by_fingerprint(store: Store, clock: Clock) -> None:
    """An alert is replaced by fingerprint and listed by status."""
    firing = AlertRecord(fingerprint="f1", labels={"alertname": "Down"}, annotations={"s": "x"}, starts_at=10.0)
    await store.alert_upsert(firing)
    await store.alert_upsert(AlertRecord(fingerprint="f2", labels={"alertname": "Slow"}, starts_at=5.0))
    clock.now = 2_000.0
    await store.alert_upsert(AlertRecord(
        fingerprint="f1", labels={"alertname": "Down"}, status="resolved", starts_at=10.0, ends_at=30.0
    ))
    got = await store.alert_get("f1")
    assert got is not None and (got.status, got.ends_at, got.updated_at) == ("resolved", 30.0, 2_000.0)
    assert got.annotations == {}
    assert [a.fingerprint for a in await store.alerts_list()] == ["f2", "f1"]
    assert [a.fingerprint for a in await store.alerts_list("firing")] == ["f2"]
    assert await store.alert_get("nope") is None


# ---------------------------------------------------------------- incidents and actions


def _incident(iid: str, created: float, status: str = "open") -> IncidentRecord:
    return IncidentRecord(id=iid, type="brute_force", severity="high", title=f"t-{iid}", status=status,
                          created_at=created, automated_response=True, data={"ip": "10.0.0.1"})


def _action(aid: str, incident: str | None, **kw: Any) -> ActionRecord:
    return ActionRecord(id=aid, incident_id=incident, action="block_ip", target="10.0.0.1",
                        params={"minutes": 15}, created_at=kw.pop("created_at", 1.0), **kw)


async def test_incidents_and_their_actions(store: Store) -> None:
    """Open incidents, time queries, undo-pending and active actions answer from stored rows."""
    await store.incident_upsert(_incident("i1", 10.0))
    await store.incident_upsert(_incident("i2", 20.0))
    await store.incident_upsert(_incident("i3", 30.0, status="resolved"))
    await store.incident_upsert(_incident("i1", 99.0, status="contained"))  # created_at kept
    i1 = await store.incident_get("i1")
    assert i1 is not None and (i1.status, i1.created_at, i1.data, i1.automated_response) == (
        "contained", 10.0, {"ip": "10.0.0.1"}, True)
    assert [i.id for i in await store.incidents_open()] == ["i1", "i2"]
    assert [i.id for i in await store.incidents_query(since=15.0, until=31.0)] == ["i2", "i3"]

    await store.action_upsert(_action("a1", "i1", until=100.0, undo_at=100.0))
    await store.action_upsert(_action("a2", "i1", created_at=2.0, undo_at=50.0))
    await store.action_upsert(_action("a3", "i2", status="failed", error="redis down"))
    await store.action_upsert(_action("a4", None, undo_at=40.0, undone_at=45.0, status="undone"))
    assert [a.id for a in await store.actions_for_incident("i1")] == ["a1", "a2"]
    assert [a.id for a in await store.actions_pending_undo(now=60.0)] == ["a2"]
    assert [a.id for a in await store.actions_pending_undo(now=100.0)] == ["a2", "a1"]
    assert [a.id for a in await store.actions_active(now=60.0)] == ["a1", "a2"]
    assert [a.id for a in await store.actions_active(now=100.0)] == ["a2"]
    await store.action_upsert(_action("a2", "i1", created_at=2.0, undo_at=50.0, undone_at=61.0, status="undone"))
    assert [a.id for a in await store.actions_pending_undo(now=100.0)] == ["a1"]
    with pytest.raises(IntegrityError):
        await store.action_upsert(_action("a9", "no-such-incident"))


# ---------------------------------------------------------------- audit chain


def _events(start: int, n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"ts": float(t), "kind": "data-access", "userId": f"u{t}", **extra} for t in range(start, start + n)]


async def test_audit_append_iterate_verify(store: Store) -> None:
    """Batches continue one chain; iteration is in order, filtered by time, paged; verify passes."""
    await store.audit_append(_events(1, 5))
    await store.audit_append(_events(6, 5))
    await store.audit_append([])
    rows = [r async for r in store.audit_iter(batch=3)]
    assert [r.ts for r in rows] == [float(t) for t in range(1, 11)]
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    assert rows[0].payload == {"ts": 1.0, "kind": "data-access", "userId": "u1"}
    assert [r.ts async for r in store.audit_iter(since=3.0, until=6.0, batch=2)] == [3.0, 4.0, 5.0]
    result = await store.audit_verify()
    assert (result.ok, result.checked, result.first_broken_id) == (True, 10, None)


TRICKY_PAYLOADS = [
    {"big": 1e20, "small": 1e-7, "third": 0.1 + 0.2, "neg0": -0.0},
    {"int": 2**62, "unicode": "żółw ✓ \u2028", "crlf": "a\r\nb", "nul": "x\x00"},
    {"nested": {"b": [1, {"z": None, "a": True}], "a": {}}, "empty": ""},
]


@pytest.mark.parametrize("payload", TRICKY_PAYLOADS, ids=["floats", "strings", "nested"])
async def test_audit_payloads_round_trip_and_verify(store: Store, payload: dict[str, Any]) -> None:
    """Awkward JSON values come back equal and the stored bytes still hash to the stored hash."""
    await store.audit_append([{"ts": 1.0, **payload}])
    [row] = [r async for r in store.audit_iter()]
    assert row.payload == {"ts": 1.0, **payload}
    assert (await store.audit_verify()).ok


TAMPERING = [
    # (name, SQL applied to row ids 1..6 of one chain, first broken id, reason contains)
    ("edit payload", ["UPDATE audit_events SET payload = '{\"userId\":\"mallory\"}' WHERE id = 3"], 3, "hash"),
    ("edit ts", ["UPDATE audit_events SET ts = 0.5 WHERE id = 2"], 2, "hash"),
    ("delete middle", ["DELETE FROM audit_events WHERE id = 4"], 5, "does not link"),
    ("swap ids", ["UPDATE audit_events SET id = 100 WHERE id = 3",
                  "UPDATE audit_events SET id = 3 WHERE id = 4",
                  "UPDATE audit_events SET id = 4 WHERE id = 100"], 3, "does not link"),
    ("rehash edited row", ["UPDATE audit_events SET payload = '{}', hash = 'f00d' WHERE id = 2"], 2, "hash"),
    ("forge one link", ["UPDATE audit_events SET hash = 'f00d' WHERE id = 2"], 2, "hash"),
    ("truncate tail", ["DELETE FROM audit_events WHERE id >= 5"], 6, "ends at row 4"),
]


@pytest.mark.parametrize(("sqls", "broken", "reason"), [t[1:] for t in TAMPERING], ids=[t[0] for t in TAMPERING])
async def test_audit_tampering_is_detected(
    store: Store, store_url: str, sqls: list[str], broken: int, reason: str
) -> None:
    """Each kind of tampering makes verify fail at the first row whose link breaks."""
    await store.audit_append(_events(1, 6))
    assert [r.id async for r in store.audit_iter()] == [1, 2, 3, 4, 5, 6]
    for sql in sqls:
        await raw(store, store_url, sql)
    result = await store.audit_verify()
    assert (result.ok, result.first_broken_id) == (False, broken), result
    assert reason in result.reason


async def test_audit_purge_keeps_chain_verifiable(store: Store, store_url: str) -> None:
    """Purging a prefix anchors the chain there: verify passes, appends continue, tampering still shows."""
    await store.audit_append(_events(1, 10))
    await store.audit_append(_events(1, 4, retention="security"))
    assert await store.audit_purge(before_ts=5.5, retention_key="default") == 5
    assert (await store.audit_verify()).ok
    assert await store.audit_purge(before_ts=5.5, retention_key="default") == 0
    assert await store.audit_purge(before_ts=99.0, retention_key="no-such-chain") == 0
    await store.audit_append(_events(20, 2))
    result = await store.audit_verify()
    assert (result.ok, result.checked) == (True, 5 + 4 + 2)
    # Prefix only: a later row older than the cutoff stays, so the chain keeps linking.
    await store.audit_append([{"ts": 1.0, "kind": "late"}])
    assert await store.audit_purge(before_ts=7.5) == 2 + 4
    remaining = [r async for r in store.audit_iter()]
    assert [r.ts for r in remaining] == [8.0, 9.0, 10.0, 20.0, 21.0, 1.0]
    assert (await store.audit_verify()).ok
    await raw(store, store_url, "DELETE FROM audit_events WHERE id = $1", remaining[1].id)
    assert (await store.audit_verify()).first_broken_id == remaining[2].id


async def test_audit_concurrent_appenders_keep_one_chain(store_url: str) -> None:
    """Appenders racing on one chain (separate stores, many connections) never fork it."""
    stores = [open_store(store_url, pool_max_size=4) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        await asyncio.gather(*(
            stores[n % 3].audit_append(_events(100 * n, 10, writer=n)) for n in range(12)
        ))
        result = await stores[0].audit_verify()
        assert (result.ok, result.checked) == (True, 120), result
    finally:
        for s in stores:
            await s.close()


async def test_audit_bulk_batch(store: Store) -> None:
    """A large batch (COPY on PostgreSQL) lands whole, in order, and verifies."""
    await store.audit_append(_events(1, 2_000))
    assert (await store.audit_verify()).checked == 2_000
    ids = [r.id async for r in store.audit_iter(batch=700)]
    assert ids == sorted(ids) and len(ids) == 2_000


# ---------------------------------------------------------------- metrics, dependencies, baselines


async def test_metrics_upsert_replaces_and_queries(store: Store) -> None:
    """Rollups are replaced by (service, minute) and filtered by service and [since, until)."""
    rows = [MetricRollup(service=s, minute=60.0 * m, calls=m, outcomes={"ok": m, "-32007": 1},
                         latency_sketch=bytes([m, 0, 255]), concurrency_max=m, concurrency_avg=m / 2,
                         timeouts=1, queue_depth=m + 1) for s in ("A", "B") for m in range(1, 4)]
    await store.metrics_upsert(rows)
    await store.metrics_upsert([MetricRollup(service="A", minute=120.0, calls=99, latency_sketch=b"\x01")])
    await store.metrics_upsert([])
    a = await store.metrics_query("A", 0.0, 1e9)
    assert [(m.minute, m.calls) for m in a] == [(60.0, 1), (120.0, 99), (180.0, 3)]
    assert a[1].outcomes == {} and a[1].latency_sketch == b"\x01" and a[1].queue_depth == 0
    assert a[2] == rows[2]
    everything = await store.metrics_query(None, 120.0, 180.0)
    assert [(m.service, m.minute) for m in everything] == [("A", 120.0), ("B", 120.0)]


async def test_dependencies_add_counts(store: Store) -> None:
    """Edge counts add up across upserts and the latest last_seen wins."""
    await store.dependencies_upsert([Dependency(caller="web", callee="users", count=3, last_seen=10.0),
                                     Dependency(caller="users", callee="db", count=1, last_seen=5.0)])
    await store.dependencies_upsert([Dependency(caller="web", callee="users", count=2, last_seen=7.0)])
    assert await store.dependencies_list() == [
        Dependency(caller="users", callee="db", count=1, last_seen=5.0),
        Dependency(caller="web", callee="users", count=5, last_seen=10.0),
    ]


async def test_baselines_are_versioned(store: Store) -> None:
    """Each put is a new version per kind, also when puts race; latest returns the highest."""
    assert await store.baseline_latest("latency") is None
    assert await store.baseline_put("latency", {"p99": 1}) == 1
    versions = await asyncio.gather(*(store.baseline_put("latency", {"p99": n}) for n in range(5)))
    assert sorted(versions) == [2, 3, 4, 5, 6]
    assert await store.baseline_put("errors", {}) == 1
    latest = await store.baseline_latest("latency")
    assert latest is not None and latest.version == 6


# ---------------------------------------------------------------- URLs and reachability

BAD_URLS = [
    ("", "empty"),
    ("var/ops.db", "no scheme"),
    ("mysql://u@h/db", "scheme 'mysql' is not supported"),
    ("sqlite://host/ops.db", "host part 'host' must be empty"),
    ("sqlite:///", "names no database file"),
    ("sqlite:///var/x.db?mode=ro", "no query options"),
    ("postgresql://u@h:notaport/db", "port is not a number"),
    ("postgresql:///db", "names no host"),
]


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_bad_urls_name_the_part_and_fix(url: str, message: str) -> None:
    """A wrong URL raises StoreConfigError naming what is wrong."""
    with pytest.raises(StoreConfigError, match=message):
        open_store(url)


def test_password_never_in_errors() -> None:
    """A password in a bad PostgreSQL URL is redacted from the error message."""
    with pytest.raises(StoreConfigError) as info:
        open_store("postgresql://u:s3cret@h:99999/db")
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


async def test_unreachable_postgres_is_unavailable() -> None:
    """Nothing listening on the port: open() raises StoreUnavailable from the OS error."""
    store = open_store(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", connect_timeout=2)
    with pytest.raises(StoreUnavailable) as info:
        await store.open()
    assert info.value.__cause__ is not None


async def test_missing_database_is_config_error(postgres_server: ChildService) -> None:
    """A database that does not exist is a configuration error that says how to fix it."""
    url = postgres_server.url.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(StoreConfigError, match="createdb"):
        await open_store(url).open()


async def test_sqlite_memory_and_relative_paths(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sqlite://:memory:`` works and ``sqlite:///var/x.db`` is relative to the working directory."""
    async with open_store("sqlite://:memory:") as mem:
        await mem.state_put("n", "k", {})
        assert await mem.state_get("n", "k") == {}
    monkeypatch.chdir(tmp_path)
    async with open_store("sqlite:///var/sfa-ops.db") as f:
        await f.ping()
    assert (tmp_path / "var" / "sfa-ops.db").exists()
