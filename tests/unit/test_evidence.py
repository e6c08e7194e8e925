"""Evidence records: the target's audit rows (and only those), the alert, bounded, sealed with a
SHA-256 that any later edit breaks."""

from __future__ import annotations

from typing import Any

from policies.response.evidence import EvidenceLimits, evidence_record, verify

NOW = 1_800_000_000.0


def row(i: int, **payload: Any) -> dict[str, Any]:
    return {"id": i, "chain": "retention-365d", "ts": NOW - 100 + i, "kind": "service_call", "hash": f"h{i}",
            "payload": {"kind": "service_call", **payload}}


ROWS = [row(1, userId="mallory", ipAddress="10.0.0.1"), row(2, userId="alice"),
        row(3, userId="bob", ipAddress="mallory"), row(4, userId="mallory", parameters={"q": "x" * 100})]


def record(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"evidence_id": "inc-1:3:preserve_evidence", "incident_id": "inc-1", "target": "mallory",
                            "alert": {"type": "data_exfiltration_suspected"}, "rows": ROWS, "since": NOW - 86400,
                            "now": NOW, "limits": EvidenceLimits()}
    return evidence_record(**(args | kw))


def test_keeps_the_targets_rows_with_their_chain_links_and_seals_them() -> None:
    """Rows whose userId or ipAddress is the target, with id, chain and hash (checkable against
    the audit chain); the record verifies."""
    r = record()
    assert [x["id"] for x in r["auditRows"]] == [1, 3, 4]
    assert r["auditRows"][0] == ROWS[0]
    assert r["alert"] == {"type": "data_exfiltration_suspected"} and r["omittedRows"] == 0
    assert len(r["sha256"]) == 64 and verify(r)


def test_any_edit_breaks_the_seal() -> None:
    r = record()
    r["auditRows"][0]["payload"]["userId"] = "someone-else"
    assert not verify(r)
    assert not verify({**record(), "sha256": None})


def test_bounded_rows_and_bytes_count_what_was_left_out() -> None:
    """At most max_rows rows and max_bytes of payloads; the rest is counted, not kept."""
    assert [x["id"] for x in record(limits=EvidenceLimits(max_rows=2))["auditRows"]] == [1, 3]
    small = record(limits=EvidenceLimits(max_bytes=150))
    assert [x["id"] for x in small["auditRows"]] == [1, 3] and small["omittedRows"] == 1
    assert verify(small)
