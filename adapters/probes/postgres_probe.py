"""The ``postgresql_cluster`` probe (asyncpg): per target, connectivity and ``SELECT 1`` latency,
``pg_stat_replication`` (state and lags), connections vs ``max_connections``, long transactions.

Several targets (a primary and its replicas, or several clusters) give one merged result with
per-target details under ``targets``. A target is named by ``host:port/db`` — never by its DSN,
which may hold a password.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from adapters.probes import ProbeResult, ProbeSet, ProbeSetup, Problem, run_check
from policies.infrastructure.thresholds import PostgresThresholds

COMPONENT = "postgresql_cluster"

_REPLICATION_SQL = """
SELECT application_name, client_addr::text AS client_addr, state,
       EXTRACT(EPOCH FROM write_lag)::float8 AS write_lag,
       EXTRACT(EPOCH FROM flush_lag)::float8 AS flush_lag,
       EXTRACT(EPOCH FROM replay_lag)::float8 AS replay_lag
FROM pg_stat_replication ORDER BY application_name"""
_ACTIVITY_SQL = """
SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS connections,
       current_setting('max_connections')::int AS max_connections,
       (SELECT count(*) FROM pg_stat_activity
         WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()
           AND now() - xact_start > make_interval(secs => $1)) AS long_transactions,
       (SELECT COALESCE(max(EXTRACT(EPOCH FROM now() - xact_start)), 0)::float8 FROM pg_stat_activity
         WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()) AS oldest_transaction_s,
       pg_is_in_recovery() AS in_recovery"""


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresTarget:
    """One server to check; ``expected_replicas`` streaming replicas are expected on a primary."""

    dsn: str = field(repr=False)  # may carry a password
    name: str | None = None
    expected_replicas: int = 0

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        parts = urlsplit(self.dsn)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"


def judge_target(
    label: str, replicas: Sequence[Mapping[str, Any]], activity: Mapping[str, Any],
    *, expected_replicas: int, thresholds: PostgresThresholds,
) -> list[Problem]:
    """Pure: one target's replication and activity rows → problems (seed: unhealthy when a replica
    is not streaming or its replay lag reaches 30 s)."""
    problems: list[Problem] = []
    streaming = 0
    for r in replicas:
        name = r.get("applicationName") or r.get("clientAddr") or "replica"
        if r.get("state") != "streaming":
            problems.append(Problem(code="replica_not_streaming", severity="error",
                                    message=f"PostgreSQL replica {name} of {label} is {r.get('state')}"))
            continue
        streaming += 1
        lag = r.get("replayLagSeconds")
        if lag is not None and lag >= thresholds.replication_lag:
            problems.append(Problem(code="replication_lag", severity="error",
                                    message=f"PostgreSQL replica {name} of {label} replays {lag:.1f}s behind"))
    if not activity.get("inRecovery") and streaming < expected_replicas:
        problems.append(Problem(code="replicas_missing", severity="error",
                                message=f"PostgreSQL {label} has {streaming} of {expected_replicas} "
                                        f"expected replicas streaming"))
    used, cap = int(activity.get("connections", 0)), int(activity.get("maxConnections", 0))
    if cap and 100.0 * used / cap >= thresholds.connections:
        problems.append(Problem(code="connections_high", severity="warning",
                                message=f"PostgreSQL {label} uses {used} of {cap} connections"))
    long_tx = int(activity.get("longTransactions", 0))
    if long_tx:
        problems.append(Problem(code="long_transactions", severity="warning",
                                message=f"PostgreSQL {label} has {long_tx} transaction(s) open longer than "
                                        f"{thresholds.long_transaction:g}s"))
    return problems


class PostgresProbe:
    """``postgresql_cluster`` over one or more targets, each checked on a fresh connection (so a
    check proves that new connections work), all targets concurrently."""

    component = COMPONENT

    def __init__(self, *, targets: Sequence[PostgresTarget], timeout_s: float, thresholds: PostgresThresholds) -> None:
        if not targets:
            raise ValueError("PostgresProbe needs at least one target")
        self.targets = tuple(targets)
        self.timeout_s = timeout_s
        self.thresholds = thresholds

    @classmethod
    def from_dsns(cls, dsns: Sequence[str], *, timeout_s: float, thresholds: PostgresThresholds,
                  expected_replicas: int = 0) -> PostgresProbe:
        return cls(targets=[PostgresTarget(dsn=d, expected_replicas=expected_replicas) for d in dsns],
                   timeout_s=timeout_s, thresholds=thresholds)

    async def check(self) -> ProbeResult:
        return await run_check(COMPONENT, self.timeout_s, self._body)

    async def _body(self) -> tuple[dict[str, Any], list[Problem]]:
        outcomes = await asyncio.gather(*(self._check_target(t) for t in self.targets), return_exceptions=True)
        targets: dict[str, Any] = {}
        problems: list[Problem] = []
        reachable = 0
        for target, out in zip(self.targets, outcomes, strict=True):
            if isinstance(out, BaseException):
                if not isinstance(out, Exception):
                    raise out
                msg = f"PostgreSQL {target.label} unreachable: {type(out).__name__}: {out}"
                targets[target.label] = {"reachable": False, "error": msg}
                problems.append(Problem(code="target_unreachable", severity="error", message=msg))
                continue
            reachable += 1
            targets[target.label] = out[0]
            problems.extend(out[1])
        if not reachable:  # every target down: the component is down
            raise ConnectionError("; ".join(str(t["error"]) for t in targets.values()))
        return {"reachableTargets": reachable, "totalTargets": len(self.targets), "targets": targets}, problems

    async def _check_target(self, target: PostgresTarget) -> tuple[dict[str, Any], list[Problem]]:
        started = time.perf_counter()
        conn = await asyncpg.connect(target.dsn, timeout=self.timeout_s)
        try:
            connect_ms = (time.perf_counter() - started) * 1000.0
            started = time.perf_counter()
            await conn.fetchval("SELECT 1")
            query_ms = (time.perf_counter() - started) * 1000.0
            rows = await conn.fetch(_REPLICATION_SQL)
            act = await conn.fetchrow(_ACTIVITY_SQL, self.thresholds.long_transaction)
        finally:
            await conn.close(timeout=self.timeout_s)
        replicas = [{"applicationName": r["application_name"], "clientAddr": r["client_addr"],
                     "state": r["state"], "writeLagSeconds": r["write_lag"], "flushLagSeconds": r["flush_lag"],
                     "replayLagSeconds": r["replay_lag"]} for r in rows]
        assert act is not None  # the activity query always returns one row
        activity = {"connections": act["connections"], "maxConnections": act["max_connections"],
                    "longTransactions": act["long_transactions"],
                    "oldestTransactionSeconds": round(act["oldest_transaction_s"], 3),
                    "inRecovery": act["in_recovery"]}
        details = {"reachable": True, "role": "replica" if act["in_recovery"] else "primary",
                   "connectMs": round(connect_ms, 3), "queryLatencyMs": round(query_ms, 3),
                   "replicas": replicas, "expectedReplicas": target.expected_replicas, **activity}
        problems = judge_target(target.label, replicas, activity, expected_replicas=target.expected_replicas,
                                thresholds=self.thresholds)
        return details, problems

    async def close(self) -> None:
        return None


async def build(setup: ProbeSetup) -> ProbeSet:
    """``postgresql_cluster``: every DSN of ``--check-postgres`` in one probe."""
    s = setup.settings
    probe = PostgresProbe.from_dsns(s.check_postgres, timeout_s=setup.timeout, thresholds=setup.thresholds,
                                    expected_replicas=s.expect_replicas)
    return ProbeSet(probes={"postgresql": probe}, hosts=[t.label.split(":")[0] for t in probe.targets])
