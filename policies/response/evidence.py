"""Evidence records (the ``preserve_evidence`` response action): a copy of what the audit log holds
about the action's target — every row whose user id or address is the target, within the
lookback — and the alert that raised the incident, sealed by a SHA-256 over its canonical JSON.

Each copied row keeps its chain, id and hash, so the copy can be checked against the hash-chained
audit log (``drivers.audit verify``) for as long as the rows are retained, and stays readable
after retention purged them. Bounded: at most ``max_rows`` rows and ``max_bytes`` of row
payloads; what does not fit is counted in ``omittedRows``.

Pure: the responder reads the rows and stores the record (``state`` namespace ``EVIDENCE``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

EVIDENCE = "security_evidence"
"""Store state namespace of evidence records, keyed by the action id."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceLimits:
    lookback_s: float = 86_400.0
    max_rows: int = 5_000
    max_bytes: int = 4 << 20


def concerns(payload: Mapping[str, Any], target: str) -> bool:
    """Whether an audit row's payload is about ``target`` (its user id or address)."""
    return payload.get("userId") == target or payload.get("ipAddress") == target


def seal(content: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``content``'s canonical JSON (sorted keys, no ``sha256`` field)."""
    body = {k: v for k, v in content.items() if k != "sha256"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def verify(record: Mapping[str, Any]) -> bool:
    """Whether a stored evidence record still matches its seal."""
    return isinstance(record.get("sha256"), str) and seal(record) == record["sha256"]


def evidence_record(*, evidence_id: str, incident_id: str, target: str, alert: Mapping[str, Any],
                    rows: Iterable[Mapping[str, Any]], since: float, now: float,
                    limits: EvidenceLimits) -> dict[str, Any]:
    """The sealed record. ``rows``: audit rows as ``{"id", "chain", "ts", "kind", "hash",
    "payload"}`` in append order (any rows: those not about ``target`` are skipped)."""
    kept: list[dict[str, Any]] = []
    used = omitted = 0
    for row in rows:
        payload = row.get("payload")
        if not isinstance(payload, Mapping) or not concerns(payload, target):
            continue
        size = len(orjson.dumps(payload))
        if len(kept) >= limits.max_rows or used + size > limits.max_bytes:
            omitted += 1
            continue
        used += size
        kept.append({k: row.get(k) for k in ("id", "chain", "ts", "kind", "hash")} | {"payload": dict(payload)})
    record: dict[str, Any] = {"evidenceId": evidence_id, "incidentId": incident_id, "target": target,
                              "collectedAt": now, "since": since, "alert": dict(alert), "auditRows": kept,
                              "omittedRows": omitted}
    record["sha256"] = seal(record)
    return record
