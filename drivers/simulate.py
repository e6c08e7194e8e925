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
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from adapters.mqtt.bus import Message, MqttBus, MqttConfig, MqttConfigError
from drivers.broker_acl import BrokerLogins
from drivers.options import LOG_OPTIONS, Option, OptionError, configure_logs, fail, resolve, seconds
from drivers.sample_platform import POOL_ORDERS, POOL_USERS, SERVICES, SKUS, FaultMode, control_topic
from drivers.scenarios import SCENARIOS, Observed, Scenario, StepReport, evaluate, run_scenario
from policies.security.broker_acl import BrokerPolicy, Grant, Principal, build_policy, service_principal
from protocol.names import check_segment
from sdk.client import ServiceClient
from sdk.errors import ServiceTimeoutException

PROG = "python -m drivers.simulate"
REPO = Path(__file__).resolve().parents[1]
INSTANCES = ("i1", "i2")
SIMULATOR = "simulator"  # its broker principal
CALL_TIMEOUT = 8.0  # above the slow fault's 6 s, so a slow answer is seen as slow, not lost
MAX_IN_FLIGHT = 2000


# ------------------------------------------------------------------ instance processes


class PlatformProcesses:
    """Every instance of every sample service as a child process; crash = SIGKILL."""

    def __init__(self, *, broker: str, cluster: str, log_dir: Path, bus: MqttBus,
                 services: Sequence[str] = SERVICES, instances: Sequence[str] = INSTANCES,
                 logins: BrokerLogins | None = None) -> None:
        self.broker = broker
        self.logins = logins
        self.cluster = cluster
        self.log_dir = log_dir
        self.bus = bus
        self.services = tuple(services)
        self.instances = tuple(instances)
        self.procs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self.malformed_sent = 0

    def spawn(self, service: str, instance: str) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "drivers.sample_platform", "--service", service, "--instance", instance,
                "--broker", self.broker, "--cluster-id", self.cluster]
        # With broker auth each instance logs in as its service's principal (password via env).
        env = {**os.environ, **self.logins.env(service_principal(service))} if self.logins else None
        with open(self.log_dir / f"{service}-{instance}.log", "ab") as log:
            proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        self.procs[(service, instance)] = proc
        return proc

    def start_all(self) -> None:
        for s in self.services:
            for i in self.instances:
                self.spawn(s, i)

    def kill(self, service: str, instance: str) -> None:
        """SIGKILL one instance, as a crash would (its Last Will fires at the broker)."""
        proc = self.procs.get((service, instance))
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    async def crash(self, service: str) -> None:
        for i in self.instances:
            self.kill(service, i)

    async def restart(self, service: str) -> None:
        for i in self.instances:
            proc = self.procs.get((service, i))
            if proc is None or proc.poll() is not None:
                self.spawn(service, i)

    async def set_mode(self, service: str, mode: FaultMode) -> None:
        # Retained, so an instance restarted later behaves like its siblings.
        await self.bus.publish(control_topic(self.cluster, service), mode.to_wire(), qos=1, retain=True)

    async def send_malformed(self, service: str) -> int:
        """Non-JSON, non-objects, calls without method/id, deep nesting, and oversized payloads."""
        topic = f"service/{service}"
        junk: list[bytes] = [b"not json at all", b"{\"jsonrpc\": \"2.0\", \"method\": ", b"\xff\xfe\x00garbage",
                             b"[1, 2, 3]", b"\"a string\"", b"42", b"{\"jsonrpc\": \"2.0\"}",
                             b"{\"id\": 1, \"params\": {}}", b"{\"method\": 7, \"id\": \"x\"}",
                             b"[" * 5000 + b"]" * 5000, b"{\"a\":" * 3000 + b"1" + b"}" * 3000,
                             b"{\"junk\": \"" + b"x" * 300_000 + b"\"}"]
        for payload in junk:
            await self.bus.publish(topic, payload, qos=1)
        self.malformed_sent += len(junk)
        return len(junk)

    def alive(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (s, _i), p in self.procs.items():
            out[s] = out.get(s, 0) + (1 if p.poll() is None else 0)
        return out

    def stop_all(self, timeout: float = 5.0) -> None:
        """SIGTERM every instance (graceful: presence offline), SIGKILL what is left after ``timeout``."""
        live = [p for p in self.procs.values() if p.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        deadline = time.monotonic() + timeout
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


def simulator_policy(cluster: str) -> BrokerPolicy:
    """The platform's broker policy plus the simulator: it calls services, injects malformed calls,
    switches fault modes on ``sim/{cluster}/control/+`` (which every instance reads) and watches
    ``system/{cluster}/#``."""
    control = control_topic(cluster, SERVICES[0]).rsplit("/", 1)[0] + "/+"
    sim = Principal(SIMULATOR, "tool", (Grant("publish", "service/+"), Grant("publish", control),
                                        Grant("subscribe", control), Grant("subscribe", f"system/{cluster}/#")))
    return build_policy(cluster, SERVICES, tools=(sim,), everyone=(Grant("subscribe", control),))


# ------------------------------------------------------------------ recording sfa-ops


class Recorder:
    """Every message on ``system/{cluster}/#`` with its arrival time; the latest retained states."""

    def __init__(self, *, cluster: str, clock: Callable[[], float] = time.time) -> None:
        self.prefix = f"system/{cluster}/"
        self.clock = clock
        self.observed: list[Observed] = []
        self.health: dict[str, Any] | None = None
        self.breakers: dict[str, dict[str, Any]] = {}
        self.presence: dict[tuple[str, str], str] = {}
        self.events: deque[Observed] = deque(maxlen=50)
        self.unparsable = 0
        self._changed = asyncio.Event()

    async def start(self, bus: MqttBus) -> None:
        await bus.subscribe(self.prefix + "#", self.on_message, qos=1)

    def on_message(self, msg: Message) -> None:
        rest = msg.topic[len(self.prefix):]
        try:
            doc = orjson.loads(msg.payload) if msg.payload else {}
        except orjson.JSONDecodeError:
            self.unparsable += 1
            return
        if not isinstance(doc, dict):
            self.unparsable += 1
            return
        if rest.startswith("presence/"):
            parts = rest.split("/")
            if len(parts) == 3:
                self.presence[(parts[1], parts[2])] = str(doc.get("status", "offline"))
                self._changed.set()
            return  # published by the instances, not by sfa-ops
        if rest == "health":
            self.health = doc
        elif rest.startswith("circuit-breaker/"):
            self.breakers[rest.split("/", 1)[1]] = doc
        if msg.retain:
            return  # a state from before we subscribed, not a reaction to this run
        obs = Observed(self.clock(), rest, doc)
        self.observed.append(obs)
        if rest in ("errors", "circuit-breaker", "alerts", "emergency", "incidents"):
            self.events.append(obs)

    async def wait_presence(self, pairs: Sequence[tuple[str, str]], status: str, timeout: float) -> None:
        """Until every (service, instance) has announced ``status``; raises TimeoutError."""
        async with asyncio.timeout(timeout):
            while any(self.presence.get(p) != status for p in pairs):
                self._changed.clear()
                await self._changed.wait()

    def published_counts(self) -> dict[str, int]:
        """Messages per type (the payload's ``type``, else the topic)."""
        c = Counter(str(o.payload.get("type") or o.topic) for o in self.observed)
        return dict(sorted(c.items()))


# ------------------------------------------------------------------ traffic


def _calls() -> list[tuple[str, str, Callable[[random.Random], dict[str, Any]]]]:
    def user(r: random.Random) -> str:
        return r.choice(POOL_USERS)

    return [
        ("UserManagement", "createUser", lambda r: {"email": f"{r.randrange(10**6)}@example.com", "name": "Sim"}),
        ("UserManagement", "getUser", lambda r: {"userId": user(r)}),
        ("UserManagement", "updateUser", lambda r: {"userId": user(r), "name": "Renamed"}),
        ("UserManagement", "deleteUser", lambda r: {"userId": f"tmp-{r.randrange(10**6)}"}),
        ("OrderManagement", "createOrder", lambda r: {"userId": user(r), "items": [{"sku": r.choice(SKUS), "qty": 1}]}),
        ("OrderManagement", "getOrder", lambda r: {"orderId": r.choice(POOL_ORDERS)}),
        ("Inventory", "reserve", lambda r: {"sku": r.choice(SKUS), "quantity": 1}),
        ("Inventory", "release", lambda r: {"sku": r.choice(SKUS), "quantity": 1}),
        ("Inventory", "getStock", lambda r: {"sku": r.choice(SKUS)}),
        ("Payments", "charge", lambda r: {"userId": user(r), "amount": round(r.uniform(1, 100), 2)}),
        ("Payments", "refund", lambda r: {"paymentId": f"p-{r.randrange(10**6)}", "amount": 1.0}),
    ]


class Traffic:
    """``rate`` calls/s, the same share for each service, counted by service and outcome code."""

    def __init__(self, *, client: ServiceClient, rate: float, seed: int | None = None) -> None:
        self.client = client
        self.rate = rate
        self.rng = random.Random(seed)
        by_service: dict[str, list[tuple[str, str, Callable[[random.Random], dict[str, Any]]]]] = {}
        for c in _calls():
            by_service.setdefault(c[0], []).append(c)
        self.by_service = by_service
        self.outcomes: dict[str, Counter[str]] = {s: Counter() for s in by_service}
        self.sent = 0
        self.skipped = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Send calls at the set rate until ``stop`` is set."""
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
            if stop.is_set():
                break
            next_at += interval
            if len(self._tasks) >= MAX_IN_FLIGHT:
                self.skipped += 1
                continue
            service = self.rng.choice(list(self.by_service))
            _svc, method, params = self.rng.choice(self.by_service[service])
            task = asyncio.create_task(self._one(service, method, params(self.rng)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _one(self, service: str, method: str, params: dict[str, Any]) -> None:
        self.sent += 1
        uc = {"userId": self.rng.choice(POOL_USERS), "roles": ["customer"]}
        try:
            doc = await self.client.call_raw(service, method, params, timeout=CALL_TIMEOUT, user_context=uc)
        except ServiceTimeoutException:
            self.outcomes[service]["no_answer"] += 1
            return
        err = doc.get("error")
        code = str(err.get("code")) if isinstance(err, dict) else "ok"
        self.outcomes[service][code] += 1

    async def drain(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def summary(self) -> dict[str, Any]:
        return {"sent": self.sent, "skipped": self.skipped, "rate": self.rate,
                "byService": {s: dict(sorted(c.items())) for s, c in self.outcomes.items()}}


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
