"""``python -m drivers.generate`` — write a realistic, seeded platform history into a store.

What it writes (model in ``drivers/history_model.py``): audit events (calls, data accesses,
authentication and authorization events, data-subject requests) from power-law users with
diurnal and weekly patterns; per-service, per-minute metric rollups for the last days; security
incidents; infrastructure findings (outbox ``tier3`` messages, marked published); and per-service
instances/utilisation (state namespace ``service_resources``). Planted anomalies all fall in the
last 24 hours; the summary names them.

The same ``--seed`` and ``--end`` give the same history. Audit events go through
``Store.audit_append`` in large batches: COPY on PostgreSQL, batched inserts on SQLite.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from adapters.store import IncidentRecord, MetricRollup, Store, StoreError, open_store
from adapters.store.analysis import audit_bounds
from drivers import history_model as hm
from drivers.analysis_cli import iso, parse_time, print_summary
from drivers.options import Option, OptionError, fail, positive_int, resolve
from drivers.progress import Progress
from policies.analysis.baselines import HOUR

PROG = "python -m drivers.generate"
DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else ""


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


OPTIONS = [
    Option("store", "store to write to: sqlite:///path.db or postgresql://user@host/db",
           default="sqlite:///var/sfa-ops.db", metavar="URL"),
    Option("events", "audit events to write in all", default=100_000, convert=positive_int, metavar="N"),
    Option("days", "days of history ending at --end", default=30, convert=positive_int, metavar="D"),
    Option("users", f"distinct users (at least {hm.MIN_USERS})", default=1000, convert=positive_int, metavar="U"),
    Option("services", f"distinct services (at least {hm.MIN_SERVICES})", default=12, convert=positive_int,
           metavar="S"),
    Option("seed", "random seed: the same seed and --end give the same history", default=1, convert=int,
           metavar="K"),
    Option("end", "end of the history (a date or time, UTC; rounded down to the hour); default: today 00:00 UTC",
           metavar="DATE"),
    Option("rollup-days", "days (ending at --end) that get per-minute metric rollups", default=7,
           convert=positive_int, metavar="D"),
    Option("batch", "audit events per store transaction", default=20_000, convert=positive_int, metavar="N"),
    Option("ray-address", "accepted for symmetry with the other drivers; generation is one sequential "
           "writer (the audit log is a hash chain)", metavar="ADDR"),
]


def model_from(opts: dict[str, Any]) -> hm.HistoryModel:
    """The history model for resolved options; OptionError names the bad option."""
    try:
        end = parse_time(opts["end"] or _today())
    except ValueError as exc:
        raise OptionError(f"--end {opts['end']!r}: {exc}") from exc
    end = math.floor(end / HOUR) * HOUR
    try:
        return hm.HistoryModel(events=opts["events"], days=opts["days"], users=opts["users"],
                               services=opts["services"], seed=opts["seed"], end=end,
                               rollup_days=min(opts["rollup_days"], opts["days"]))
    except ValueError as exc:
        raise OptionError(f"--users/--services: {exc}") from exc


def incidents(m: hm.HistoryModel) -> list[IncidentRecord]:
    """Security incidents: the planted ones plus a few routine ones spread over the history."""
    p = m.planted
    out = [
        IncidentRecord(id=f"inc-{m.seed}-bf", type="brute_force_attempt", severity="critical",
                       title=f"Brute force from {p['brute_force_ip']}", source="security_analyst",
                       status="resolved", automated_response=True, created_at=m.end - 16 * HOUR + 60,
                       data={"ipAddress": p["brute_force_ip"], "failures": 25, "actions": ["block_ip"]}),
        IncidentRecord(id=f"inc-{m.seed}-exfil", type="data_exfiltration_suspected", severity="critical",
                       title=f"Suspected exfiltration by {p['exfiltration_user']}", source="security_analyst",
                       status="open", automated_response=True, created_at=m.end - 6 * HOUR + 900,
                       data={"userId": p["exfiltration_user"], "records": 24000, "actions": ["suspend_user"]}),
        IncidentRecord(id=f"inc-{m.seed}-breach", type="data_breach", severity="critical",
                       title="Misconfigured export bucket exposed order records", source="manual",
                       status="resolved", created_at=m.start + 0.4 * (m.end - m.start),
                       data={"affectedRecords": 120, "affectedSubjects": 37, "reportedToAuthority": True,
                             "hoursToReport": 30, "collections": ["orders"]}),
    ]
    kinds = ("privilege_escalation", "unusual_api_volume", "credential_stuffing", "unusual_service_access")
    for i in range(max(3, m.days // 3)):
        at = m.start + (i + 0.5) * (m.end - m.start - 2 * 86400) / max(3, m.days // 3)
        out.append(IncidentRecord(id=f"inc-{m.seed}-{i:03d}", type=kinds[i % len(kinds)],
                                  severity=("warning", "error", "critical")[i % 3],
                                  title=f"Routine {kinds[i % len(kinds)].replace('_', ' ')}",
                                  source="security_analyst", status="resolved", created_at=at,
                                  automated_response=i % 2 == 0, data={}))
    return out


def infra_findings(m: hm.HistoryModel) -> list[tuple[float, dict[str, Any]]]:
    """Infrastructure findings (``infrastructure_error`` messages) the checkers would have written."""
    pg = {"type": "infrastructure_error", "component": "postgresql_cluster", "severity": "warning",
          "message": "PostgreSQL primary near its connection limit; replica lagging",
          "details": {"reachableTargets": 1, "totalTargets": 1, "targets": {"primary": {
              "reachable": True, "role": "primary", "connections": 92, "maxConnections": 100,
              "replicas": [{"applicationName": "replica-1", "replayLagSeconds": 14.5}]}},
              "problems": [{"code": "connections_high", "severity": "warning", "message": "92 of 100 connections"},
                           {"code": "replication_lag", "severity": "warning", "message": "replica-1 lags 14.5s"}]}}
    redis = {"type": "infrastructure_error", "component": "redis", "severity": "warning",
             "message": "Redis memory at 93% of maxmemory",
             "details": {"usedMemoryPercent": 93.0, "connectedClients": 40,
                         "problems": [{"code": "memory_high", "severity": "warning", "message": "93% of maxmemory"}]}}
    broker = {"type": "infrastructure_error", "component": "mqtt_broker", "severity": "error",
              "message": "Listener without TLS accepts anonymous clients",
              "details": {"problems": [{"code": "anonymous_listener", "severity": "error",
                                        "message": "port 1883 allows anonymous, unencrypted connections"}]}}
    return [(m.end - 5 * HOUR, pg), (m.end - 12 * HOUR, redis), (m.end - 18 * HOUR, broker)]


async def generate(m: hm.HistoryModel, url: str, *, batch: int, quiet: bool = False) -> dict[str, Any]:
    """Write the history ``m`` into the store at ``url``; returns counts for the summary."""
    clock = [time.time()]
    try:
        store = open_store(url, clock=lambda: clock[0])
    except StoreError as exc:
        raise OptionError(f"--store: {exc}") from exc
    try:
        await store.open()
    except StoreError as exc:
        raise OptionError(f"--store: cannot open the store ({exc})") from exc
    try:
        return await _write(store, m, batch=batch, clock=clock, quiet=quiet)
    finally:
        await store.close()


async def _write(store: Store, m: hm.HistoryModel, *, batch: int, clock: list[float],
                 quiet: bool) -> dict[str, Any]:
    before = await audit_bounds(store)
    pop = hm.Population(m)
    extra: dict[int, list[dict[str, Any]]] = defaultdict(list)
    special = hm.planted_events(m, pop) + hm.subject_requests(m)
    for e in special:
        extra[int(e["ts"] // HOUR)].append(e)
    counts = hm.hour_counts(m, len(special))
    first = int(m.start // HOUR)
    rollup_from = int((m.end - m.rollup_days * 86400) // HOUR)
    written = rollups = 0
    by_kind: dict[str, int] = defaultdict(int)
    pending: list[dict[str, Any]] = []
    pending_rollups: list[MetricRollup] = []
    started = time.monotonic()
    with Progress(total=m.events, label="events", enabled=not quiet) as bar:
        for i in range(m.hours):
            hour = first + i
            events = hm.hour_events(m, pop, hour, int(counts[i]))
            if hour in extra:
                events = sorted(events + extra[hour], key=lambda e: e["ts"])
            pending += events
            if len(pending) >= batch or i == m.hours - 1:
                await store.audit_append(pending)
                for e in pending:
                    by_kind[e["kind"]] += 1
                written += len(pending)
                bar.advance(len(pending))
                pending = []
            if hour >= rollup_from:
                pending_rollups += hm.hour_rollups(m, pop, hour)
            if len(pending_rollups) >= batch or (i == m.hours - 1 and pending_rollups):
                await store.metrics_upsert(pending_rollups)
                rollups += len(pending_rollups)
                pending_rollups = []
    load_s = time.monotonic() - started
    for inc in incidents(m):
        clock[0] = inc.created_at
        await store.incident_upsert(inc)
    ids = []
    for at, payload in infra_findings(m):
        clock[0] = at
        payload = {**payload, "timestamp": iso(at), "clusterId": "local"}
        ids.append(await store.outbox_add("system/local/errors", payload, kind="tier3"))
    await store.outbox_mark_published(ids)  # history, not news: the daemon must not republish it
    for name, doc in hm.service_resources(m).items():
        await store.state_put("service_resources", name, doc)
    await store.state_put("generator", "planted", {**m.planted, "end": m.end, "seed": m.seed})
    return {"events": written, "by_kind": dict(by_kind), "rollups": rollups, "load_s": load_s,
            "existing_before": before[2] if before else 0}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad options or an unusable store)."""
    try:
        opts = resolve(OPTIONS, argv, prog=PROG, description=DESCRIPTION)
        m = model_from(opts)
        result = asyncio.run(generate(m, opts["store"], batch=opts["batch"]))
    except OptionError as exc:
        fail(PROG, str(exc))
    except StoreError as exc:
        fail(PROG, f"the store failed while writing: {exc}")
    rate = result["events"] / result["load_s"] if result["load_s"] else 0.0
    print_summary("generated history", [
        ("store", opts["store"].split("@")[-1]),
        ("window", f"{iso(m.start)} .. {iso(m.end)} ({m.days} days)"),
        ("audit events", f"{result['events']:,} in {result['load_s']:.1f}s ({rate:,.0f}/s)"),
        ("by kind", ", ".join(f"{k}={v:,}" for k, v in sorted(result["by_kind"].items()))),
        ("metric rollups", f"{result['rollups']:,} (last {m.rollup_days} days)"),
        ("already in store", f"{result['existing_before']:,} events before this run"),
        ("planted", ", ".join(f"{k}={v}" for k, v in m.planted.items())),
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
