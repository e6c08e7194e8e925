"""``python -m drivers.audit verify|purge --store URL`` — the audit trail's integrity and retention.

- ``verify [--anchors FILE]``: walks every hash chain; prints ``ok`` and the rows checked, or the
  first broken row (an edited, deleted or reordered row, or a cut tail) and why. With the anchor
  file operate writes (``--audit-anchor-file``, default var/audit-anchors.jsonl) it also compares
  the chains with what the anchors recorded: a tail truncated with the head moved back, a chain or
  the whole log deleted. Exit 1 when broken.
- ``purge [--policies DIR]``: deletes events past their chain's retention (``compliance.yaml``),
  and audits each purge (``audit_purge`` events in the meta chain). ``--now EPOCH`` replays a
  purge as of another time.

Exit status: 0 ok, 1 chain broken, 2 bad arguments or store unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence

from adapters.store import DEFAULT_URL, Store, StoreError, open_store, redact_url
from adapters.store.audit_anchor_file import read_anchors
from adapters.store.audit_key import ENV_KEY, ENV_KEY_FILE, load_audit_key
from drivers.options import LOG_OPTIONS, OptionError, add_options, configure_logs, fail, from_args
from policies.audit.anchors import check_anchors
from policies.audit.events import purge_event, purge_plan, retention_chains
from policies.common.config import PolicyConfigError
from policies.compliance.classification import load_compliance_policy

PROG = "python -m drivers.audit"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--store", default=os.environ.get("SFA_OPS_STORE", DEFAULT_URL), metavar="URL",
                   help="sqlite:///path or postgresql://user@host/db (env SFA_OPS_STORE)")
    p.add_argument("--audit-key-file", default=None, metavar="FILE",
                   help="the audit chain's HMAC key operate used (it prints where: var/audit.key by "
                        "default); or SFA_OPS_AUDIT_KEY / SFA_OPS_AUDIT_KEY_FILE")
    add_options(p, LOG_OPTIONS)
    sub = p.add_subparsers(dest="command", required=True)
    vf = sub.add_parser("verify", help="check every hash chain (and against the anchor file)")
    vf.add_argument("--anchors", default=None, metavar="FILE",
                    help="the anchor file operate appends to (JSON lines, --audit-anchor-file)")
    pg = sub.add_parser("purge", help="delete events past their retention (audited)")
    pg.add_argument("--policies", default=os.environ.get("SFA_OPS_POLICIES"), metavar="DIR")
    pg.add_argument("--now", type=float, default=None, help="epoch seconds to purge as of (default: now)")
    return p


async def _verify(store: Store, anchors_path: str | None) -> int:
    anchors = None
    if anchors_path:
        try:
            anchors = read_anchors(anchors_path)
        except OSError as exc:
            print(f"{PROG}: anchor file {anchors_path}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        if anchors.malformed:
            print(f"warning: {anchors.malformed} line(s) of {anchors_path} are not anchors (ignored)")
    result = await store.audit_verify()
    if not result.ok:
        print(f"BROKEN at row {result.first_broken_id}: {result.reason} ({result.checked} rows checked)")
        return 1
    if anchors is None:
        print(f"ok: {result.checked} audit events verified")
        return 0
    states = {s.chain: s for s in await store.audit_heads()}
    hashes = await store.audit_row_hashes([(name, a.head_id) for name, (a, _) in anchors.anchored.items()])
    problems = check_anchors(anchors.anchored, states, hashes)
    for p in problems:
        print(f"BROKEN against the anchors: {p}")
    if problems:
        return 1
    print(f"ok: {result.checked} audit events verified, and against {anchors.anchors} anchor(s)"
          f" of {len(anchors.anchored)} chain(s)")
    return 0


async def _purge(store: Store, policies: str | None, now: float) -> int:
    policy = load_compliance_policy(policies)
    events = []
    for chain, before in purge_plan(retention_chains(policy), now):
        n = await store.audit_purge(before, chain)
        print(f"{chain}: {n} events before {before:.0f} purged")
        if n:
            events.append(purge_event(chain, before, n, now))
    if events:
        await store.audit_append(events)
    return 0


async def run(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        configure_logs(from_args(LOG_OPTIONS, args))
    except OptionError as exc:
        fail(PROG, str(exc))
    try:
        key = None
        if args.audit_key_file or os.environ.get(ENV_KEY) or os.environ.get(ENV_KEY_FILE):
            key, _ = load_audit_key(args.audit_key_file)
        async with open_store(args.store, audit_key=key) as store:
            if args.command == "verify":
                return await _verify(store, args.anchors)
            return await _purge(store, args.policies, args.now if args.now is not None else time.time())
    except StoreError as exc:
        print(f"{PROG}: store {redact_url(args.store)}: {exc}", file=sys.stderr)
        return 2
    except PolicyConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
