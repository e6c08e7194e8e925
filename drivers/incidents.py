"""``python -m drivers.incidents list|show ID|resolve ID|lift ACTION_ID|list-pending|approve ID|reject ID
--store URL`` — operators' hands on security incidents, straight against the store (operate need
not be running).

- ``list [--all]``: open incidents (``--all``: every incident), oldest first.
- ``show ID``: the incident, its log and its actions, as JSON.
- ``resolve ID [--note TEXT]``: status ``resolved``, a log entry, and the ``resolved`` message
  written to the outbox for ``system/{cluster}/incidents`` (published now with ``--broker``,
  else by operate's supervisor when it republishes its outbox, at its next start, signed with its
  key). What is published under ``system/`` is signed (SDK clients with a trust ignore anything
  else), so ``--broker`` needs ``--signing-key FILE`` — the key operate signs with (its
  ``--signing-key``, env ``SFA_OPS_SIGNING_KEY``) — or, for a cluster whose operate runs without
  one, ``--unsigned``; without either it is refused (exit 2) before anything is changed.
- ``lift ACTION_ID``: sets the action's ``undo_at`` to now. The IncidentResponder polls the store
  and carries out the undo (Redis key deleted, EMQX ban removed, undo published) within
  ``store_poll_s``; if operate is down, at its next start.
- ``list-pending``: actions waiting for approval (no expiry, or raised by a single event).
- ``approve ID [--note TEXT]`` / ``reject ID [--note TEXT]``: decide a waiting action (ID is its
  action id, or an incident id for all of that incident's). The IncidentResponder carries an
  approved action out (a timed one runs its full duration from then) or records the rejection,
  within ``store_poll_s``; if operate is down, at its next start.

Exit status: 0 done, 1 not found / nothing to do, 2 bad arguments or store unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any, Literal

import orjson

from adapters.store import DEFAULT_URL, Store, StoreError, open_store, redact_url
from drivers.options import LOG_OPTIONS, OptionError, add_options, configure_logs, fail, from_args
from policies.response.guard import APPROVALS, decide
from protocol import topics
from protocol.base import rfc3339_from_epoch

PROG = "python -m drivers.incidents"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="resolve writes the resolved message to the outbox; operate publishes it, signed, at its next "
               "start. --broker publishes it now, signed with --signing-key (operate's key), or unsigned with "
               "--unsigned for a cluster whose operate signs nothing; --broker with neither is refused (exit 2).")
    p.add_argument("--store", default=os.environ.get("SFA_OPS_STORE", DEFAULT_URL), metavar="URL",
                   help="sqlite:///path or postgresql://user@host/db (env SFA_OPS_STORE)")
    p.add_argument("--cluster-id", default=os.environ.get("SFA_OPS_CLUSTER_ID", "local"))
    p.add_argument("--broker", default=None, metavar="URL",
                   help="publish the resolved message now (needs --signing-key, or --unsigned)")
    p.add_argument("--signing-key", default=os.environ.get("SFA_OPS_SIGNING_KEY"), metavar="FILE",
                   help="Ed25519 private key (PEM) operate signs system/{cluster}/ with (operate's --signing-key; "
                        "env SFA_OPS_SIGNING_KEY): the message published with --broker is signed with it")
    p.add_argument("--unsigned", action="store_true",
                   help="publish with --broker unsigned: only for a cluster whose operate signs nothing "
                        "(SDK clients with a trust ignore unsigned system messages)")
    add_options(p, LOG_OPTIONS)
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="open incidents")
    ls.add_argument("--all", action="store_true", help="every incident, resolved ones too")
    sub.add_parser("show", help="one incident with its actions").add_argument("id")
    rs = sub.add_parser("resolve", help="mark an incident resolved")
    rs.add_argument("id")
    rs.add_argument("--note", default="", help="why (kept in the incident's log)")
    sub.add_parser("lift", help="undo an active action now").add_argument("action_id")
    sub.add_parser("list-pending", help="actions waiting for approval")
    for verb in ("approve", "reject"):
        d = sub.add_parser(verb, help=f"{verb} a waiting action (action id, or incident id for all of its)")
        d.add_argument("id")
        d.add_argument("--note", default="", help="why (kept in the incident's log)")
        d.add_argument("--by", default=os.environ.get("USER", "operator"), help="who decides (default $USER)")
    return p


def _print(doc: Any) -> None:
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")


async def _list(store: Store, everything: bool) -> int:
    incs = (await store.incidents_query(since=0.0, until=time.time() + 86400, limit=100_000) if everything
            else await store.incidents_open())
    print(f"{'ID':<22} {'SEVERITY':<9} {'STATUS':<10} {'CREATED':<24} {'TITLE':<28} SOURCE")
    for i in incs:
        print(f"{i.id:<22} {i.severity:<9} {i.status:<10} {rfc3339_from_epoch(i.created_at):<24} {i.title:<28} {i.source}")
    return 0


async def _show(store: Store, inc_id: str) -> int:
    inc = await store.incident_get(inc_id)
    if inc is None:
        print(f"no incident {inc_id!r}", file=sys.stderr)
        return 1
    _print({"incident": asdict(inc), "actions": [asdict(a) for a in await store.actions_for_incident(inc_id)]})
    return 0


def _publisher(args: argparse.Namespace) -> str | None:
    """Why ``--broker`` cannot be used as given, or None (the key is loaded to check it)."""
    if not args.broker:
        return None
    if args.signing_key and args.unsigned:
        return "--signing-key and --unsigned exclude each other"
    if args.signing_key:
        from adapters.mqtt.signing import Signer, SigningKeyError

        try:
            Signer.from_file(args.signing_key)
        except SigningKeyError as exc:
            return f"--signing-key: {exc}"
        return None
    if args.unsigned:
        return None
    return (f"--broker publishes on system/{args.cluster_id}/incidents, which operate signs: give --signing-key FILE "
            "(the key operate signs with), or leave out --broker (operate publishes the message from its "
            "outbox, signed, at its next start); --unsigned only if operate signs nothing")


async def _resolve(store: Store, inc_id: str, note: str, cluster: str, broker: str | None,
                   signing_key: str | None = None) -> int:
    from actors.incident_records import incident_message

    inc = await store.incident_get(inc_id)
    if inc is None:
        print(f"no incident {inc_id!r}", file=sys.stderr)
        return 1
    if inc.status == "resolved":
        print(f"{inc_id} is already resolved")
        return 1
    now = time.time()
    data = dict(inc.data)
    data["log"] = [*data.get("log", []), {"ts": now, "action": "resolve", "result": "applied",
                                          "by": "drivers.incidents", "note": note}][-200:]
    inc = replace(inc, status="resolved", data=data)
    await store.incident_upsert(inc)
    topic = topics.system_incidents(cluster)
    msg = incident_message(inc, "resolved", cluster, now, "operator")
    msg_id = await store.outbox_add(topic, msg, qos=1, kind="incident")
    if broker:
        from adapters.mqtt.bus import MqttBus, MqttConfig

        config = replace(MqttConfig.from_url(broker), signing_key_file=signing_key)
        async with MqttBus(config=config) as bus:
            await bus.wait_connected(10)
            delivery = await bus.publish(topic, msg, qos=1)
            acked = await delivery.wait(10)
        if acked:
            await store.outbox_mark_published([msg_id])
        else:
            print(f"warning: the broker did not acknowledge the message ({delivery.outcome}); "
                  "it stays in the outbox for the next start", file=sys.stderr)
    print(f"{inc_id} resolved")
    return 0


async def _lift(store: Store, action_id: str) -> int:
    inc_id = action_id.split(":", 1)[0]
    found = [a for a in await store.actions_for_incident(inc_id) if a.id == action_id]
    if not found:
        print(f"no action {action_id!r}", file=sys.stderr)
        return 1
    action = found[0]
    if action.undone_at is not None or action.status not in ("applied",):
        print(f"{action_id} is not active (status {action.status})", file=sys.stderr)
        return 1
    await store.action_upsert(replace(action, undo_at=time.time()))
    print(f"{action_id} ({action.action} {action.target}) will be lifted by the incident responder")
    return 0


def _requested(doc: dict[str, Any]) -> float:
    try:
        return float(doc.get("requestedAt") or 0)
    except (TypeError, ValueError):
        return 0.0


async def _list_pending(store: Store) -> int:
    docs = await store.state_list(APPROVALS)
    print(f"{'ACTION ID':<40} {'ACTION':<18} {'TARGET':<24} {'REQUESTED':<24} {'DECISION':<9} REASON")
    for aid, doc in sorted(docs.items(), key=lambda kv: _requested(kv[1])):
        a = doc.get("action") or {}
        decision = (doc.get("decision") or {}).get("verdict", "-")
        print(f"{aid:<40} {a.get('action', '?'):<18} {a.get('target', '?')!s:<24} "
              f"{rfc3339_from_epoch(_requested(doc)):<24} {decision:<9} {doc.get('reason', '')}")
    return 0


async def _decide(store: Store, ident: str, verdict: Literal["approved", "rejected"], by: str, note: str) -> int:
    docs = await store.state_list(APPROVALS)
    chosen = [ident] if ident in docs else [aid for aid, d in docs.items()
                                            if (d.get("action") or {}).get("incidentId") == ident]
    if not chosen:
        print(f"no action waiting for approval under {ident!r} (see list-pending)", file=sys.stderr)
        return 1
    done = 0
    for aid in chosen:
        try:
            await store.state_put(APPROVALS, aid, decide(docs[aid], verdict, by=by, now=time.time(), note=note))
        except ValueError as exc:
            print(f"{aid}: {exc}", file=sys.stderr)
            continue
        done += 1
        a = docs[aid].get("action") or {}
        print(f"{aid} ({a.get('action')} {a.get('target')}) {verdict}; the incident responder will "
              f"{'carry it out' if verdict == 'approved' else 'record it'}")
    return 0 if done else 1


async def run(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        configure_logs(from_args(LOG_OPTIONS, args))
    except OptionError as exc:
        fail(PROG, str(exc))
    refused = _publisher(args)
    if refused is not None:
        print(f"{PROG}: {refused}", file=sys.stderr)
        return 2
    try:
        store = open_store(args.store)
        async with store:
            if args.command == "list":
                return await _list(store, args.all)
            if args.command == "show":
                return await _show(store, args.id)
            if args.command == "resolve":
                return await _resolve(store, args.id, args.note, args.cluster_id, args.broker, args.signing_key)
            if args.command == "list-pending":
                return await _list_pending(store)
            if args.command in ("approve", "reject"):
                verdict: Literal["approved", "rejected"] = "approved" if args.command == "approve" else "rejected"
                return await _decide(store, args.id, verdict, args.by, args.note)
            return await _lift(store, args.action_id)
    except StoreError as exc:
        print(f"{PROG}: store {redact_url(args.store)}: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
