"""Running the operations job inside a test (one Ray session per test session) and watching the
broker the way a client would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from adapters.mqtt.bus import Message, MqttBus, MqttConfig
from tests.support.broker import as_sfa_ops, service_child_login

FAST_POLICIES = {
    "observation.yaml": "call_timeout: 1s\ntick: 100ms\n",
    "circuit_breaker.yaml": (
        "defaults:\n  minimum_calls: 5\n  window: 30s\n  open_timeout: 2s\n"
        "  half_open_max_calls: 2\n  half_open_success_threshold: 2\n"
    ),
    "health.yaml": "damping:\n  healthy: {evaluations: 1}\n  degraded: {evaluations: 2}\n",
}


def write_policies(directory: Path, extra: dict[str, str] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in {**FAST_POLICIES, **(extra or {})}.items():
        (directory / name).write_text(text)
    return directory


@dataclass
class Watcher:
    """Every message on ``system/{cluster}/#`` with its arrival time."""

    messages: list[tuple[float, str, Any]] = field(default_factory=list)

    def __call__(self, msg: Message) -> None:
        try:
            doc = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            doc = msg.payload
        self.messages.append((time.time(), msg.topic, doc))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [d for _, _, d in self.messages if isinstance(d, dict) and d.get("type") == kind]

    def on(self, suffix: str) -> list[dict[str, Any]]:
        return [d for _, t, d in self.messages if t.endswith(suffix) and isinstance(d, dict)]

    async def wait(self, predicate: Callable[[Watcher], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = predicate(self)
            if got:
                return got
            await asyncio.sleep(0.05)
        tail = "\n".join(f"  {t} {str(d)[:200]}" for _, t, d in self.messages[-15:])
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last messages:\n{tail}")


@dataclass
class Operations:
    cluster: str
    broker_url: str
    store_url: str
    watcher: Watcher
    bus: MqttBus

    def health(self) -> dict[str, Any] | None:
        found = self.watcher.on("/health")
        return found[-1] if found else None


@contextlib.asynccontextmanager
async def operations(broker_url: str, tmp_path: Path, *, services: tuple[str, ...] = (),
                     policies: dict[str, str] | None = None, observers: int = 1,
                     extra: dict[str, Any] | None = None, start_timeout: float = 180.0) -> AsyncIterator[Operations]:
    """The operations job (drivers.operate.run) on a unique cluster id, stopped on exit; ``extra``
    adds or overrides options (e.g. ``{"check_redis": [url]}``). On the session broker operate logs
    in as ``sfa-ops``; the watcher keeps ``broker_url``'s login (the harness's)."""
    from drivers.operate import run

    cluster = f"t{uuid.uuid4().hex[:8]}"
    store_url = f"sqlite:///{tmp_path / 'ops.db'}"
    opts = {"broker": as_sfa_ops(broker_url), "cluster_id": cluster, "store": store_url,
            "policies": str(write_policies(tmp_path / "policies", policies)), "ray_address": None,
            "observers": observers, "duration": None, "services": list(services), "status_every": 0, **(extra or {})}
    watcher = Watcher()
    # Tests also play hostile clients that send oversized payloads: lift the bus's own publish cap.
    bus = MqttBus(config=MqttConfig.from_url(broker_url), max_publish_bytes=4 << 20)
    await bus.start()
    await bus.wait_connected(10)
    await bus.subscribe(f"system/{cluster}/#", watcher, qos=1)
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run(opts, ready=ready, stop=stop))
    try:
        done, _ = await asyncio.wait({task, asyncio.create_task(ready.wait())}, timeout=start_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        assert ready.is_set(), f"operate did not start within {start_timeout:g} s"
        yield Operations(cluster, broker_url, store_url, watcher, bus)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await bus.stop()


class ServiceProcess:
    """One service instance in its own process (so a crash is a real SIGKILL). On the session broker
    it logs in as the service's principal (its password through the environment)."""

    def __init__(self, broker_url: str, cluster: str, service: str, instance: str = "i1") -> None:
        url, self.env = service_child_login(broker_url, service)
        self.args = [sys.executable, "-m", "drivers.probe_service", "--broker", url,
                     "--cluster", cluster, "--service", service, "--instance", instance]
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> ServiceProcess:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True, env={**os.environ, **self.env})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"service did not start: {line!r}"
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
