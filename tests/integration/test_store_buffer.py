"""BufferedStore against a real PostgreSQL that these tests crash and restart on the same port:
writes queue while it is down, flush in order when it is back, and overflow is counted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import asyncpg
import pytest

from adapters.runtime.processes import (
    ChildService,
    init_postgres_datadir,
    postgres_workdir,
    start_postgres_datadir,
)
from adapters.store import (
    ActionRecord,
    IncidentRecord,
    MetricRollup,
    StoreUnavailable,
    open_store,
)
from adapters.store.buffer import BufferedStore

pytestmark = pytest.mark.integration


class Postgres:
    """A PostgreSQL of our own that can crash (SIGKILL) and come back on the same port and data."""

    # The shared test server runs with synchronous_commit=off; a SIGKILL would then lose commits
    # still in WAL buffers (up to 200 ms), which is not the outage under test here.
    SETTINGS: ClassVar[dict[str, str]] = {"synchronous_commit": "on"}

    def __init__(self) -> None:
        self.workdir = postgres_workdir("sfa-buffer-pg-")
        self.datadir = init_postgres_datadir(self.workdir)
        self.service: ChildService = start_postgres_datadir(self.datadir, self.workdir, settings=self.SETTINGS)

    @property
    def url(self) -> str:
        return self.service.url

    def crash(self) -> None:
        self.service.kill()

    def restart(self) -> None:
        self.service = start_postgres_datadir(
            self.datadir, self.workdir, port=self.service.port, settings=self.SETTINGS
        )

    def stop(self) -> None:
        self.service.stop()


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[Postgres]:
    pg = Postgres()
    yield pg
    pg.stop()


@pytest.fixture
async def url(own_postgres: Postgres) -> AsyncIterator[str]:
    """A fresh schema on the module's server (it must be up when the test starts and ends)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(own_postgres.url)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    await admin.close()
    yield f"{own_postgres.url}?search_path={schema}"
    admin = await asyncpg.connect(own_postgres.url)
    await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await admin.close()


@dataclass
class Hooks:
    """Records what the buffer told its caller."""

    unavailable: list[str] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)
    drops: list[tuple[str, int]] = field(default_factory=list)

    def kwargs(self) -> dict[str, Any]:
        return {
            "on_unavailable": lambda exc: self.unavailable.append(str(exc)),
            "on_recovered": lambda _outage, flushed: self.recovered.append(flushed),
            "on_drop": lambda kind, n: self.drops.append((kind, n)),
        }


def _buffered(url: str, hooks: Hooks, max_queued: int) -> BufferedStore:
    return BufferedStore(
        inner=open_store(url, connect_timeout=1.0, pool_max_size=2), max_queued=max_queued,
        backoff_initial=0.05, backoff_max=0.3, **hooks.kwargs(),
    )


async def test_outage_queues_in_order_and_counts_overflow(own_postgres: Postgres, url: str) -> None:
    """Across a crash and restart nothing queued is lost, order holds, and overflow is counted."""
    hooks = Hooks()
    store = _buffered(url, hooks, max_queued=50)
    await store.open()
    try:
        await store.audit_append([{"ts": 1.0, "n": 0}])
        await store.incident_upsert(IncidentRecord(id="i1", type="t", severity="low", title="x", created_at=1.0))
        own_postgres.crash()

        for b in range(10):  # 30 audit events
            await store.audit_append([{"ts": 2.0 + b, "n": 3 * b + k + 1} for k in range(3)])
        tickets = [await store.outbox_add(f"t/{n}", {"n": n}) for n in range(5)]
        assert all(t < 0 for t in tickets)
        await store.outbox_mark_published(tickets[:2])
        await store.metrics_upsert([MetricRollup(service="A", minute=60.0 * m, calls=m) for m in range(10)])
        await store.action_upsert(ActionRecord(id="bad", incident_id="nope", action="a", target="t", created_at=1.0))
        for n in range(10):  # 4 fit under the cap of 50, 6 do not
            await store.state_put("ns", f"k{n}", {"n": n})
        stats = store.stats()
        assert (stats.available, stats.queued, stats.dropped) == (False, 50, {"state": 6})
        assert hooks.drops == [("state", 1)] * 6 and len(hooks.unavailable) == 1
        with pytest.raises(StoreUnavailable):
            await store.state_get("ns", "k0")
        with pytest.raises(StoreUnavailable):
            [r async for r in store.audit_iter()]

        own_postgres.restart()
        assert await store.drain(timeout=30), store.stats()

        rows = [r async for r in store.audit_iter()]
        assert [r.payload["n"] for r in rows] == list(range(31))
        assert (await store.audit_verify()).ok
        pending = await store.outbox_pending()
        assert [p.topic for p in pending] == ["t/2", "t/3", "t/4"]
        assert len(await store.outbox_query()) == 5
        assert len(await store.metrics_query("A", 0.0, 1e9)) == 10
        assert sorted(await store.state_list("ns")) == ["k0", "k1", "k2", "k3"]
        stats = store.stats()
        assert (stats.available, stats.queued, stats.outages) == (True, 0, 1)
        assert stats.failed == {"action": 1}  # refused by the foreign key, not retried forever
        assert hooks.recovered == [stats.flushed]
    finally:
        await store.close()


async def test_open_while_down_catches_up(own_postgres: Postgres, url: str) -> None:
    """A job started while the database is down keeps running and writes through once it is up."""
    own_postgres.crash()
    hooks = Hooks()
    store = _buffered(url, hooks, max_queued=100)
    try:
        await store.open()  # does not raise
        assert not store.stats().available
        ticket = await store.outbox_add("t/x", {"x": 1})
        await store.state_put("ns", "k", {"v": 1})
        own_postgres.restart()
        assert await store.drain(timeout=30), store.stats()
        await store.outbox_mark_published([ticket])  # the ticket resolves to the stored id
        assert await store.outbox_pending() == []
        assert await store.state_get("ns", "k") == {"v": 1}
        assert len(hooks.unavailable) == 1 and len(hooks.recovered) == 1
    finally:
        await store.close()


async def test_failed_read_probes_until_back(own_postgres: Postgres, url: str) -> None:
    """A read that finds the database gone marks the store unavailable until a probe succeeds."""
    hooks = Hooks()
    store = _buffered(url, hooks, max_queued=10)
    await store.open()
    try:
        own_postgres.crash()
        with pytest.raises(StoreUnavailable):
            await store.state_get("ns", "k")
        assert not store.stats().available
        own_postgres.restart()
        assert await store.drain(timeout=30)
        assert await store.state_get("ns", "k") is None
        assert (len(hooks.unavailable), hooks.recovered) == (1, [0])
    finally:
        await store.close()
