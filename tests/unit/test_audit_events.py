"""policies.audit.events: audit events from observed calls and data access, with compliance info,
sanitized; compliance tracking; retention chains. The planted-secret property runs each event
through the real SQLite store and the audit trail's logging too."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.audit_trail import AuditTrail
from actors.clock import FakeClock
from adapters.store.buffer import BufferedStore
from adapters.testing.doubles import InMemoryStore
from policies.audit.events import (
    META_CHAIN,
    ComplianceTracker,
    TrackerLimits,
    call_event,
    chain_for,
    data_access_event,
    purge_event,
    purge_plan,
    retention_chains,
    retention_of,
    violation_alert,
    violation_record,
)
from policies.compliance.classification import DataAccess, classify, load_compliance_policy

POLICY = load_compliance_policy()
NOW = 1_800_000_000.0


def access(user: str = "u1", collection: str = "orders", n: int = 10, roles: frozenset[str] = frozenset(),
           op: str = "read", service: str = "Orders") -> DataAccess:
    return DataAccess(user_id=user, roles=roles, service=service, collection=collection, operation=op,
                      record_count=n, timestamp=NOW)


@pytest.mark.parametrize(("service", "classification", "chain", "gdpr"), [
    ("UserManagement", "pii", "retention-1095d", True),
    ("OrderService", "confidential", "retention-2555d", False),
    ("Catalog", "internal", "retention-365d", False),
])
def test_call_event_carries_compliance_and_chain(service: str, classification: str, chain: str, gdpr: bool) -> None:
    """A call's event names its classification, retention chain and GDPR applicability from policy."""
    ev = call_event({"ts": NOW, "service": service, "method": "get", "userId": "u", "code": None,
                     "durationMs": 12.5, "params": {"id": 1}}, POLICY, NOW)
    assert ev["kind"] == "service_call" and ev["retention"] == chain and ev["success"] is True
    assert ev["compliance"]["dataClassification"] == classification
    assert ev["compliance"]["gdprApplicable"] is gdpr
    assert ev["durationMs"] == 12.5 and ev["parameters"] == {"id": 1}


def test_call_event_failure_and_hostile_fields() -> None:
    """An error code marks failure; CR/LF in ids is neutralised; a bogus ts falls back to now."""
    ev = call_event({"ts": "yesterday", "service": "Svc", "method": "m\r\nFAKE LOG LINE", "userId": "a\nb",
                     "code": -32003, "params": None}, POLICY, NOW)
    assert ev["success"] is False and ev["resultCode"] == -32003 and ev["ts"] == NOW
    assert "\n" not in ev["method"] and "\r" not in ev["method"] and "\n" not in ev["userId"]


def test_data_access_event_phi_and_record_ids_capped() -> None:
    """A medical collection is PHI under HIPAA with 6-year retention; record ids are capped at 100."""
    ev = data_access_event(access(collection="medical_records", service="Clinic"), [f"r{i}" for i in range(500)],
                           POLICY, NOW)
    assert ev["compliance"]["dataClassification"] == "phi" and ev["compliance"]["hipaaApplicable"] is True
    assert ev["retention"] == "retention-2190d" and len(ev["recordIds"]) == 100


def test_tracker_excessive_access_alerts_once_per_window() -> None:
    """> 1000 records in 24 h: one GDPR Art. 5(1)(c) violation; further reads are suppressed."""
    t = ComplianceTracker(policy=POLICY, limits=TrackerLimits(repeat_s=3600))
    assert t.observe(access(n=600), NOW) == []
    [v] = t.observe(access(n=600), NOW + 1)
    assert v.type == "excessive_data_access" and v.regulation == "GDPR Article 5(1)(c)"
    assert t.observe(access(n=600), NOW + 2) == [] and t.repeats == 1
    assert t.observe(access(user="u2", n=10), NOW + 3) == []


@pytest.mark.parametrize(("collection", "roles", "regulation"), [
    ("medical_records", frozenset(), "HIPAA §164.312(a)"),
    ("medical_records", frozenset({"medical_staff"}), None),
    ("payment_cards", frozenset({"clerk"}), "PCI DSS Requirement 7"),
    ("payment_cards", frozenset({"payment_processor"}), None),
])
def test_tracker_sensitive_collection_needs_role(collection: str, roles: frozenset[str],
                                                 regulation: str | None) -> None:
    """Reading a sensitive collection without the authorizing role is a violation naming the regulation."""
    got = ComplianceTracker(policy=POLICY).observe(access(collection=collection, roles=roles, n=1), NOW)
    assert [v.regulation for v in got] == ([regulation] if regulation else [])


def test_violation_record_and_alert() -> None:
    """A violation becomes a meta-chain audit event and an alert labelled with its regulation."""
    [v] = ComplianceTracker(policy=POLICY).observe(access(collection="medical_x", n=1), NOW)
    rec = violation_record(v, NOW)
    assert rec["kind"] == "compliance_violation" and rec["retention"] == META_CHAIN
    alert = violation_alert(v, "c1", NOW)
    assert alert["labels"]["regulation"] == "HIPAA §164.312(a)" and alert["labels"]["severity"] == "error"
    assert alert["labels"]["component"] == "security"


def test_retention_chains_and_purge_plan_round_trip() -> None:
    """Every chain the policy produces maps back to its retention; the meta chain is never purged."""
    chains = retention_chains(POLICY)
    info = classify("UserManagement", None, POLICY)
    assert chain_for(info) in chains
    for chain, seconds in chains.items():
        assert retention_of(chain) == seconds
    assert retention_of(META_CHAIN) is None and retention_of("default") is None
    plan = dict(purge_plan(chains, NOW))
    assert plan["retention-365d"] == NOW - 365 * 86400
    assert purge_event("retention-365d", 1.0, 3, NOW)["retention"] == META_CHAIN


# --- planted secrets never reach the store or the logs ----------------------------------------

# The "q7Z" prefix keeps a generated secret from being a word the row holds anyway (hypothesis
# once drew "UserManagement", the service's own name).
_secret = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789", min_size=11,
                  max_size=21).map(lambda t: "q7Z" + t)


def _planted(s: str) -> tuple[dict[str, object], list[str]]:
    """A params dict with ``s`` hidden the ways secrets arrive, and the strings that must vanish."""
    jwt = f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ{s}.{s}sig"
    params: dict[str, object] = {
        "password": s,
        "nested": {"apiKey": s, "list": [{"client_secret": s}], "Authorization": f"Bearer {s}"},
        "note": f"call me back, password={s} thanks",
        "dsn": f"postgresql://admin:{s}@db.internal:5432/app",
        "token_in_text": f"header {jwt} end",
        "card": "4111 1111 1111 1111",
        "dbPassword": s,
    }
    return params, [s, "4111 1111 1111 1111", "4111111111111111"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=_secret, agent_secret=_secret)
def test_planted_secrets_never_reach_store_or_logs(secret: str, agent_secret: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Secrets planted in params, text, URLs, JWTs and card numbers survive neither into the stored
    audit rows (the in-memory SQLite store, read back) nor into anything the audit trail logs."""
    params, forbidden = _planted(secret)
    record = {"ts": NOW, "service": "UserManagement", "method": "login", "userId": "u",
              "userAgent": f"curl/8 token={agent_secret}", "params": params, "result": {"token": secret}}
    forbidden.append(agent_secret)

    async def roundtrip() -> str:
        store = BufferedStore(inner=InMemoryStore(clock=FakeClock(NOW)))
        await store.open()
        try:
            trail = AuditTrail(store=store, policy=POLICY, cluster="c", max_pending=1, clock=FakeClock(NOW))
            trail.calls([record, record])  # the second overflows the batch: logged as a loss
            await trail.flush()
            rows = [r.payload async for r in store.audit_iter()]
        finally:
            await store.close()
        return orjson.dumps(rows).decode()

    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        stored = asyncio.run(roundtrip())
    assert "login" in stored  # the event itself is there
    for bad in forbidden:
        assert bad not in stored
        assert bad not in caplog.text
