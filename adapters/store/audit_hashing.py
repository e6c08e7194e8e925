"""Audit chain hashing, shared by both SQL stores: the canonical JSON audit payloads are stored and
hashed in, the chain digest (HMAC-SHA256 under the audit key, or plain sha256), and an audit event
taken from a caller's dict (``audit_input``)."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from adapters.store.base import StoreError

GENESIS_HASH = "0" * 64
DEFAULT_CHAIN = "default"


def canonical_json(data: Mapping[str, Any]) -> str:
    """Sorted-key orjson text: the form audit payloads are stored and hashed in."""
    try:
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError as exc:
        raise StoreError(f"audit payload is not JSON-serialisable: {exc}") from exc


KEYED_PREFIX = "hmac-sha256:"


def chain_hash(prev_hash: str, *, id: int, chain: str, ts: float, kind: str, payload_json: str,
               key: bytes | None = None) -> str:
    """The digest of ``prev_hash`` + the canonical JSON of the row's content (its id included, so a
    row moved to another id no longer verifies): ``hmac-sha256:<hex>`` under the audit ``key`` (a
    secret kept out of the database, so whoever can write the database cannot rehash an edit), or
    the plain sha256 hex of stores run without a key."""
    content = orjson.dumps(
        {"chain": chain, "id": id, "kind": kind, "payload": orjson.Fragment(payload_json), "ts": ts},
        option=orjson.OPT_SORT_KEYS,
    )
    if key is not None:
        return KEYED_PREFIX + hmac.new(key, prev_hash.encode() + content, hashlib.sha256).hexdigest()
    return hashlib.sha256(prev_hash.encode() + content).hexdigest()


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditInput:
    """An audit event ready to store: taken from a caller's dict by ``audit_input``."""

    chain: str
    ts: float
    kind: str
    payload_json: str


def audit_input(event: Mapping[str, Any], now: float) -> AuditInput:
    """The whole dict is the payload; ``ts`` (epoch seconds, default ``now``), ``kind`` (default
    "event") and ``retention`` (the chain, default "default") are also copied to columns."""
    ts = event.get("ts", now)
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts):
        raise StoreError(f"audit event 'ts' must be finite epoch seconds, got {ts!r}")
    kind = event.get("kind", "event")
    chain = event.get("retention", DEFAULT_CHAIN)
    if not isinstance(kind, str) or not isinstance(chain, str) or not chain:
        raise StoreError("audit event 'kind' and 'retention' must be non-empty strings")
    return AuditInput(chain=chain, ts=float(ts), kind=kind, payload_json=canonical_json(event))
