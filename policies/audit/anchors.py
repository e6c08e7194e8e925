"""Audit anchors: what an anchor records of the chains, and how the chains compare with anchors.

An anchor (``protocol.system.AuditAnchor``) records, per chain, its head row (id and hash) and how
many rows it ever held (present plus purged). It is published signed and appended to a file kept
apart from the database, so a change that keeps the chain self-consistent still shows against it:

- tail truncation: the chain now holds fewer rows than an anchor counted, or the anchored head row
  is gone or has another hash (rows cut and others appended since);
- whole deletion: no chain left (or one chain gone) while anchors recorded rows;
- an edited row rehashed: caught by the chain's own HMAC check; without the key, an anchored head
  hash that differs shows it too.

An anchored head that the chain's retention purge has since passed cannot be re-read; it is
accepted when it is the purge point itself (its hash compared) or lies before it. Only the
strongest anchor of each chain (highest count) needs checking: the chain links every earlier row
to its head.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from protocol.system import MAX_ANCHOR_CHAINS, AuditAnchor, AuditChainAnchor


@dataclass(frozen=True, slots=True)
class ChainState:
    """One chain as the store holds it now."""

    chain: str
    head_id: int
    head_hash: str
    purged_id: int
    """The last row the retention purge deleted (0: none); verification starts after it."""
    purged_hash: str
    count: int
    """Rows present plus rows purged."""


def build_anchor(states: Iterable[ChainState], cluster: str, now: float) -> AuditAnchor:
    """The anchor of the chains as they stand (the first ``MAX_ANCHOR_CHAINS`` by name)."""
    chains = [AuditChainAnchor(chain=s.chain, count=s.count, head_id=s.head_id, head_hash=s.head_hash)
              for s in sorted(states, key=lambda s: s.chain)[:MAX_ANCHOR_CHAINS]]
    return AuditAnchor(cluster_id=cluster, timestamp=datetime.fromtimestamp(now, UTC),
                       rows=sum(c.count for c in chains), chains=chains)


def strongest(current: Mapping[str, tuple[AuditChainAnchor, float]], anchor: AuditAnchor,
              max_chains: int = 4 * MAX_ANCHOR_CHAINS) -> dict[str, tuple[AuditChainAnchor, float]]:
    """Fold one anchor into the strongest anchor seen per chain (highest count, then latest
    head), each with its anchor's time; at most ``max_chains`` chains are kept."""
    out = dict(current)
    at = anchor.timestamp.timestamp()
    for c in anchor.chains:
        old = out.get(c.chain)
        if old is None and len(out) >= max_chains:
            continue
        if old is None or (c.count, c.head_id) > (old[0].count, old[0].head_id):
            out[c.chain] = (c, at)
    return out


def check_anchors(anchored: Mapping[str, tuple[AuditChainAnchor, float]], states: Mapping[str, ChainState],
                  head_hashes: Mapping[tuple[str, int], str]) -> list[str]:
    """Every disagreement between the chains and their strongest anchors, as sentences; empty when
    the chains hold everything the anchors recorded. ``head_hashes`` maps (chain, row id) to the
    hash of that row where it is present (the anchored heads looked up)."""
    recorded = {name: a for name, a in anchored.items() if a[0].count > 0}
    if recorded and not any(s.count for s in states.values()):
        total = sum(a.count for a, _ in recorded.values())
        return [f"the audit log is empty but anchors recorded {total} rows in {len(recorded)} chain(s)"
                " (whole deletion)"]
    problems = []
    for name in sorted(recorded):
        a, at = recorded[name]
        when = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
        state = states.get(name)
        if state is None or state.count == 0:
            problems.append(f"chain {name!r} is gone but the anchor of {when} recorded {a.count} rows"
                            " (chain deleted)")
            continue
        if state.count < a.count:
            problems.append(f"chain {name!r} holds {state.count} rows but the anchor of {when} recorded"
                            f" {a.count} (tail truncated)")
            continue
        problem = _head_problem(a, state, head_hashes.get((name, a.head_id)))
        if problem:
            problems.append(f"chain {name!r}: the anchor of {when} recorded row {a.head_id} as its head"
                            f" ({a.count} rows); {problem}")
    return problems


def _head_problem(a: AuditChainAnchor, state: ChainState, present: str | None) -> str | None:
    if a.head_id < state.purged_id:
        return None  # purged by retention since: the chain's own check starts after it
    if a.head_id == state.purged_id:
        return None if state.purged_hash == a.head_hash else "the purge point there has another hash (rewritten)"
    if present is None:
        return "that row is gone (tail truncated, rows appended since)"
    if present != a.head_hash:
        return "that row now has another hash (rewritten)"
    return None
