"""Infrastructure faults under steady traffic with operate running (drivers.operate in-test, the
session's Ray): nothing sfa-ops must publish is lost.

- the broker (a private mosquitto with ``persistence true``, so sessions survive its restart)
  restarted three times under traffic: calls and responses are both observed again (no call
  fast-failed or timed out once the restart is over), the observer's session is resumed, no
  ``service_unavailable`` is published and no breaker opens for the services that never went down
  (a stopping mosquitto publishes every client's Last Will: the observer holds them until its echo
  proves the broker up, ``policies.health.outage_hold``, and the instances' own ``online`` after the
  restart takes them back), and a service SIGKILLed afterwards is published with its pending calls
  answered;
- the store's PostgreSQL stopped for 30 s under traffic: every finding raised during the outage is
  in the store afterwards, in order, and none is published twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import ray

from adapters.store import open_store
from adapters.store.base import StoreError
from protocol import parse_model
from protocol.rpc import ErrorResponse
from sdk import ServiceClient
from tests.support.chaos import (
    PersistentBroker,
    RestartablePostgres,
    SteadyCaller,
    observer_counters,
    quiet_window,
    wait_until,
)
from tests.support.operations import ServiceProcess, operations

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("ray_session")]

HEALTHY, FAULTY = "Ledger", "Orders"
RESTARTS = 3


async def pending_at_least(cluster: str, n: int) -> bool:
    return (await observer_counters(cluster))["pending"] >= n


def opened(ops: Any, service: str) -> list[dict[str, Any]]:
    return [e for e in ops.watcher.on("/circuit-breaker") if e.get("service") == service and e.get("to") == "open"]


async def resolved(cluster: str, calls: int) -> dict[str, int] | None:
    """Observer 0's counters once as many calls were answered or timed out as ``calls``."""
    c = await observer_counters(cluster)
    return c if c["responses"] + c["timeouts"] >= calls else None


async def timeouts_are_the_callers(cluster: str, caller: SteadyCaller) -> bool:
    """The observer counted no more timeouts than the caller saw (its calls are the only ones)."""
    timeouts = (await observer_counters(cluster))["timeouts"]
    return timeouts <= len([e for e in caller.errors if e.startswith("ServiceTimeoutException")])


async def offlines_settled(cluster: str) -> dict[str, int] | None:
    """Observer 0's counters once it holds no offline any more."""
    c = await observer_counters(cluster)
    return c if c["offlineHeldNow"] == 0 else None


async def restart_broker(broker: PersistentBroker, caller: SteadyCaller) -> None:
    broker.terminate()  # SIGTERM: mosquitto saves its sessions (and publishes every client's Last Will)
    await wait_until(lambda: not caller.bus.connected, 10, "the caller to see the broker go")
    broker.start()


async def test_broker_restart_under_traffic_loses_nothing(tmp_path: Path) -> None:
    """After each of three broker restarts the observer sees calls AND responses again (its
    subscriptions are back, every call answered is counted answered, none fast-failed); the Last Wills
    the stopping broker sent are never taken for crashes (no service_unavailable, no breaker opened,
    no caller told -32503); and a service SIGKILLed afterwards is published with its pending calls
    answered."""
    broker = PersistentBroker()
    broker.start()
    procs: list[ServiceProcess] = []
    caller: SteadyCaller | None = None
    try:
        async with operations(broker.url, tmp_path, services=(HEALTHY, FAULTY)) as ops:
            for name in (HEALTHY, FAULTY):
                procs.append(ServiceProcess(broker.url, ops.cluster, name).start())
            caller = SteadyCaller(broker.url, HEALTHY)
            await caller.start()
            await caller.wait_answered(20, 30)
            before = await observer_counters(ops.cluster)
            assert before["calls"] >= 20 and before["responses"] >= 20, before

            for _ in range(RESTARTS):
                await restart_broker(broker, caller)
                await wait_until(lambda: quiet_window(ops, caller), 60, "10 calls in a row not fast-failed")
                # the calls caught in the restart are settled (answered, or timed out: a response the
                # service sent while the broker was away may come after the observer's 1 s call timeout)
                seen = (await observer_counters(ops.cluster))["calls"]
                settled = await wait_until(partial(resolved, ops.cluster, seen), 30, "restart's calls settled")
                await caller.wait_answered(40, 60)
                after = await observer_counters(ops.cluster)
                calls, responses = after["calls"] - settled["calls"], after["responses"] - settled["responses"]
                assert calls >= 40 and responses >= calls - 3, (settled, after)
                assert after["fastFailed"] == settled["fastFailed"], (settled, after)
                # a call the observer timed out was unanswered for its caller too (a call published while
                # the service was away is lost for it): no response was lost by the observer
                await wait_until(partial(timeouts_are_the_callers, ops.cluster, caller), 30,
                                 "each call the observer timed out timed out for the caller too")
            # every Will held and taken back once the instances were online again (and the recheck window over)
            held = await wait_until(lambda: offlines_settled(ops.cluster), 30, "held offlines taken back")
            assert held["offlineCancelled"] >= 1, held  # the Wills reached the observer: the hold was tested
            assert ops.watcher.of_type("service_unavailable") == [], ops.watcher.of_type("service_unavailable")
            assert opened(ops, HEALTHY) == [] and opened(ops, FAULTY) == []
            assert held["fastFailed"] == before["fastFailed"], (before, held)
            assert not [e for e in caller.errors if "Unavailable" in e], caller.errors
            bus = await ray.get_actor(f"sfa-observer-{ops.cluster}-0", namespace="sfa-ops").__ray_call__.remote(
                lambda actor: actor.body.bus.stats())
            assert bus["reconnects"] >= RESTARTS and bus["sessions_resumed"] >= 1, bus  # persistent session resumed

            # a fault injected after the restarts is published, its pending calls answered
            async with ServiceClient(caller.bus) as client:
                pending = [asyncio.create_task(client.call_raw(FAULTY, "hang", {}, timeout=30)) for _ in range(3)]
                await wait_until(lambda: pending_at_least(ops.cluster, 1), 10, "a hanging call pending")
                procs[1].kill()
                try:
                    answers = await asyncio.wait_for(asyncio.gather(*pending), 15)
                except TimeoutError:
                    raise AssertionError(f"pending calls not answered: {await observer_counters(ops.cluster)}") from None
                for doc in answers:
                    assert parse_model(ErrorResponse, doc).error.code == -32503, doc
                await ops.watcher.wait(lambda w: [d for d in w.of_type("service_unavailable")
                                                  if d.get("service") == FAULTY], 15,
                                       "service_unavailable for the faulty service")
                assert not [d for d in ops.watcher.of_type("service_unavailable") if d.get("service") == HEALTHY]
    finally:
        if caller is not None:
            await caller.stop()
        for p in procs:
            p.stop()
        broker.stop()


# -- the store's PostgreSQL stopped for 30 s ------------------------------------------------------------

STORE_OUTAGE_S = 30.0
FINDINGS = ("service_unavailable", "service_recovered")


def finding_key(doc: dict[str, Any]) -> tuple[str, str, str]:
    return (str(doc.get("type")), str(doc.get("service")), str(doc.get("timestamp")))


async def test_store_outage_under_traffic_keeps_every_finding(broker_url: str, tmp_path: Path) -> None:
    """PostgreSQL (operate's store) stops for 30 s while calls flow and a service crashes and comes back
    twice: every finding published meanwhile reaches the store's outbox once it is back, in the order it
    was published, and none is published twice."""
    pg = RestartablePostgres()
    procs: list[ServiceProcess] = []
    caller: SteadyCaller | None = None
    store = open_store(pg.url)
    try:
        async with operations(broker_url, tmp_path, services=(HEALTHY, FAULTY), extra={"store": pg.url}) as ops:
            for name in (HEALTHY, FAULTY):
                procs.append(ServiceProcess(broker_url, ops.cluster, name).start())
            caller = SteadyCaller(broker_url, HEALTHY)
            await caller.start()
            await caller.wait_answered(20, 30)
            pg.pause()
            down_at = time.time()
            for seen in (1, 2):  # crash and restart the faulty service while the store is away
                procs[1].kill()
                await ops.watcher.wait(lambda w, n=seen: len(findings(w, "service_unavailable")) >= n, 15,
                                       "service_unavailable during the store outage")
                procs[1] = ServiceProcess(broker_url, ops.cluster, FAULTY).start()
                await ops.watcher.wait(lambda w, n=seen: len(findings(w, "service_recovered")) >= n, 15,
                                       "service_recovered during the store outage")
            await caller.wait_answered(20, 30)
            remaining = STORE_OUTAGE_S - (time.time() - down_at)
            if remaining > 0:
                await asyncio.sleep(remaining)  # the outage's length, not synchronisation
            published = [d for d in ops.watcher.on("/errors") if d.get("type") in FINDINGS]
            assert len(published) >= 4, published
            pg.resume()
            await store.open()
            wanted = [finding_key(d) for d in published]

            async def stored() -> list[tuple[str, str, str]]:
                try:
                    rows = await store.outbox_query(since=down_at - 60, limit=10_000)
                except StoreError:
                    return []
                return [finding_key(r.payload) for r in rows if r.payload.get("type") in FINDINGS]

            async def all_stored() -> bool:
                return set(wanted) <= set(await stored())

            try:
                await wait_until(all_stored, 60, "every finding of the outage in the store's outbox")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: stored {await stored()}, published {wanted}") from None
            rows = await stored()
            assert [k for k in rows if k in set(wanted)] == wanted, (rows, wanted)  # in order, once each
            assert len(set(wanted)) == len(wanted), "a finding was published twice"
            assert not opened(ops, HEALTHY)
    finally:
        if caller is not None:
            await caller.stop()
        for p in procs:
            p.stop()
        with contextlib.suppress(Exception):
            await store.close()
        pg.stop()


def findings(w: Any, kind: str) -> list[dict[str, Any]]:
    return [d for d in w.of_type(kind) if d.get("service") == FAULTY]
