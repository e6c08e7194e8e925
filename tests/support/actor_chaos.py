"""kill -9 of one sfa-ops actor's own worker process under traffic, then a scripted service fault:
what ``tests/chaos/test_actor_kills.py`` asserts and ``benchmarks.chaos.actors`` counts.

One trial (:func:`kill_trial`), inside a running operations job (``tests.support.operations``):

1. two service processes: ``Orders`` (steady traffic from a client loop, later crashed) and
   ``Ledger`` (its breaker opened by failing calls before the kill; its alert notified once);
   for the security kinds, failed logins from one IP first become a ``block_ip``.
2. the actor's worker process gets SIGKILL (its pid from the actor itself, through
   ``__ray_call__``: never ``ray.kill``, which is not a process crash).
3. recovered: the actor answers from a new process and is whole (started, loops running).
4. the fault: calls pending on ``Orders``, then SIGKILL of the ``Orders`` instance: its
   ``service_unavailable`` must be published and every pending call answered -32503.
5. state restored: the ``Ledger`` breaker still refuses calls and is open in the health summary,
   its alert is not notified again; per kind, the state that kind owns (see :data:`KINDS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from actors.chassis import Chassis
from protocol import parse_model
from protocol.rpc import ErrorResponse
from sdk import ServiceClient
from sdk.errors import ServiceException
from tests.support.http_receiver import HttpReceiver
from tests.support.operations import Operations, ServiceProcess

KINDS = ("observer", "monitor", "supervisor", "alertmanager", "analyst", "responder", "infra", "audit")
"""Every kind of sfa-ops actor; ``monitor`` kills both services' monitors at once."""

CALL_TIMEOUT_S = 10.0
"""The observation call timeout of a chaos run: recovery must fit inside it."""



def policies(hook_url: str) -> dict[str, str]:
    """Fast policies; every notification goes to the webhook at ``hook_url``/hook."""
    return {
        "observation.yaml": f"call_timeout: {CALL_TIMEOUT_S:g}s\ntick: 100ms\n",
        "circuit_breaker.yaml": "defaults:\n  minimum_calls: 5\n  window: 30s\n  open_timeout: 10m\n",
        "alerting.yaml": ("route:\n  receiver: hook\n  group_by: [alertname, service]\n  group_wait: 0s\n"
                          "  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n"
                          f"    webhook_configs:\n      - url: {hook_url}/hook\n"),
    }



MAX_ROUNDS = 31
"""Trials of one kind in one operations job (the attackers' addresses are unique up to this)."""


def services(kind: str, n: int = 0) -> tuple[str, str]:
    """The crashed and the breaker-opened service of trial ``n`` of ``kind`` (unique per kind and
    trial: many trials can share one operations job)."""
    tag = f"{kind.capitalize()}{n or ''}"
    return f"Orders{tag}", f"Ledger{tag}"


def attackers(kind: str, n: int = 0) -> tuple[str, str]:
    """The IPs banned before and after the kill (unique per kind and trial)."""
    k = n * len(KINDS) + KINDS.index(kind) + 1
    assert n < MAX_ROUNDS
    return f"203.0.113.{k}", f"198.51.100.{k}"


def actor_names(kind: str, cluster: str, n: int = 0) -> list[str]:
    base = {"observer": f"sfa-observer-{cluster}-0", "supervisor": f"sfa-supervisor-{cluster}",
            "alertmanager": f"sfa-alertmanager-{cluster}", "analyst": f"sfa-analyst-{cluster}",
            "responder": f"sfa-responder-{cluster}", "audit": f"sfa-audit-{cluster}",
            "infra": f"sfa-infra-{cluster}-mqtt_broker"}
    if kind == "monitor":
        return [f"sfa-monitor-{cluster}-{name}" for name in services(kind, n)]
    return [base[kind]]


def _pid_and_whole(actor: Any) -> tuple[int, bool]:
    """Runs inside the actor (``__ray_call__``): its pid, and whether its body (every actor is on
    ``actors.chassis``) is started, with its bus connected and its loops running (what each kind's
    restart path must restore)."""

    def running(task: Any) -> bool:
        return task is not None and not task.done()

    body = actor.body
    assert isinstance(body, Chassis), f"{type(actor).__name__} is not on the actor chassis"
    whole = body.started
    bus = getattr(body, "bus", None)
    if whole and bus is not None and hasattr(bus, "connected"):
        whole = bool(bus.connected)
    for name in ("_loops", "_tasks"):
        tasks = getattr(body, name, None)
        if whole and isinstance(tasks, list):
            whole = bool(tasks) and all(running(t) for t in tasks)
    return os.getpid(), bool(whole)

async def pid_and_whole(name: str, timeout: float = 5.0) -> tuple[int, bool]:
    handle = ray.get_actor(name, namespace="sfa-ops")
    result: tuple[int, bool] = await asyncio.wait_for(handle.__ray_call__.remote(_pid_and_whole), timeout)
    return result


@dataclass
class Trial:
    kind: str
    lost: int = 0
    """Injected faults whose finding was never published, plus pending calls never answered -32503."""
    restored: dict[str, bool] = field(default_factory=dict)
    duplicates: int = 0
    """Findings or notifications published more than once."""
    recover_s: float = float("nan")
    """kill -9 → the actor answers from a new process, whole again."""
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "lost": self.lost, "restored": self.restored, "duplicates": self.duplicates,
                "recover_s": self.recover_s, "detail": self.detail}


async def _wait(predicate: Callable[[], Awaitable[Any]], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            got = await predicate()
            if got:
                return got
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.05)


def _unavailable_after(ops: Operations, service: str, after: float) -> list[dict[str, Any]]:
    return [d for t, topic, d in ops.watcher.messages
            if t >= after and topic.endswith("/errors") and isinstance(d, dict)
            and d.get("type") == "service_unavailable" and d.get("service") == service]


def _notified(hook: HttpReceiver, alertname: str, service: str) -> list[Any]:
    """Firing webhook notifications of ``alertname`` for ``service``."""
    return [b for b in hook.bodies("/hook") if isinstance(b, dict) and b.get("status") == "firing"
            and (b.get("commonLabels") or {}).get("alertname") == alertname
            and (b.get("commonLabels") or {}).get("service") == service]


def _blocks(ops: Operations, ip: str) -> list[dict[str, Any]]:
    return [a for a in ops.watcher.on("/security/actions") if a.get("action") == "block_ip" and a.get("target") == ip]


def _failed_logins(ops: Operations, ip: str) -> None:
    for i in range(5):
        ops.bus.publish_nowait("security/auth/login", {"userId": f"chaos{i}", "ipAddress": ip, "success": False,
                                                       "timestamp": "2026-01-01T00:00:00Z"}, qos=1)


async def _traffic(client: ServiceClient, service: str, counts: dict[str, int], stop: asyncio.Event) -> None:
    """Steady traffic on ``service``: one call at a time, every 20 ms."""
    while not stop.is_set():
        try:
            await client.call(service, "ok", {}, timeout=5, user_context={"userId": "chaos-traffic"})
            counts["ok"] += 1
        except Exception:
            counts["failed"] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)


async def _audited(store_url: str, user: str) -> bool:
    from adapters.store import open_store

    store = open_store(store_url)
    await store.open()
    try:
        async for r in store.audit_iter(0, 2e9, 100_000):
            if r.payload.get("userId") == user:
                return True
        return False
    finally:
        await store.close()


async def kill_trial(ops: Operations, client: ServiceClient, procs: list[ServiceProcess], hook: HttpReceiver,
                     kind: str, *, n: int = 0, kill_after_s: float = 0.0, wait_s: float = 20.0) -> Trial:
    """Trial ``n`` of ``kind``: one kill -9 under traffic, then the fault; never raises on a lost
    finding (counted)."""
    trial = Trial(kind)
    o, led = services(kind, n)
    ip_before = attackers(kind, n)[0]
    orders = ServiceProcess(ops.broker_url, ops.cluster, o).start()
    procs.append(orders)
    procs.append(ServiceProcess(ops.broker_url, ops.cluster, led).start())
    await ops.watcher.wait(lambda w: {o, led} <= set((w.on("/health") or [{}])[-1].get("services", {})),
                           30, "both services in the health summary")
    for _ in range(6):
        with contextlib.suppress(ServiceException):
            await client.call(led, "fail", {}, timeout=5)
    await ops.watcher.wait(lambda w: [e for e in w.on("/circuit-breaker")
                                      if e.get("service") == led and e.get("to") == "open"], 10, "breaker open")
    await hook.wait_until(lambda _: bool(_notified(hook, "CircuitBreakerOpen", led)), path="/hook",
                          timeout=15, what="CircuitBreakerOpen notified")
    security = kind in ("analyst", "responder")
    if security:
        _failed_logins(ops, ip_before)
        await ops.watcher.wait(lambda w: _blocks(ops, ip_before), 20, "block_ip before the kill")
    counts = {"ok": 0, "failed": 0}
    stop = asyncio.Event()
    traffic = asyncio.create_task(_traffic(client, o, counts, stop))
    try:
        await ops.watcher.wait(lambda w: counts["ok"] >= 5, 10, "traffic flowing")
        await asyncio.sleep(kill_after_s)  # the benchmark's random moment (0 in the test)
        names = actor_names(kind, ops.cluster, n)
        before = {n: (await pid_and_whole(n))[0] for n in names}
        killed = time.time()
        for pid in before.values():
            os.kill(pid, signal.SIGKILL)

        async def recovered() -> bool:
            for n in names:
                pid, whole = await pid_and_whole(n, timeout=2.0)
                if pid == before[n] or not whole:
                    return False
            return True

        if await _wait(recovered, 2 * CALL_TIMEOUT_S):
            trial.recover_s = time.time() - killed
        trial.detail["traffic_during_kill"] = dict(counts)
        if kind == "audit":  # a call observed after the restart must reach the audit trail
            await client.call(o, "ok", {}, timeout=5, user_context={"userId": f"chaos-after-{o}"})
        # The fault: calls pending on Orders, then its only instance is killed.
        pending = [asyncio.create_task(client.call_raw(o, "hang", {}, timeout=CALL_TIMEOUT_S + 5))
                   for _ in range(3)]
        await client.call(o, "ok", {}, timeout=5)  # sent after the hangs: they reached the broker
        stop.set()
        await traffic
        fault_at = time.time()
        orders.kill()
        found = await _wait(_async(lambda: _unavailable_after(ops, o, fault_at)), wait_s)
        trial.lost += 0 if found else 1
        answers = await asyncio.gather(*pending, return_exceptions=True)
        unanswered = 0
        for doc in answers:
            ok = isinstance(doc, dict) and "error" in doc and parse_model(ErrorResponse, doc).error.code == -32503
            unanswered += 0 if ok else 1
        trial.lost += unanswered
        trial.detail["pending_unanswered"] = unanswered
        await _check_state(ops, hook, kind, n, trial)
        trial.duplicates += max(0, len(_unavailable_after(ops, o, fault_at)) - 1)
        trial.duplicates += max(0, len(_notified(hook, "CircuitBreakerOpen", led)) - 1)
        if security:
            trial.duplicates += max(0, len(_blocks(ops, ip_before)) - 1)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await traffic
    return trial


def _async(fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def call() -> Any:
        return fn()
    return call


async def _check_state(ops: Operations, hook: HttpReceiver, kind: str, n: int, trial: Trial) -> None:
    """What the killed actor must have got back, plus the shared view of the opened breaker."""
    o, led = services(kind, n)
    ip_before, ip_after = attackers(kind, n)
    # The observer's own view of the breaker (what refuses calls; a live instance answers too).
    trial.restored["observer_breaker"] = bool(await _wait(lambda: _observer_breaker(ops.cluster, led), 10))
    health = await _wait(_async(lambda: [h for h in ops.watcher.on("/health")
                                         if h.get("services", {}).get(o, {}).get("status") == "down"]), 15)
    trial.restored["health"] = bool(health) and health[-1]["services"][led]["breaker"] == "open"
    if kind == "monitor":
        state = await ray.get_actor(f"sfa-monitor-{ops.cluster}-{led}", namespace="sfa-ops").state.remote()
        trial.restored["monitor_breaker"] = state["breaker"]["state"] == "open"
    elif kind == "supervisor":
        status = await ray.get_actor(f"sfa-supervisor-{ops.cluster}", namespace="sfa-ops").status.remote()
        trial.restored["supervisor_breakers"] = status["breakers"].get(led) == "open"
    elif kind == "alertmanager":
        # Whole again: the crash's alert is notified by the restarted alert manager.
        trial.restored["alert_after"] = bool(await _wait(_async(
            lambda: [b for b in hook.bodies("/hook") if isinstance(b, dict) and b.get("status") == "firing"
                     and (b.get("commonLabels") or {}).get("service") == o]), 15))
    elif kind in ("analyst", "responder"):
        _failed_logins(ops, ip_after)
        found = await _wait(_async(lambda: _blocks(ops, ip_after)), 20)
        trial.lost += 0 if found else 1
        if kind == "responder":
            status = await ray.get_actor(f"sfa-responder-{ops.cluster}", namespace="sfa-ops").status.remote()
            targets = {a.get("target") for a in status["active"]} if isinstance(status["active"], list) else set()
            trial.restored["ban"] = ip_before in targets
    elif kind == "audit":
        trial.restored["audit_after"] = bool(await _wait(lambda: _audited(ops.store_url, f"chaos-after-{o}"), 15))
    elif kind == "infra":
        name = f"sfa-infra-{ops.cluster}-mqtt_broker"
        handle = ray.get_actor(name, namespace="sfa-ops")
        first = (await handle.status.remote())["checks"]
        trial.restored["infra_checking"] = bool(await _wait(
            lambda: _more_checks(handle, first), 15))
        trial.restored["infra_health"] = "mqtt_broker" in ((ops.watcher.on("/health") or [{}])[-1]
                                                           .get("infrastructure") or {})
    elif kind == "observer":
        counters = await ray.get_actor(f"sfa-observer-{ops.cluster}-0", namespace="sfa-ops").counters.remote()
        trial.restored["observer_counting"] = counters["calls"] > 0


async def _more_checks(handle: Any, first: int) -> bool:
    return bool((await handle.status.remote())["checks"] > first)


def _breaker_view(observer: Any, service: str) -> str | None:
    view = observer.body.correlator.breakers.get(service)
    return None if view is None else str(view.state)


async def _observer_breaker(cluster: str, service: str) -> bool:
    handle = ray.get_actor(f"sfa-observer-{cluster}-0", namespace="sfa-ops")
    return bool(await handle.__ray_call__.remote(_breaker_view, service) == "open")
