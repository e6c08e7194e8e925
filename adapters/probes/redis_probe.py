"""The ``redis`` probe (redis.asyncio): PING latency and ``INFO`` — replication, memory,
persistence, blocked clients — judged against :class:`~policies.infrastructure.checks.RedisThresholds`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from adapters.probes import Probe, ProbeResult, ProbeSet, ProbeSetup, Problem, run_check
from policies.infrastructure.thresholds import RedisThresholds

COMPONENT = "redis"


def summarize_info(
    info: Mapping[str, Any], *, ping_ms: float, thresholds: RedisThresholds,
    previous_evicted: int | None, expected_replicas: int = 0,
) -> tuple[dict[str, Any], list[Problem]]:
    """Pure: ``INFO`` fields → seed-shaped details and problems."""
    problems: list[Problem] = []
    role = str(info.get("role", "unknown"))
    used, maxmem = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    pct = round(100.0 * used / maxmem, 2) if maxmem else None
    evicted = int(info.get("evicted_keys", 0))
    evicted_delta = None if previous_evicted is None else max(0, evicted - previous_evicted)
    slaves = int(info.get("connected_slaves", 0))
    link = info.get("master_link_status")
    blocked = int(info.get("blocked_clients", 0))
    rdb, aof = info.get("rdb_last_bgsave_status", "ok"), info.get("aof_last_write_status", "ok")

    if pct is not None and pct >= thresholds.memory:
        problems.append(Problem(code="memory_pressure", severity="warning",
                                message=f"Redis uses {pct:.1f}% of maxmemory ({used} of {maxmem} bytes)"))
    if evicted_delta:
        problems.append(Problem(code="evictions", severity="warning",
                                message=f"Redis evicted {evicted_delta} keys since the last check"))
    if role == "slave" and link != "up":
        problems.append(Problem(code="master_link_down", severity="error",
                                message=f"Redis replica's link to its master is {link}"))
    if role == "master" and slaves < expected_replicas:
        problems.append(Problem(code="replicas_missing", severity="error",
                                message=f"Redis master has {slaves} of {expected_replicas} expected replicas"))
    for what, status in (("RDB save", rdb), ("AOF write", aof)):
        if status != "ok":
            problems.append(Problem(code="persistence_failed", severity="error",
                                    message=f"Redis last {what} status is {status}"))
    if blocked >= thresholds.blocked_clients:
        problems.append(Problem(code="blocked_clients", severity="warning",
                                message=f"{blocked} Redis clients are blocked"))
    details = {
        "pingMs": round(ping_ms, 3), "version": info.get("redis_version"), "role": role,
        "connectedSlaves": slaves, "masterLinkStatus": link,
        "usedMemory": used, "maxMemory": maxmem, "memoryUsagePercent": pct,
        "maxMemoryPolicy": info.get("maxmemory_policy"),
        "evictedKeys": evicted, "evictedSinceLastCheck": evicted_delta,
        "rdbLastBgsaveStatus": rdb, "aofLastWriteStatus": aof, "aofEnabled": bool(info.get("aof_enabled", 0)),
        "connectedClients": info.get("connected_clients"), "blockedClients": blocked,
        "uptimeSeconds": info.get("uptime_in_seconds"),
    }
    return details, problems


class RedisProbe:
    """``redis``: one PING and one INFO per check over a kept connection (reconnected as needed,
    no client-side retries: a failure must show up as a failed check, not be retried away)."""

    component = COMPONENT

    def __init__(self, *, url: str, timeout_s: float, thresholds: RedisThresholds, expected_replicas: int = 0) -> None:
        self.timeout_s = timeout_s
        self.thresholds = thresholds
        self.expected_replicas = expected_replicas
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0), retry_on_error=[], health_check_interval=0)
        self._last_evicted: int | None = None

    async def check(self) -> ProbeResult:
        return await run_check(COMPONENT, self.timeout_s, self._body)

    async def _body(self) -> tuple[dict[str, Any], list[Problem]]:
        started = time.perf_counter()
        await self._client.ping()
        ping_ms = (time.perf_counter() - started) * 1000.0
        info = await self._client.info()
        details, problems = summarize_info(info, ping_ms=ping_ms, thresholds=self.thresholds,
                                           previous_evicted=self._last_evicted,
                                           expected_replicas=self.expected_replicas)
        self._last_evicted = details["evictedKeys"]
        return details, problems

    async def close(self) -> None:
        await self._client.aclose()


def _host_label(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


async def build(setup: ProbeSetup) -> ProbeSet:
    """``redis``: one probe per URL of ``--check-redis``, merged."""
    s = setup.settings
    probes: dict[str, Probe] = {
        _host_label(url): RedisProbe(url=url, timeout_s=setup.timeout, thresholds=setup.thresholds,
                                     expected_replicas=s.expect_replicas) for url in s.check_redis}
    return ProbeSet(probes=probes, hosts=[urlsplit(url).hostname or "localhost" for url in s.check_redis])
