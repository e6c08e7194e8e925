"""``python -m drivers.simulate`` — the sample platform under traffic, with scripted faults.

Starts every instance of the sample services (``drivers.sample_platform``, one OS process each),
sends ``--rate`` calls/s spread over their functions, runs a scenario (``drivers.scenarios``),
records every message sfa-ops publishes on ``system/{cluster}/#``, and prints (and with
``--json-summary`` writes) a summary: per fault, when it was injected, the first matching sfa-ops
message, the detection latency and whether the expectation was met; counts of what was published;
breaker transitions; the traffic's outcomes per service and code.

It does not start sfa-ops: run ``python -m drivers.operate`` against the same broker (or use
``python -m drivers.main_job``, which starts both).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from adapters.mqtt.bus import MqttBus, MqttConfig, MqttConfigError
from drivers.broker_acl import BrokerLogins
from drivers.options import LOG_OPTIONS, Option, OptionError, configure_logs, fail, resolve, seconds
from drivers.sample_platform import SERVICES, FaultMode, control_topic
from drivers.scenarios import SCENARIOS, Scenario, StepReport, evaluate, run_scenario
from drivers.simulate_platform import INSTANCES, REPO, SIMULATOR, PlatformProcesses
from drivers.simulate_recorder import Recorder
from drivers.simulate_traffic import CALL_TIMEOUT, Traffic
from protocol.names import check_segment
from sdk.client import ServiceClient

PROG = "python -m drivers.simulate"


# ------------------------------------------------------------------ one simulation


def report_dict(reports: Sequence[StepReport]) -> list[dict[str, Any]]:
    return [asdict(r) for r in reports]


class Simulation:
    """Platform + traffic + recorder + scenario, on one bus; :meth:`run` returns the summary."""

    def __init__(self, *, broker: str, cluster: str, rate: float, scenario: Scenario,
                 duration: float | None = None, log_dir: Path = REPO / "var" / "sim", seed: int | None = None,
                 on_step: Callable[[str], None] | None = None, logins: BrokerLogins | None = None) -> None:
        """``logins``: the broker checks passwords and ACLs (``simulator_policy``); everyone logs in."""
        self.cluster = cluster
        self.scenario = scenario
        self.duration = scenario.length if duration is None else duration
        login = logins.config(SIMULATOR) if logins else {}
        self.bus = MqttBus(config=MqttConfig.from_url(broker, **login), client_id=f"simulator-{cluster}")
        self.platform = PlatformProcesses(broker=broker, cluster=cluster, log_dir=log_dir, bus=self.bus,
                                          logins=logins)
        self.recorder = Recorder(cluster=cluster)
        # Session id = client id: the broker ACL lets a client read its own session's answers only.
        self.client = ServiceClient(self.bus, session_id=self.bus.client_id)
        self.traffic = Traffic(client=self.client, rate=rate, seed=seed)
        self.on_step = on_step
        self.started_at: float | None = None
        self.warmup_s = 0.0
        self.ready_before_faults = False

    async def start(self, *, timeout: float = 60.0) -> None:
        """Spawn the instances and wait until every one announced itself online."""
        await self.bus.start()
        await self.bus.wait_connected(10)
        await self.recorder.start(self.bus)
        await self.client.start()
        for s in SERVICES:
            await self.platform.set_mode(s, FaultMode())
        self.platform.start_all()
        pairs = [(s, i) for s in SERVICES for i in INSTANCES]
        try:
            await self.recorder.wait_presence(pairs, "online", timeout)
        except TimeoutError:
            missing = [p for p in pairs if self.recorder.presence.get(p) != "online"]
            raise RuntimeError(f"instances not online after {timeout:g}s: {missing}; logs in "
                               f"{self.platform.log_dir}") from None

    def sfa_ops_sees_all(self) -> bool:
        """Whether sfa-ops' retained health lists every sample service (its pipeline is live)."""
        listed = (self.recorder.health or {}).get("services") or {}
        return all(s in listed for s in SERVICES)

    async def run(self, *, warmup: float = 0.0) -> dict[str, Any]:
        """Traffic, then (after up to ``warmup`` s until sfa-ops lists every service) the scenario
        for ``duration`` s; returns the summary."""
        stop = asyncio.Event()
        traffic = asyncio.create_task(self.traffic.run(stop), name="traffic")
        t0 = time.monotonic()
        while warmup > 0 and not self.sfa_ops_sees_all() and time.monotonic() - t0 < warmup:
            await asyncio.sleep(0.25)
        self.warmup_s = round(time.monotonic() - t0, 2)
        self.ready_before_faults = self.sfa_ops_sees_all()
        start = time.time()
        self.started_at = start

        def stepped(step: Any, inj: Any) -> None:
            if self.on_step is not None:
                self.on_step(f"+{inj.offset:5.1f}s  {step.action.describe()}")

        try:
            injections = await run_scenario(self.scenario, self.platform, on_step=stepped, length=self.duration)
        finally:
            stop.set()
            await traffic
        await self.traffic.drain(CALL_TIMEOUT + 1.0)
        end = time.time()
        reports = evaluate(self.scenario, injections, self.recorder.observed, end=end)
        return self.summary(start, end, reports)

    def summary(self, start: float, end: float, reports: Sequence[StepReport]) -> dict[str, Any]:
        verdicts = [v for r in reports for v in r.verdicts]
        transitions = [{"at": round(o.at - start, 3), "service": o.payload.get("service"),
                        "from": o.payload.get("from"), "to": o.payload.get("to"), "reason": o.payload.get("reason")}
                       for o in self.recorder.observed if o.topic == "circuit-breaker"]
        return {
            "scenario": self.scenario.name,
            "cluster": self.cluster,
            "startedAt": start,
            "endedAt": end,
            "durationS": round(end - start, 3),
            "warmupS": self.warmup_s,
            "sfaOpsListedEveryServiceBeforeFaults": self.ready_before_faults,
            "faults": report_dict(reports),
            "expectations": {"met": sum(v.met for v in verdicts), "total": len(verdicts)},
            "published": self.recorder.published_counts(),
            "alerts": sum(1 for o in self.recorder.observed if o.topic == "alerts"),
            "breakerTransitions": transitions,
            "traffic": self.traffic.summary(),
            "malformedSent": self.platform.malformed_sent,
            "finalHealth": self.recorder.health,
        }

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            for s in SERVICES:  # leave no retained fault mode behind on a shared broker
                await self.bus.publish(control_topic(self.cluster, s), b"", qos=1, retain=True)
        await asyncio.to_thread(self.platform.stop_all)
        await self.client.close()
        await self.bus.stop(flush_timeout=2.0)


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as plain text lines (faults and verdicts, counts)."""
    lines = [f"scenario {summary['scenario']}: {summary['expectations']['met']}/"
             f"{summary['expectations']['total']} expectations met in {summary['durationS']:.0f}s"]
    for f in summary["faults"]:
        lines.append(f"  +{f['offset']:5.1f}s  {f['action']}")
        for v in f["verdicts"]:
            mark = "ok  " if v["met"] else "MISS"
            when = f"after {v['latency_s']:.2f}s" if v["latency_s"] is not None else ""
            if v["absent"]:
                when = "none seen" if v["met"] else f"but seen {when}: {v['evidence']}"
            lines.append(f"           [{mark}] {v['label']} {when}".rstrip())
    lines.append(f"  published: {summary['published']}")
    lines.append(f"  alerts: {summary['alerts']}; breaker transitions: {len(summary['breakerTransitions'])}")
    for s, c in summary["traffic"]["byService"].items():
        lines.append(f"  traffic {s}: {c}")
    return "\n".join(lines)


# ------------------------------------------------------------------ CLI

OPTIONS = [
    Option("broker", "MQTT broker URL (required), mqtt://host:port", metavar="URL"),
    Option("cluster-id", "cluster id of the system/{cluster}/... topics", default="local"),
    Option("rate", "calls per second, all services together", default=40.0, convert=float),
    Option("duration", "run this long (default: the scenario's length; 60s for 'none')", convert=seconds),
    Option("scenario", f"scripted faults: {', '.join(SCENARIOS)}", default="default"),
    Option("list-scenarios", "list the scenarios and exit", flag=True),
    Option("json-summary", "also write the summary as JSON to this file", metavar="FILE"),
    Option("seed", "random seed of the traffic", convert=int),
    Option("warmup", "before the first fault, wait up to this long with traffic running until sfa-ops' "
           "health lists every service (0: don't wait)", default=30.0, convert=seconds),
    *LOG_OPTIONS,
]


def check_options(opts: dict[str, Any]) -> None:
    """Raises OptionError for a bad value."""
    if not opts["broker"]:
        raise OptionError("--broker is required (e.g. mqtt://127.0.0.1:1883)")
    try:
        MqttConfig.from_url(opts["broker"])
    except MqttConfigError as exc:
        raise OptionError(f"--broker: {exc}") from exc
    if opts["scenario"] not in SCENARIOS:
        raise OptionError(f"--scenario {opts['scenario']!r}: one of {', '.join(SCENARIOS)}")
    if not 0 < opts["rate"] <= 10_000:
        raise OptionError(f"--rate {opts['rate']}: a number of calls/s in (0, 10000]")
    try:
        check_segment(opts["cluster_id"], field="--cluster-id", max_len=63)
    except ValueError as exc:
        raise OptionError(str(exc)) from exc


async def simulate(opts: dict[str, Any]) -> dict[str, Any]:
    sim = Simulation(broker=opts["broker"], cluster=opts["cluster_id"], rate=opts["rate"],
                     scenario=SCENARIOS[opts["scenario"]], duration=opts["duration"], seed=opts["seed"],
                     on_step=lambda line: print(f"simulate: {line}", flush=True))
    try:
        await sim.start()
        print(f"simulate: {len(SERVICES) * len(INSTANCES)} instances online; scenario {opts['scenario']} "
              f"for {sim.duration:g}s at {opts['rate']:g} calls/s", flush=True)
        return await sim.run(warmup=opts["warmup"])
    finally:
        await sim.stop()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = resolve(OPTIONS, argv, prog=PROG, description=__doc__ or "")
        configure_logs(opts)
        if opts["list_scenarios"]:
            for s in SCENARIOS.values():
                print(f"{s.name:12} {s.length:5.0f}s  {s.description}")
            return 0
        check_options(opts)
    except OptionError as exc:
        fail(PROG, str(exc))
    summary = asyncio.run(simulate(opts))
    print(format_summary(summary))
    if opts["json_summary"]:
        path = Path(opts["json_summary"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
