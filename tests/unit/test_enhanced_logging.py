"""enhanced_logging: a call by a user or from an address under the action keeps its full (still
redacted) parameters in the audit log until the action ends; other calls keep the usual caps."""

from __future__ import annotations

import asyncio
from typing import Any

from actors.audit_trail import AuditTrail
from actors.clock import FakeClock
from adapters.store.buffer import BufferedStore
from adapters.testing.doubles import InMemoryStore
from policies.audit.events import call_event, enhanced_redaction
from policies.compliance.classification import load_compliance_policy
from policies.response.monitoring_watch import active_targets
from protocol.security import ActiveActions

POLICY = load_compliance_policy()
NOW = 1_800_000_000.0
LONG = "x" * 10_000  # beyond the configured max_string_length (2048)


def record(user: str, ip: str = "198.51.100.1") -> dict[str, Any]:
    return {"ts": NOW, "service": "Orders", "method": "search", "userId": user, "ipAddress": ip,
            "params": {"query": LONG, "password": "hunter2-secret", "email": "jane@example.com"}}


def test_enhanced_redaction_raises_only_the_size_caps() -> None:
    """Same secret and personal keys, larger caps (never lower than the configured ones)."""
    base = POLICY.redaction
    enhanced = enhanced_redaction(base)
    assert (enhanced.secret_keys, enhanced.personal_keys) == (base.secret_keys, base.personal_keys)
    assert enhanced.max_string_length >= 65_536 > base.max_string_length
    assert enhanced.max_total_bytes >= base.max_total_bytes


def test_call_event_keeps_full_parameters_under_enhanced_logging_still_redacted() -> None:
    plain = call_event(record("alice"), POLICY, NOW)
    full = call_event(record("alice"), POLICY, NOW, enhanced=enhanced_redaction(POLICY.redaction))
    assert len(plain["parameters"]["query"]) < len(LONG) and plain["enhancedLogging"] is False
    assert full["parameters"]["query"] == LONG and full["enhancedLogging"] is True
    for event in (plain, full):
        assert "hunter2" not in str(event) and "jane@example.com" not in str(event)


def test_active_targets_of_enhanced_logging() -> None:
    """Only active enhanced_logging actions count; the latest expiry wins; untimed stays untimed."""
    doc = ActiveActions.model_validate({"timestamp": NOW, "actions": [
        {"action": "enhanced_logging", "target": "alice", "until": NOW + 60},
        {"action": "enhanced_logging", "target": "alice", "until": NOW + 600},
        {"action": "enhanced_logging", "target": "bob", "until": NOW - 1},
        {"action": "enhanced_logging", "target": "carol"},
        {"action": "enhanced_logging", "target": "carol", "until": NOW + 5},
        {"action": "increase_monitoring", "target": "dave", "until": NOW + 60},
        {"action": "enhanced_logging", "target": "erin", "until": NOW + 60, "undo": True}]})
    assert active_targets(doc.actions, "enhanced_logging", NOW) == {"alice": NOW + 600, "carol": None}


def test_audit_trail_records_targets_in_full_until_the_action_ends() -> None:
    """The audit trail, writing to the real SQLite store in memory: alice's call (user under enhanced logging)
    and one from a watched address are stored in full; bob's is capped; after expiry, alice's is
    capped again."""
    clock = FakeClock(NOW)

    async def run() -> list[dict[str, Any]]:
        store = BufferedStore(inner=InMemoryStore(clock=clock))
        await store.open()
        try:
            trail = AuditTrail(store=store, policy=POLICY, cluster="c", clock=clock)
            trail.enhanced = {"alice": NOW + 60, "203.0.113.9": None}
            trail.calls([record("alice"), record("bob"), record("carol", ip="203.0.113.9")])
            clock.advance(61)
            trail.calls([record("alice")])
            await trail.flush()
            assert trail.counts["enhanced"] == 2
            return [r.payload async for r in store.audit_iter()]
        finally:
            await store.close()

    rows = asyncio.run(run())
    full = [(r["userId"], r["parameters"]["query"] == LONG, r["enhancedLogging"]) for r in rows]
    assert full == [("alice", True, True), ("bob", False, False), ("carol", True, True), ("alice", False, False)]
