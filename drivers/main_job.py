"""``python -m drivers.main_job`` — what ``make run`` does: sfa-ops watching a sample platform
while scripted faults hit it, with a live view and a summary.

1. starts an embedded mosquitto (a child process on a free loopback port);
2. starts sfa-ops (``python -m drivers.operate``, a child process running its own local Ray) with
   the short demo policies of ``drivers/demo_policies/`` and a fresh SQLite store, and waits for
   its ``sfa-ops: operating`` line — meanwhile the sample platform's 8 instance processes start;
3. runs the simulator (``drivers.simulate``) with the scenario (``default``: every fault once in
   ~90 s), showing every ~2 s each service's status, breaker, error rate, p95 and calls/s from
   the retained ``system/{cluster}/health`` and ``…/circuit-breaker/+``, and the last events;
4. prints the summary — each fault, when sfa-ops detected it, what it published, alerts, breaker
   transitions — and saves it as ``var/run-summary.json`` and ``var/run-summary.md``.

Exit status 0 when the run happened (missed expectations are reported, not fatal); 1 when it
could not run; 2 for a bad option. Every child process is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.mqtt.signing import SigningKeyError, ensure_key_pair, public_key_path
from adapters.runtime.processes import ChildService, ProcessError, start_mosquitto
from adapters.runtime.urls import redact_url
from drivers.broker_acl import BrokerLogins, credentials, write_mosquitto
from drivers.options import (
    LOG_OPTIONS,
    Option,
    OptionError,
    configure_logs,
    fail,
    listen_address,
    resolve,
    seconds,
)
from drivers.sample_platform import SERVICES
from drivers.scenarios import SCENARIOS
from drivers.simulate import Simulation, format_summary
from drivers.simulate_platform import REPO, simulator_policy
from drivers.simulate_recorder import Recorder
from policies.security.broker_acl import SFA_OPS
from protocol.names import check_segment

PROG = "python -m drivers.main_job"
OPERATING = "sfa-ops: operating"

OPTIONS = [
    Option("cluster-id", "cluster id of the system/{cluster}/... topics", default="local"),
    Option("scenario", f"scripted faults: {', '.join(SCENARIOS)}", default="default"),
    Option("rate", "calls per second, all services together", default=40.0, convert=float),
    Option("duration", "run the scenario this long (default: its length)", convert=seconds),
    Option("policies", "policy override directory for sfa-ops", default=str(REPO / "drivers" / "demo_policies"),
           metavar="DIR"),
    Option("var", "where the store, logs and summary go", default="var", metavar="DIR"),
    Option("startup-timeout", "how long sfa-ops may take to start (Ray included)", default=180.0, convert=seconds),
    Option("warmup", "with traffic running, wait up to this long for sfa-ops to list every service "
           "before the first fault (its actors start on first sight)", default=60.0, convert=seconds),
    Option("live-every", "refresh the live view this often (0: no live view)", default=2.0, convert=seconds),
    Option("http", "serve sfa-ops' live status page and /metrics here (0: off)", default="127.0.0.1:8765",
           metavar="HOST:PORT"),
    Option("no-broker-auth", "run the embedded broker open to anyone (default: passwords and the ACLs of "
           "policies/security/broker_acl.py; sfa-ops and the sample platform log in as their principals)", flag=True),
    *LOG_OPTIONS,  # this process's, and sfa-ops' (its log: {var}/run/operate.log)
]


class OperateProcess:
    """``python -m drivers.operate`` as a child: its output to a log, ``ready`` once operating."""

    def __init__(self, *, argv: list[str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.tail: deque[str] = deque(maxlen=30)
        self.ready = asyncio.Event()
        self.ready_after: float | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, env: dict[str, str] | None = None) -> None:
        """``env``: added to ours (the broker login, which must not go on a command line)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Own session: a terminal Ctrl-C reaches only us, and we stop it in order (Ray included).
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True, env={**os.environ, **(env or {})})
        self._reader = asyncio.create_task(self._read(time.monotonic()), name="operate-output")

    async def _read(self, started: float) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "w", encoding="utf-8") as log:
            async for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                log.write(line + "\n")
                log.flush()
                self.tail.append(line)
                if line.startswith(OPERATING) and not self.ready.is_set():
                    self.ready_after = round(time.monotonic() - started, 2)
                    self.ready.set()

    async def wait_ready(self, timeout: float) -> None:
        """Until the operating line; raises RuntimeError if it exits or times out first."""
        assert self.proc is not None
        exited = asyncio.create_task(self.proc.wait())
        ready = asyncio.create_task(self.ready.wait())
        done, _ = await asyncio.wait({exited, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for t in (exited, ready):
            if t not in done:
                t.cancel()
        if ready not in done:
            why = f"exited with {self.proc.returncode}" if exited in done else f"not operating after {timeout:g}s"
            raise RuntimeError(f"sfa-ops {why}; last output:\n  " + "\n  ".join(self.tail))

    async def stop(self, grace: float = 40.0) -> int | None:
        """SIGTERM (it flushes and shuts its Ray down), then SIGKILL its process group."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        # Whatever of its session is left now is an orphan (a SIGTERM during ray.init leaves
        # Ray's agents behind): it started in a session of its own, whose id is its pid.
        left = kill_session(proc.pid)
        if left:
            print(f"main_job: killed {left} leftover process(es) of sfa-ops' session", flush=True)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        return proc.returncode


def kill_session(sid: int) -> int:
    """SIGKILL every process still in session ``sid`` (Linux /proc); how many there were."""
    killed = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # Fields after the ")" that closes the command name: state ppid pgrp session …
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != sid or fields[0] == "Z":
                continue
            os.kill(int(stat.parent.name), signal.SIGKILL)
            killed += 1
        except (OSError, ValueError, IndexError):
            continue
    return killed


# ------------------------------------------------------------------ live view


def live_rows(rec: Recorder) -> list[list[str]]:
    """One row per service from the retained health summary and breaker states."""
    services = (rec.health or {}).get("services") or {}
    rows = []
    for name in sorted(set(services) | set(rec.breakers)):
        s = services.get(name, {})
        breaker = rec.breakers.get(name, {}).get("state") or s.get("breaker", "?")
        p95 = s.get("p95Ms")
        rows.append([name, str(s.get("status", "?")), str(breaker), f"{s.get('errorRate', 0):.1%}",
                     "-" if p95 is None else f"{p95:.0f}ms", f"{s.get('callsPerSecond', 0):.1f}"])
    return rows


def event_line(at: float, topic: str, p: dict[str, Any]) -> str:
    if topic == "circuit-breaker":
        what = f"breaker {p.get('service')} {p.get('from')} → {p.get('to')}"
    elif topic == "errors":
        what = f"{p.get('type')} {p.get('service') or p.get('originService') or ''}".rstrip()
        if p.get("type") == "cascading_failure_prevented":
            what += f" → opened {p.get('affectedServices')}"
        elif p.get("reason"):
            what += f" ({p.get('reason')})"
    elif topic == "alerts":
        labels = p.get("labels") or {}
        what = f"alert {p.get('status', '')} {labels.get('alertname', p.get('type', ''))} {labels.get('service', '')}"
    else:
        what = str(p.get("type", topic))
    return f"+{at:5.1f}s {topic:15} {what}"


def render(rec: Recorder, start: float, now: float, *, tty: bool, steps: Sequence[str]) -> str:
    rows = live_rows(rec)
    observed = (rec.health or {}).get("observed", {})
    if not tty:
        cells = "; ".join(f"{r[0]}={r[1]}/{r[2]} err {r[3]} p95 {r[4]}" for r in rows) or "no health yet"
        return f"[+{now - start:5.1f}s] {cells}"
    head = ["service", "status", "breaker", "errors", "p95", "calls/s"]
    widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(len(head))]
    out = [f"sfa-ops live view  +{now - start:.0f}s   health: {(rec.health or {}).get('status', '?')}   "
           f"observed: {observed}", ""]
    for r in [head, *rows]:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    out += ["", "last events:"]
    out += [event_line(o.at - start, o.topic, dict(o.payload)) for o in list(rec.events)[-6:]] or ["  (none yet)"]
    out += ["", "faults injected:"] + [f"  {s}" for s in steps[-4:]]
    return "\x1b[H\x1b[2J" + "\n".join(out)


async def live_view(sim: Simulation, every: float, steps: list[str]) -> None:
    """Print the view every ``every`` s; times are offsets from the scenario's start."""
    rec = sim.recorder
    tty = sys.stdout.isatty()
    shown = 0
    while True:
        await asyncio.sleep(every)
        start = sim.started_at or time.time()
        print(render(rec, start, time.time(), tty=tty, steps=steps), flush=True)
        if not tty:  # events as plain lines, each once
            events = list(rec.observed)
            for o in events[shown:]:
                if o.topic in ("errors", "circuit-breaker", "emergency"):
                    print("  " + event_line(o.at - start, o.topic, dict(o.payload)), flush=True)
            shown = len(events)


# ------------------------------------------------------------------ summary


def markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown report."""
    e = summary["expectations"]
    out = [f"# sfa-ops run: scenario `{summary['scenario']}`", "",
           f"{e['met']}/{e['total']} expectations met; {summary['durationS']:.0f} s of traffic at "
           f"{summary['traffic']['rate']:g} calls/s; sfa-ops ready after {summary.get('operateReadyAfterS')} s.", "",
           "| at | fault | expectation | met | detected after | evidence |", "|---|---|---|---|---|---|"]
    for f in summary["faults"]:
        for v in f["verdicts"] or [{"label": "-", "met": None, "latency_s": None, "evidence": None}]:
            met = {True: "yes", False: "**NO**", None: "-"}[v["met"]]
            lat = "-" if v["latency_s"] is None else f"{v['latency_s']:.2f} s"
            ev = json.dumps(v["evidence"]) if v["evidence"] else ""
            out.append(f"| +{f['offset']:.1f} s | {f['action']} | {v['label']} | {met} | {lat} | `{ev}` |")
    out += ["", "## Published by sfa-ops", "", "| message type | count |", "|---|---|"]
    out += [f"| {k} | {n} |" for k, n in summary["published"].items()]
    out += ["", f"Alerts on system/{summary['cluster']}/alerts: {summary['alerts']}", "",
            "## Breaker transitions", "", "| at | service | from | to | reason |", "|---|---|---|---|---|"]
    out += [f"| +{t['at']:.1f} s | {t['service']} | {t['from']} | {t['to']} | {t['reason']} |"
            for t in summary["breakerTransitions"]]
    out += ["", "## Traffic outcomes (client side)", "", "| service | outcomes |", "|---|---|"]
    out += [f"| {s} | {c} |" for s, c in summary["traffic"]["byService"].items()]
    return "\n".join(out) + "\n"


def write_summary(summary: dict[str, Any], var: Path) -> tuple[Path, Path]:
    var.mkdir(parents=True, exist_ok=True)
    j, m = var / "run-summary.json", var / "run-summary.md"
    j.write_text(json.dumps(summary, indent=2, default=str))
    m.write_text(markdown(summary))
    return j, m


# ------------------------------------------------------------------ the job


async def run(opts: dict[str, Any]) -> int:
    var = Path(opts["var"]).resolve()
    rundir = var / "run"
    rundir.mkdir(parents=True, exist_ok=True)
    db = rundir / "sfa-ops.db"
    for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        p.unlink(missing_ok=True)  # a fresh store: no breaker or outbox restored from an earlier run
    scenario = SCENARIOS[opts["scenario"]]
    duration = scenario.length if opts["duration"] is None else opts["duration"]
    broker: ChildService | None = None
    operate: OperateProcess | None = None
    sim: Simulation | None = None
    steps: list[str] = []
    viewer: asyncio.Task[None] | None = None
    try:
        # sfa-ops signs its system messages; SDK clients verify with the .pub beside the key.
        key = var / "keys" / "system-signing.key"
        signer = ensure_key_pair(key)
        print(f"main_job: system messages signed with key {signer.key_id}; public key {public_key_path(key)}",
              flush=True)
        logins: BrokerLogins | None = None
        auth_files: dict[str, Path] = {}
        if not opts["no_broker_auth"]:
            # Credentials and ACLs from the one policy, in var/broker-auth (passwords 0600, never printed).
            policy = simulator_policy(opts["cluster_id"])
            files = write_mosquitto(policy, var / "broker-auth")
            logins = BrokerLogins(credentials(policy, var / "broker-auth"))
            auth_files = {"password_file": files[0], "acl_file": files[1]}
        broker = await asyncio.to_thread(lambda: start_mosquitto(password_file=auth_files.get("password_file"),
                                                                 acl_file=auth_files.get("acl_file")))
        print(f"main_job: mosquitto at {redact_url(broker.url)}; starting sfa-ops (Ray) and the sample platform", flush=True)
        operate = OperateProcess(argv=[
            sys.executable, "-m", "drivers.operate", "--broker", broker.url, "--cluster-id", opts["cluster_id"],
            "--store", f"sqlite:///{db}", "--policies", opts["policies"], "--status-every", "5s",
            "--signing-key", str(key), "--log-level", opts["log_level"], "--log-format", opts["log_format"],
            *(("--http", opts["http"]) if opts["http"] not in ("0", "") else ()),
            # Monitors for the sample services start with sfa-ops, not on first sight mid-run.
            *(a for s in SERVICES for a in ("--services", s)),
            # A safety net: it stops by itself should we die without stopping it.
            "--duration", f"{opts['startup_timeout'] + duration + 120:.0f}s"], log_path=rundir / "operate.log")
        await operate.start(env=logins.env(SFA_OPS) if logins else None)
        sim = Simulation(broker=broker.url, cluster=opts["cluster_id"], rate=opts["rate"], scenario=scenario,
                         duration=duration, log_dir=rundir / "instances", on_step=steps.append, logins=logins)
        await asyncio.gather(sim.start(timeout=120), operate.wait_ready(opts["startup_timeout"]))
        print(f"main_job: sfa-ops operating after {operate.ready_after}s; scenario {scenario.name} for "
              f"{duration:g}s at {opts['rate']:g} calls/s", flush=True)
        if opts["http"] not in ("0", ""):
            print(f"main_job: live status page http://{opts['http']}/ (also /metrics, /status.json)", flush=True)
        if opts["live_every"] > 0:
            viewer = asyncio.create_task(live_view(sim, opts["live_every"], steps), name="live-view")
        summary = await sim.run(warmup=opts["warmup"])
    except (RuntimeError, ProcessError, OSError, SigningKeyError) as exc:
        print(f"main_job: could not run: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if viewer is not None:
            viewer.cancel()
        if sim is not None:
            with contextlib.suppress(Exception):
                await sim.stop()
        if operate is not None:
            code = await operate.stop()
            print(f"main_job: sfa-ops stopped (exit {code}); its log: {operate.log_path}", flush=True)
        if broker is not None:
            broker.stop()
    summary["operateReadyAfterS"] = operate.ready_after if operate else None
    summary["operateLog"] = str(operate.log_path) if operate else None
    summary["operateLastLines"] = list(operate.tail)[-5:] if operate else []
    paths = write_summary(summary, var)
    print(format_summary(summary))
    print(f"main_job: summary saved to {paths[0]} and {paths[1]}", flush=True)
    return 0


def check_listen_free(value: str) -> None:
    """``--http``: a valid HOST:PORT that nothing else listens on (operate would fail to start)."""
    try:
        host, port = listen_address(value)
    except ValueError as exc:
        raise OptionError(f"--http {value!r}: {exc}; give HOST:PORT, or 0 to turn the page off") from exc
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OptionError(f"--http {value}: cannot listen there ({exc.strerror}); "
                              "give another HOST:PORT, or 0 to turn the page off") from exc


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = resolve(OPTIONS, argv, prog=PROG, description=__doc__ or "")
        configure_logs(opts)
        if opts["scenario"] not in SCENARIOS:
            raise OptionError(f"--scenario {opts['scenario']!r}: one of {', '.join(SCENARIOS)}")
        if not 0 < opts["rate"] <= 10_000:
            raise OptionError(f"--rate {opts['rate']}: a number of calls/s in (0, 10000]")
        if not Path(opts["policies"]).is_dir():
            raise OptionError(f"--policies {opts['policies']}: not a directory")
        check_segment(opts["cluster_id"], field="--cluster-id", max_len=63)
        if opts["http"] not in ("0", ""):
            check_listen_free(opts["http"])
    except (OptionError, ValueError) as exc:
        fail(PROG, str(exc))

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        # SIGTERM cancels like Ctrl-C does, so the finally blocks stop every child.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run(opts)

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("main_job: interrupted; children stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
