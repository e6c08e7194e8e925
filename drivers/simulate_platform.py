"""The simulator's sample platform: every instance of every sample service
(``drivers.sample_platform``) as an OS process it can crash, restart, switch fault modes on and
feed malformed calls, and the broker policy that lets the simulator do so."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from adapters.mqtt.bus import MqttBus
from drivers.broker_acl import BrokerLogins
from drivers.sample_platform import SERVICES, FaultMode, control_topic
from policies.security.broker_acl import BrokerPolicy, Grant, Principal, build_policy, service_principal

REPO = Path(__file__).resolve().parents[1]
INSTANCES = ("i1", "i2")
SIMULATOR = "simulator"  # its broker principal


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
