"""Tier-3 detection latency: from killing Redis / PostgreSQL / the MQTT broker to the
``infrastructure_error`` arriving on the broker, with 1 s checks and an error after 2 failed ones;
plus the CPU the checkers use at the shipped default intervals.

What is measured, precisely:

- Real servers started here (adapters/processes) are killed with SIGKILL: Redis, PostgreSQL (its
  whole process group, postmaster and backends, as when its host dies) and a *victim* mosquitto.
- The real :class:`actors.infra_checker.InfraChecker` actors check them (interval 1 s, timeout 1 s,
  ``failures_before_error: 2``). Instead of the whole operate, they report to a small collector
  actor that publishes each tier-3 message (QoS 1) the way the supervisor does, minus the store
  write, on a separate *reporting* mosquitto. The broker case needs that second broker: the
  victim cannot carry news of its own death, and timing the message after its restart would
  measure the restart, not the detection. For uniformity all three cases report there.
- **on broker**: kill → a subscriber on the reporting broker receives ``infrastructure_error``
  for the component (same process and clock as the kill). **detected**: kill → the message's
  ``timestamp`` (the check that crossed the threshold, by the checker's clock). Each trial starts
  at a random phase of the check cycle (a 0-1 s random wait after the previous recovery), restarts
  the server on its port and waits for ``infrastructure_recovered`` before the next trial.
- Target: p99 of *on broker* ≤ interval × hysteresis + 1 s = 3 s, for every component. With 10
  trials the p99 is the worst trial.
- CPU: checkers at the shipped defaults (broker 10 s, Redis and PostgreSQL 30 s) on healthy servers
  for ``--cpu-window`` seconds; user+system CPU time of each actor's process (/proc/PID/stat), per minute.
  Baseline: an idle Ray actor process measured over the same window (Ray's own per-worker
  overhead), so *net* is what checking costs.

    python -m benchmarks.infra_detection [--trials 10] [--cpu-window 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import ray

from actors.infra_checker import InfraChecker
from actors.settings import OperateSettings
from adapters.mqtt.bus import Message, MqttBus, MqttConfig
from adapters.runtime.processes import (
    ChildService,
    Mosquitto,
    init_postgres_datadir,
    start_postgres_datadir,
    start_redis,
)
from benchmarks.common import median, quantile, write_result
from drivers.tables import print_table
from protocol import topics

INTERVAL_S, HYSTERESIS = 1.0, 2
TARGET_S = INTERVAL_S * HYSTERESIS + 1.0
FAST_POLICY = (f"defaults: {{interval: {INTERVAL_S:g}s, timeout: 1s, failures_before_error: {HYSTERESIS}, "
               "successes_before_recovery: 1}\ncomponents:\n  mqtt_broker: {interval: 1s, timeout: 1s}\n")
WAIT_S = 20.0


@ray.remote(num_cpus=0)
class Collector:
    """Stands in for the supervisor: publishes tier-3 messages on the reporting broker."""

    def __init__(self, broker_url: str, cluster: str) -> None:
        self.cluster = cluster
        self.bus = MqttBus(config=MqttConfig.from_url(broker_url), client_id=f"bench-collector-{cluster}")
        self.health: dict[str, Any] = {}
        self.alerts = 0

    async def start(self) -> None:
        await self.bus.start()
        await self.bus.wait_connected(10)

    async def infrastructure_report(self, component: str, health: dict[str, Any],
                                    message: dict[str, Any] | None = None, alert: dict[str, Any] | None = None) -> None:
        self.health[component] = health
        self.alerts += alert is not None
        if message is not None:
            self.bus.publish_nowait(topics.system_errors(self.cluster), message, qos=1)
            with contextlib.suppress(Exception):
                await self.bus.flush(1.0)

    async def alert(self, alerts: list[dict[str, Any]]) -> None:
        self.alerts += len(alerts)

    async def pod_status(self, pods: dict[str, Any]) -> list[str]:
        return []

    async def status(self) -> dict[str, Any]:
        return {"health": {"infrastructure": dict(self.health)}}

    async def stop(self) -> None:
        await self.bus.stop()


@ray.remote(num_cpus=0)
class Idle:
    """The CPU baseline: a Ray actor that does nothing."""

    async def pid(self) -> int:
        return os.getpid()


class Victims:
    """The servers to kill and bring back, each on a fixed port."""

    def __init__(self) -> None:
        self.redis = start_redis()
        self.pg_workdir = Path(tempfile.mkdtemp(prefix="sfa-bench-pg-"))
        self.pg_datadir = init_postgres_datadir(self.pg_workdir)
        self.pg = start_postgres_datadir(self.pg_datadir, self.pg_workdir)
        self.broker = Mosquitto()
        self.broker.start()
        self._dead: list[ChildService] = []

    def kill(self, component: str) -> None:
        if component == "redis":
            self.redis.kill()
        elif component == "postgresql_cluster":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pg.proc.pid, signal.SIGKILL)  # postmaster and backends at once
            self.pg.proc.wait(10)
        else:
            assert self.broker.service is not None
            self.broker.service.kill()

    def restart(self, component: str) -> None:
        if component == "redis":
            self._dead.append(self.redis)
            self.redis = start_redis(port=self.redis.port)
        elif component == "postgresql_cluster":
            deadline = time.monotonic() + 20
            while True:  # the old shared memory may take a moment to go
                try:
                    self.pg = start_postgres_datadir(self.pg_datadir, self.pg_workdir, port=self.pg.port)
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        else:
            self.broker.restart()

    def stop(self) -> None:
        for svc in [*self._dead, self.redis]:
            svc.stop()
        self.pg.terminate()
        shutil.rmtree(self.pg_workdir, ignore_errors=True)
        if self.broker.service is not None:
            self.broker.service.stop()


class Arrivals:
    """Tier-3 messages as they arrive on the reporting broker."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, dict[str, Any]]] = []

    def __call__(self, msg: Message) -> None:
        self.seen.append((time.time(), orjson.loads(msg.payload)))

    async def next(self, kind: str, component: str, after: float, timeout: float = WAIT_S) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, doc in self.seen:
                if at >= after and doc.get("type") == kind and doc.get("component") == component:
                    return at, doc
            await asyncio.sleep(0.005)
        raise TimeoutError(f"no {kind} for {component} within {timeout}s")


def _epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _settings(component: str, victims: Victims, reporting_url: str, cluster: str,
              policies_dir: str | None) -> OperateSettings:
    broker = victims.broker.url if component == "mqtt_broker" else reporting_url
    return OperateSettings(broker_url=broker, cluster_id=cluster, policies_dir=policies_dir,
                           namespace="sfa-bench", check_redis=(victims.redis.url,),
                           check_postgres=(victims.pg.url,))


async def detection(victims: Victims, reporting_url: str, trials: int, policies_dir: str) -> dict[str, Any]:
    cluster = "bench"
    collector = Collector.options(  # type: ignore[attr-defined]
        name=f"{cluster}-collector", namespace="sfa-bench").remote(reporting_url, cluster)
    await collector.start.remote()
    arrivals = Arrivals()
    bus = MqttBus(config=MqttConfig.from_url(reporting_url), client_id="bench-watch")
    await bus.start()
    await bus.subscribe(topics.system_errors(cluster), arrivals, qos=1)
    await bus.wait_connected(10)
    out: dict[str, Any] = {}
    try:
        for component in ("redis", "postgresql_cluster", "mqtt_broker"):
            settings = _settings(component, victims, reporting_url, cluster, policies_dir)
            checker = InfraChecker.options(name=f"bench-{component}", namespace="sfa-bench").remote(  # type: ignore[attr-defined]
                settings, component, supervisor=f"{cluster}-collector")
            await checker.start.remote()
            await _wait_healthy(collector, component)
            on_broker: list[float] = []
            detected: list[float] = []
            for _ in range(trials):
                await asyncio.sleep(random.uniform(0.0, INTERVAL_S))
                killed = time.time()
                victims.kill(component)
                at, doc = await arrivals.next("infrastructure_error", component, killed)
                on_broker.append(at - killed)
                detected.append(_epoch(doc["timestamp"]) - killed)
                victims.restart(component)
                await arrivals.next("infrastructure_recovered", component, at)
            await checker.stop.remote()
            ray.kill(checker)
            out[component] = {"on_broker_s": on_broker, "detected_s": detected}
            print(f"  {component}: on broker p50 {median(on_broker):.2f}s max {max(on_broker):.2f}s", flush=True)
    finally:
        await bus.stop()
        await collector.stop.remote()
        ray.kill(collector)
    return out


async def _wait_healthy(collector: Any, component: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        st = await collector.status.remote()
        if st["health"]["infrastructure"].get(component, {}).get("status") == "healthy":
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{component} never healthy")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc/PID/stat (utime, stime; psutil is not a
    dependency here)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_at_defaults(victims: Victims, reporting_url: str, window_s: float) -> dict[str, Any]:
    """CPU seconds per minute of each checker at the shipped intervals, and of an idle actor."""
    cluster = "benchcpu"
    collector = Collector.options(  # type: ignore[attr-defined]
        name=f"{cluster}-collector", namespace="sfa-bench").remote(reporting_url, cluster)
    await collector.start.remote()
    checkers: dict[str, Any] = {}
    pids: dict[str, int] = {}
    for component in ("mqtt_broker", "redis", "postgresql_cluster"):
        settings = _settings(component, victims, reporting_url, cluster, None)
        if component == "mqtt_broker":
            settings = OperateSettings(broker_url=reporting_url, cluster_id=cluster, namespace="sfa-bench")
        checkers[component] = InfraChecker.options(  # type: ignore[attr-defined]
            name=f"benchcpu-{component}", namespace="sfa-bench").remote(settings, component, supervisor=f"{cluster}-collector")
        pids[component] = (await checkers[component].start.remote())["pid"]
    idle = Idle.remote()  # type: ignore[attr-defined]
    pids["idle actor (baseline)"] = await idle.pid.remote()
    await asyncio.sleep(5.0)  # past start-up (imports, first checks)

    def cpu() -> dict[str, float]:
        return {k: process_cpu_s(p) for k, p in pids.items()}

    before, t0 = cpu(), time.monotonic()
    await asyncio.sleep(window_s)
    after, elapsed = cpu(), time.monotonic() - t0
    per_min = {k: (after[k] - before[k]) * 60.0 / elapsed for k in pids}
    checks = {c: (await h.status.remote())["checks"] for c, h in checkers.items()}
    for h in checkers.values():
        await h.stop.remote()
        ray.kill(h)
    ray.kill(idle)
    await collector.stop.remote()
    ray.kill(collector)
    return {"window_s": round(elapsed, 1), "cpu_s_per_min": per_min, "checks": checks}


async def run(trials: int, cpu_window: float) -> dict[str, Any]:
    reporting = Mosquitto()
    reporting.start()
    victims = Victims()
    policies = Path(tempfile.mkdtemp(prefix="sfa-bench-policies-"))
    (policies / "infrastructure.yaml").write_text(FAST_POLICY)
    try:
        det = await detection(victims, reporting.url, trials, str(policies))
        cpu = await cpu_at_defaults(victims, reporting.url, cpu_window)
    finally:
        victims.stop()
        if reporting.service is not None:
            reporting.service.stop()
    return {"detection": det, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10, help="kills per component (default 10)")
    parser.add_argument("--cpu-window", type=float, default=60.0, help="CPU measuring window, seconds (default 60)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ray.init(address="local", namespace="sfa-bench", include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        out = asyncio.run(run(args.trials, args.cpu_window))
    finally:
        ray.shutdown()
    det, cpu = out["detection"], out["cpu"]
    rows, results = [], {}
    for component, d in det.items():
        ob, dt = d["on_broker_s"], d["detected_s"]
        stats = {"trials": len(ob), "on_broker_p50_s": median(ob), "on_broker_p99_s": quantile(ob, 0.99),
                 "on_broker_max_s": max(ob), "detected_p50_s": median(dt), "detected_p99_s": quantile(dt, 0.99),
                 "on_broker_s": [round(x, 3) for x in ob], "detected_s": [round(x, 3) for x in dt]}
        results[component] = stats
        rows.append([component, len(ob), stats["detected_p50_s"], stats["detected_p99_s"],
                     stats["on_broker_p50_s"], stats["on_broker_p99_s"], f"<= {TARGET_S:g}"])
    print_table(f"Kill → infrastructure_error (interval {INTERVAL_S:g}s, error after {HYSTERESIS} failed checks), "
                "seconds", ["component", "trials", "detected p50", "detected p99", "on broker p50",
                            "on broker p99", "target"], rows)
    per_min = cpu["cpu_s_per_min"]
    idle = per_min["idle actor (baseline)"]
    print_table(f"Checker CPU at the default intervals (window {cpu['window_s']}s), CPU seconds per minute",
                ["actor", "checks", "cpu s/min", "net of idle actor"],
                [[k, cpu["checks"].get(k, ""), v, "" if k.startswith("idle") else v - idle] for k, v in per_min.items()])
    worst = max(r["on_broker_p99_s"] for r in results.values())
    write_result(
        "infra_detection",
        results={**results, "cpu": cpu, "interval_s": INTERVAL_S, "failures_before_error": HYSTERESIS},
        baseline={"idle_actor_cpu_s_per_min": idle,
                  "bound_s": TARGET_S, "bound": "interval x failures_before_error + 1 s"},
        ratio=round(worst / TARGET_S, 3),
        target=f"p99 kill → infrastructure_error on the broker <= {TARGET_S:g} s for redis, postgresql, broker",
        met=worst <= TARGET_S,
    )


if __name__ == "__main__":
    main()
