"""The shipped ``InMemoryStore`` passes the store contract: the contract tests of
``tests/integration/test_store_contract.py`` that need only a store and its clock, run here on an
in-memory database (no server). Those that tamper with the database behind the store's back, or
open it from several processes, need a file or a server and stay in the integration suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.store import Store
from adapters.testing.doubles import InMemoryStore
from tests.integration.test_store_contract import (
    Clock,
    test_alerts_upsert_by_fingerprint,
    test_audit_append_iterate_verify,
    test_audit_bulk_batch,
    test_audit_payloads_round_trip_and_verify,
    test_baselines_are_versioned,
    test_dependencies_add_counts,
    test_incidents_and_their_actions,
    test_metrics_upsert_replaces_and_queries,
    test_outbox_lifecycle,
    test_state_documents,
)

__all__ = [
    "test_alerts_upsert_by_fingerprint",
    "test_audit_append_iterate_verify",
    "test_audit_bulk_batch",
    "test_audit_payloads_round_trip_and_verify",
    "test_baselines_are_versioned",
    "test_dependencies_add_counts",
    "test_incidents_and_their_actions",
    "test_metrics_upsert_replaces_and_queries",
    "test_outbox_lifecycle",
    "test_state_documents",
]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(clock: Clock) -> AsyncIterator[Store]:
    """An opened, empty in-memory store."""
    async with InMemoryStore(clock=clock) as s:
        yield s


async def test_each_in_memory_store_is_private(clock: Clock) -> None:
    """Two in-memory stores share nothing: what one holds the other does not see."""
    async with InMemoryStore(clock=clock) as a, InMemoryStore(clock=clock) as b:
        await a.state_put("ns", "k", {"v": 1})
        assert await a.state_get("ns", "k") == {"v": 1}
        assert await b.state_get("ns", "k") is None
