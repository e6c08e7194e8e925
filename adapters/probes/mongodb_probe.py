"""The ``mongodb_cluster`` probe (pymongo's asyncio client): per target, ``hello`` (latency, role),
``replSetGetStatus`` (primary present, member health and state, replication lag from the members'
optimes) and ``serverStatus`` (connections in use against those available: the server's pool).

Several targets (members checked one by one with ``directConnection=true``, or several replica
sets) give one merged result with per-target details under ``targets``. A target is named by its
host list — never by its URI, which may hold a password.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pymongo import AsyncMongoClient, ReadPreference
from pymongo.errors import OperationFailure

from adapters.probes import ProbeConfigError, ProbeResult, ProbeSet, ProbeSetup, Problem, run_check
from policies.infrastructure.thresholds import MongoThresholds

COMPONENT = "mongodb_cluster"
PRIMARY, SECONDARY, ARBITER = 1, 2, 7  # replSetGetStatus member ``state`` codes
HEALTHY_STATES = {PRIMARY, SECONDARY, ARBITER}
_NO_REPLICATION = {76}  # NoReplicationEnabled: a standalone server
_NOT_INITIALIZED = {94}  # NotYetInitialized: replSetInitiate has not run
_AUTH_ERRORS = {13, 18}  # Unauthorized, AuthenticationFailed
MAX_NAME = 255
TARGET_SHARE = 0.8  # of the check's timeout each target gets: one dead member must not time out the check


def target_label(uri: str) -> str:
    """``host:port[,host:port...]`` of a ``mongodb://`` / ``mongodb+srv://`` URI (no credentials)."""
    netloc = urlsplit(uri).netloc.rpartition("@")[2]
    return netloc[:MAX_NAME] or "localhost:27017"


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _str(value: Any, default: str = "") -> str:
    return str(value)[:MAX_NAME] if isinstance(value, str) else default


def judge_replica_set(
    label: str, status: Mapping[str, Any], *, expected_replicas: int, thresholds: MongoThresholds,
) -> tuple[dict[str, Any], list[Problem]]:
    """Pure: a ``replSetGetStatus`` document → details and problems. Lag is measured, as
    ``rs.printSecondaryReplicationInfo()`` does, from each healthy secondary's ``optimeDate`` to the
    primary's (to the freshest healthy member's while there is no primary)."""
    problems: list[Problem] = []
    raw = status.get("members")
    members = [m for m in raw if isinstance(m, Mapping)] if isinstance(raw, list) else []
    ignored = max(0, len(members) - thresholds.max_members)
    members = members[: thresholds.max_members]
    set_name = _str(status.get("set"), "?")
    healthy = [m for m in members if _int(m.get("health")) == 1 and _int(m.get("state")) in HEALTHY_STATES]
    primary = next((m for m in healthy if _int(m.get("state")) == PRIMARY), None)
    optimes = [m["optimeDate"] for m in healthy if isinstance(m.get("optimeDate"), datetime)]
    reference = primary.get("optimeDate") if primary is not None else max(optimes, default=None)
    if not isinstance(reference, datetime):
        reference = None
    if primary is None:
        problems.append(Problem(code="no_primary", severity="critical",
                                message=f"MongoDB replica set {set_name} ({label}) has no primary"))
    rows: list[dict[str, Any]] = []
    secondaries, max_lag = 0, None
    for m in members:
        name, state = _str(m.get("name"), "member"), _str(m.get("stateStr"), "UNKNOWN")
        health, code = _int(m.get("health")), _int(m.get("state"))
        lag = None
        if health != 1 or code not in HEALTHY_STATES:
            problems.append(Problem(code="member_unhealthy", severity="error",
                                    message=f"MongoDB member {name} of {set_name} is {state} (health {health})"))
        elif code == SECONDARY:
            secondaries += 1
            optime = m.get("optimeDate")
            if reference is not None and isinstance(optime, datetime):
                lag = round(max(0.0, (reference - optime).total_seconds()), 3)
                max_lag = lag if max_lag is None else max(max_lag, lag)
                if lag >= thresholds.replication_lag:
                    problems.append(Problem(code="replication_lag", severity="error",
                                            message=f"MongoDB secondary {name} of {set_name} is {lag:.1f}s "
                                                    f"behind the {'primary' if primary else 'freshest member'}"))
        rows.append({"name": name, "state": code, "stateStr": state, "health": health, "lagSeconds": lag})
    if secondaries < expected_replicas:
        problems.append(Problem(code="replicas_missing", severity="error",
                                message=f"MongoDB replica set {set_name} has {secondaries} of {expected_replicas} "
                                        f"expected secondaries healthy"))
    details = {"setName": set_name, "primary": None if primary is None else _str(primary.get("name")),
               "healthyMembers": len(healthy), "totalMembers": len(members) + ignored,
               "healthySecondaries": secondaries, "maxLagSeconds": max_lag, "members": rows,
               **({"membersIgnored": ignored} if ignored else {})}
    return details, problems


def judge_connections(
    label: str, server_status: Mapping[str, Any], *, thresholds: MongoThresholds,
) -> tuple[dict[str, Any], list[Problem]]:
    """Pure: ``serverStatus.connections`` → details and a problem when ``current`` reaches the
    threshold share of ``current + available`` (the server's incoming connection pool)."""
    conns = server_status.get("connections")
    conns = conns if isinstance(conns, Mapping) else {}
    current, available = _int(conns.get("current")), _int(conns.get("available"))
    cap = current + available
    pct = round(100.0 * current / cap, 2) if cap else None
    details = {"connections": {"current": current, "available": available,
                               "active": _int(conns.get("active")), "totalCreated": _int(conns.get("totalCreated"))},
               "connectionsUsagePercent": pct, "version": _str(server_status.get("version")) or None}
    problems: list[Problem] = []
    if pct is not None and pct >= thresholds.connections:
        problems.append(Problem(code="connection_pool_high", severity="warning",
                                message=f"MongoDB {label} uses {current} of {cap} incoming connections ({pct:.0f}%)"))
    return details, problems


class MongoProbe:
    """``mongodb_cluster`` over one or more URIs, each with its own kept client (no retried reads:
    a failure must show up as a failed check), all targets concurrently."""

    component = COMPONENT

    def __init__(self, *, uris: Sequence[str], timeout_s: float, thresholds: MongoThresholds,
                 expected_replicas: int = 0) -> None:
        if not uris:
            raise ValueError("MongoProbe needs at least one URI")
        self.labels = tuple(target_label(u) for u in uris)
        self.timeout_s = timeout_s
        self.thresholds = thresholds
        self.expected_replicas = expected_replicas
        self.target_timeout_s = timeout_s * TARGET_SHARE
        ms = max(1, int(self.target_timeout_s * 1000))
        self._clients: tuple[AsyncMongoClient[dict[str, Any]], ...] = tuple(
            AsyncMongoClient(u, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms,
                             retryReads=False, retryWrites=False, appname="sfa-ops-check", maxPoolSize=2)
            for u in uris)

    @property
    def hosts(self) -> list[str]:
        return [label.split(",")[0].rsplit(":", 1)[0] for label in self.labels]

    async def check(self) -> ProbeResult:
        return await run_check(COMPONENT, self.timeout_s, self._body)

    async def _body(self) -> tuple[dict[str, Any], list[Problem]]:
        outcomes = await asyncio.gather(*(self._check_target(label, client)
                                          for label, client in zip(self.labels, self._clients, strict=True)),
                                        return_exceptions=True)
        targets: dict[str, Any] = {}
        problems: list[Problem] = []
        reachable = 0
        for label, out in zip(self.labels, outcomes, strict=True):
            if isinstance(out, BaseException):
                if isinstance(out, ProbeConfigError) or not isinstance(out, Exception):
                    raise out
                msg = f"MongoDB {label} unreachable: {type(out).__name__}: {str(out)[:300]}"
                targets[label] = {"reachable": False, "error": msg}
                problems.append(Problem(code="target_unreachable", severity="error", message=msg))
                continue
            reachable += 1
            targets[label] = out[0]
            problems.extend(out[1])
        if not reachable:  # every target down: the component is down
            raise ConnectionError("; ".join(str(t["error"]) for t in targets.values()))
        return {"reachableTargets": reachable, "totalTargets": len(self.labels),
                "expectedReplicas": self.expected_replicas, "targets": targets}, problems

    async def _check_target(
        self, label: str, client: AsyncMongoClient[dict[str, Any]],
    ) -> tuple[dict[str, Any], list[Problem]]:
        try:
            async with asyncio.timeout(self.target_timeout_s):
                return await self._query_target(label, client)
        except TimeoutError:
            raise TimeoutError(f"no answer within {self.target_timeout_s:g}s") from None

    async def _query_target(
        self, label: str, client: AsyncMongoClient[dict[str, Any]],
    ) -> tuple[dict[str, Any], list[Problem]]:
        admin = client.get_database("admin", read_preference=ReadPreference.PRIMARY_PREFERRED)
        try:
            started = time.perf_counter()
            hello = await admin.command("hello")
            hello_ms = (time.perf_counter() - started) * 1000.0
            server_status = await admin.command("serverStatus")
            try:
                status: Mapping[str, Any] | None = await admin.command("replSetGetStatus")
            except OperationFailure as exc:
                if exc.code not in _NO_REPLICATION | _NOT_INITIALIZED:
                    raise
                status = None
        except OperationFailure as exc:
            if exc.code in _AUTH_ERRORS:
                raise ProbeConfigError(f"MongoDB {label}: not authorized ({exc.code}); the check needs the "
                                       f"clusterMonitor role") from exc
            raise
        role = ("primary" if hello.get("isWritablePrimary") else "secondary" if hello.get("secondary")
                else "arbiter" if hello.get("arbiterOnly") else "other")
        details: dict[str, Any] = {"reachable": True, "helloMs": round(hello_ms, 3), "role": role,
                                   "me": _str(hello.get("me")) or None}
        conn_details, problems = judge_connections(label, server_status, thresholds=self.thresholds)
        details.update(conn_details)
        if status is None:
            details["replicaSet"] = None
            if self.expected_replicas:
                problems.append(Problem(code="replicas_missing", severity="error",
                                        message=f"MongoDB {label} is not a replica set member; "
                                                f"{self.expected_replicas} secondaries expected"))
        else:
            rs_details, rs_problems = judge_replica_set(label, status, expected_replicas=self.expected_replicas,
                                                        thresholds=self.thresholds)
            details["replicaSet"] = rs_details
            problems.extend(rs_problems)
        return details, problems

    async def close(self) -> None:
        await asyncio.gather(*(client.close() for client in self._clients), return_exceptions=True)


async def build(setup: ProbeSetup) -> ProbeSet:
    """``mongodb_cluster``: every URI of ``--check-mongodb`` in one probe."""
    s = setup.settings
    mongo = MongoProbe(uris=s.check_mongodb, timeout_s=setup.timeout, thresholds=setup.thresholds,
                       expected_replicas=s.expect_replicas)
    return ProbeSet(probes={"mongodb": mongo}, hosts=mongo.hosts)
