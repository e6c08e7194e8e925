"""Infrastructure faults under steady traffic with operate running: what is lost, what comes back.

``python -m benchmarks.chaos.infra --trials N [--seed S] [--json PATH]``

Per fault, ``trials`` times, with a healthy service called every 50 ms and a second service that is
crashed (kill -9, pending calls) as the scripted service fault:

- broker restart: operate's private mosquitto (``persistence true``) gets SIGTERM and starts again on
  the same port; then the service fault is injected. Lost: the fault's ``service_unavailable`` not
  published or a pending call not answered. Restored: the healthy service's breaker closed and the
  observer counting calls and responses again. Recovery: broker back -> 10 calls in a row answered
  without the observer fast-failing one. ``healthy breakers opened`` counts the false outages.
- PostgreSQL stop 30 s (operate's store): the service crashes and comes back during the outage. Lost:
  a finding published during the outage missing from the store's outbox 60 s after it is back.
  Duplicates: findings published or stored twice. Recovery: PostgreSQL back -> all findings stored.
- node removal (3-node simulated cluster) is measured by ``benchmarks.chaos.nodes``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import ray

from adapters.store import open_store
from adapters.store.base import StoreError
from benchmarks.common import median
from drivers.tables import print_table
from sdk import ServiceClient
from tests.support.chaos import (
    PersistentBroker,
    RestartablePostgres,
    SteadyCaller,
    close_by_calls,
    observer_counters,
    quiet_window,
    wait_until,
)
from tests.support.operations import Operations, ServiceProcess, operations

HEALTHY, FAULTY = "Ledger", "Orders"
FINDINGS = ("service_unavailable", "service_recovered")
STORE_OUTAGE_S = 30.0


def _key(doc: dict[str, Any]) -> tuple[str, str, str]:
    return (str(doc.get("type")), str(doc.get("service")), str(doc.get("timestamp")))


def _findings(ops: Operations, since: float = 0.0) -> list[dict[str, Any]]:
    return [d for t, topic, d in ops.watcher.messages
            if t >= since and topic.endswith("/errors") and isinstance(d, dict) and d.get("type") in FINDINGS]


def _published_since(ops: Operations, since: float, n: int) -> bool:
    return len(_findings(ops, since)) >= n


async def _crash_with_pending(ops: Operations, procs: list[ServiceProcess], client: ServiceClient) -> int:
    """Kill the faulty service with 3 calls pending: how many of (its service_unavailable, the 3
    answers) never came (0 when nothing was lost)."""
    await wait_until(partial(close_by_calls, client, ops, FAULTY), 30, "the faulty service's breaker closed")
    before = len([d for d in ops.watcher.of_type("service_unavailable") if d.get("service") == FAULTY])
    pending = [asyncio.create_task(client.call_raw(FAULTY, "hang", {}, timeout=20)) for _ in range(3)]

    async def all_pending() -> bool:
        return (await observer_counters(ops.cluster))["pending"] >= 1

    await wait_until(all_pending, 10, "a hanging call pending")  # a half-open breaker may fast-fail some
    procs[1].kill()
    lost = 0
    for task in pending:
        try:
            doc = await asyncio.wait_for(task, 15)
            lost += int(doc.get("error", {}).get("code") != -32503)
        except Exception:
            lost += 1
    try:
        await ops.watcher.wait(lambda w: len([d for d in w.of_type("service_unavailable")
                                              if d.get("service") == FAULTY]) > before, 15, "service_unavailable")
    except AssertionError:
        lost += 1
    procs[1] = ServiceProcess(ops.broker_url, ops.cluster, FAULTY).start()
    return lost


async def broker_restarts(trials: int, rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    broker = PersistentBroker()
    broker.start()
    procs: list[ServiceProcess] = []
    caller: SteadyCaller | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="sfa-chaos-") as tmp:
            async with operations(broker.url, Path(tmp), services=(HEALTHY, FAULTY)) as ops:
                procs += [ServiceProcess(broker.url, ops.cluster, n).start() for n in (HEALTHY, FAULTY)]
                caller = SteadyCaller(broker.url, HEALTHY)
                await caller.start()
                await caller.wait_answered(20, 30)
                for _ in range(trials):
                    await asyncio.sleep(rng.uniform(0.0, 2.0))  # a random moment in the traffic
                    opened_before = len([e for e in ops.watcher.on("/circuit-breaker")
                                         if e.get("service") == HEALTHY and e.get("to") == "open"])
                    findings_before = len(_findings(ops))
                    broker.terminate()
                    await wait_until(lambda c=caller: not c.bus.connected, 10, "the broker gone")
                    broker.start()
                    up = time.monotonic()
                    await wait_until(partial(quiet_window, ops, caller), 60, "10 calls in a row not fast-failed")
                    recover_s = time.monotonic() - up
                    settled = await observer_counters(ops.cluster)
                    await caller.wait_answered(20, 60)
                    after = await observer_counters(ops.cluster)
                    restored = (after["responses"] - settled["responses"] >= after["calls"] - settled["calls"] - 2
                                and after["fastFailed"] == settled["fastFailed"])
                    async with ServiceClient(caller.bus) as client:
                        lost = await _crash_with_pending(ops, procs, client)
                    found = Counter(_key(d) for d in _findings(ops)[findings_before:])
                    out.append({"fault": "broker restart", "lost": lost, "restored": restored,
                                "duplicates": sum(n - 1 for n in found.values()),
                                "false_breaker_opens": len([e for e in ops.watcher.on("/circuit-breaker")
                                                            if e.get("service") == HEALTHY
                                                            and e.get("to") == "open"]) - opened_before,
                                "recover_s": recover_s})
    finally:
        if caller is not None:
            await caller.stop()
        for p in procs:
            p.stop()
        broker.stop()
    return out


async def store_outages(trials: int, rng: random.Random, broker_url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pg = RestartablePostgres()
    store = open_store(pg.url)
    procs: list[ServiceProcess] = []
    caller: SteadyCaller | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="sfa-chaos-") as tmp:
            async with operations(broker_url, Path(tmp), services=(HEALTHY, FAULTY),
                                  extra={"store": pg.url}) as ops:
                procs += [ServiceProcess(broker_url, ops.cluster, n).start() for n in (HEALTHY, FAULTY)]
                caller = SteadyCaller(broker_url, HEALTHY)
                await caller.start()
                await caller.wait_answered(20, 30)
                await store.open()
                for _ in range(trials):
                    await asyncio.sleep(rng.uniform(0.0, 2.0))
                    pg.pause()
                    down_at = time.time()
                    async with ServiceClient(caller.bus) as client:
                        lost = await _crash_with_pending(ops, procs, client)
                    await wait_until(partial(_published_since, ops, down_at, 2), 20, "the recovery published")
                    await asyncio.sleep(max(0.0, STORE_OUTAGE_S - (time.time() - down_at)))  # the outage
                    published = [_key(d) for d in _findings(ops, down_at)]
                    pg.resume()
                    up = time.monotonic()

                    async def stored(t: float = down_at) -> list[tuple[str, str, str]]:
                        try:
                            rows = await store.outbox_query(since=t - 60, limit=10_000)
                        except StoreError:
                            return []
                        return [_key(r.payload) for r in rows if r.payload.get("type") in FINDINGS]

                    async def complete(p: list[tuple[str, str, str]] = published) -> bool:
                        return set(p) <= set(await stored())

                    recover_s: float | None = None
                    try:
                        await wait_until(complete, 60, "findings stored")
                        recover_s = time.monotonic() - up
                    except AssertionError:
                        pass
                    rows = await stored()
                    missing = set(published) - set(rows)
                    in_order = [k for k in rows if k in set(published)] == published
                    dup = sum(n - 1 for n in Counter(published).values()) + \
                        sum(n - 1 for n in Counter(k for k in rows if k in set(published)).values())
                    out.append({"fault": "PostgreSQL stop 30 s", "lost": lost + len(missing),
                                "restored": in_order and not missing, "duplicates": dup,
                                "false_breaker_opens": 0, "recover_s": recover_s})
    finally:
        if caller is not None:
            await caller.stop()
        for p in procs:
            p.stop()
        await store.close()
        pg.stop()
    return out


async def _run(trials: int, seed: int) -> list[dict[str, Any]]:
    from tests.support.broker import HARNESS, SessionBroker

    rng = random.Random(seed)
    rows = await broker_restarts(trials, rng)
    with tempfile.TemporaryDirectory(prefix="sfa-chaos-broker-") as tmp:
        session = SessionBroker(Path(tmp))
        try:
            rows += await store_outages(trials, rng, session.url(HARNESS))
        finally:
            session.stop()
    return rows


def run(trials: int, seed: int) -> list[dict[str, Any]]:
    """Every trial of every fault, one dict each (fault, lost, restored, duplicates, recover_s)."""
    started = not ray.is_initialized()
    for attempt in range(3 if started else 0):  # a loaded machine can miss Ray's 30 s startup
        try:
            ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    try:
        return asyncio.run(_run(trials, seed))
    finally:
        if started:
            ray.shutdown()


def summary(rows: list[dict[str, Any]]) -> list[list[Any]]:
    table = []
    for fault in ("broker restart", "PostgreSQL stop 30 s"):
        mine = [r for r in rows if r["fault"] == fault]
        if not mine:
            continue
        times = [r["recover_s"] for r in mine if r["recover_s"] is not None]
        table.append([fault, len(mine), sum(r["lost"] for r in mine),
                      100.0 * sum(bool(r["restored"]) for r in mine) / len(mine),
                      sum(r["duplicates"] for r in mine), sum(r["false_breaker_opens"] for r in mine),
                      median(times) if times else "-", max(times) if times else "-"])
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos.infra", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=3, help="faults of each kind (default 3)")
    p.add_argument("--seed", type=int, default=1, help="random moments of the faults (default 1)")
    p.add_argument("--json", type=Path, help="write every trial as JSON here")
    a = p.parse_args(argv)
    rows = run(a.trials, a.seed)
    print_table("Infrastructure faults under traffic",
                ["fault", "trials", "findings lost", "state restored %", "duplicates published",
                 "healthy breakers opened", "recover median s", "recover max s"], summary(rows))
    if a.json is not None:
        a.json.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
