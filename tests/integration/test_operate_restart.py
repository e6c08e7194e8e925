"""Restart of operate itself (kill -9 of the whole process group, its local Ray included): breaker
states, firing alerts and the alert notification log come back from the store; no alert is
repeated and none is lost. operate runs as a real process here; the webhook
receiver is a real local HTTP server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.mqtt.bus import MqttBus, MqttConfig
from policies.security.broker_acl import SFA_OPS
from sdk import ServiceClient
from sdk.errors import ServiceException, ServiceTemporarilyUnavailableException
from tests.support.broker import child_login
from tests.support.http_receiver import HttpReceiver, Received, http_receiver
from tests.support.operations import ServiceProcess, Watcher, write_policies

# Each failing call ends in the service's internal error, or in -32503 once the breaker opened on an
# earlier tick (the tick may come before the sixth call).
FAILED_CALL = (ServiceException, ServiceTemporarilyUnavailableException)

ALERTING = """
route:
  receiver: hook
  group_by: [alertname, service]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {url}/hook
"""


class Operate:
    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.args, self.log, self.env = args, log, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 90) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen([sys.executable, "-m", "drivers.operate", *self.args], stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **self.env})
        out.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.read_text(errors="replace").count("sfa-ops: operating") >= self.starts:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"operate did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with http_receiver() as rx:
        yield rx


def breaker_opened(got: list[Received]) -> list[str]:
    """Services whose CircuitBreakerOpen alert was notified firing, in order."""
    return [r.json["commonLabels"].get("service") for r in got
            if r.json["commonLabels"].get("alertname") == "CircuitBreakerOpen" and r.json["status"] == "firing"]


async def test_kill9_restores_breakers_alerts_and_notification_log(broker_url: str, tmp_path: Path,
                                                                   receiver: HttpReceiver) -> None:
    """Open breaker before the crash is still open after it (callers are still refused); the alert
    sent before is not sent again; an alert raised after the restart is sent exactly once."""
    cluster = f"r{uuid.uuid4().hex[:8]}"
    policies = write_policies(tmp_path / "policies", {
        "alerting.yaml": ALERTING.format(url=receiver.url),
        "circuit_breaker.yaml": "defaults:\n  minimum_calls: 5\n  open_timeout: 10m\n",
    })
    url, env = child_login(broker_url, SFA_OPS)  # operate logs in as sfa-ops (password via env)
    args = ["--broker", url, "--cluster-id", cluster, "--store", f"sqlite:///{tmp_path / 'ops.db'}",
            "--policies", str(policies), "--status-every", "0"]
    op = Operate(args, tmp_path / "operate.log", env)
    watcher = Watcher()
    bus = MqttBus(config=MqttConfig.from_url(broker_url))
    await bus.start()
    await bus.wait_connected(10)
    await bus.subscribe(f"system/{cluster}/#", watcher, qos=1)
    client = ServiceClient(bus)
    await client.start()
    services = [ServiceProcess(broker_url, cluster, "Payments").start(),
                ServiceProcess(broker_url, cluster, "Ledger").start()]
    try:
        await asyncio.to_thread(op.start)
        for _ in range(6):
            with pytest.raises(FAILED_CALL):
                await client.call("Payments", "fail", {}, timeout=5)
        await watcher.wait(lambda w: any(e.get("to") == "open" for e in w.on("/circuit-breaker")), 10, "open")
        # The embedded metric rules may notify ServiceDegraded too, in either order: wait for the breaker's.
        await receiver.wait_until(lambda got: breaker_opened(got) == ["Payments"], path="/hook", timeout=15,
                                  what="CircuitBreakerOpen firing for Payments")

        await asyncio.sleep(2)
        before = [(b["groupKey"], b["status"]) for b in receiver.bodies("/hook")]
        op.kill9()
        await asyncio.to_thread(op.start)
        # The restored breaker refuses calls again: sfa-ops answers -32503 on the reply topic.
        answers = []
        for _ in range(5):
            doc = await client.call_raw("Payments", "ok", {}, timeout=5)
            answers.append(doc)
            if "error" in doc:
                break
            await asyncio.sleep(0.5)
        refused = [d for d in answers if d.get("error", {}).get("data", {}).get("errorType") == "CircuitBreakerOpen"]
        assert refused, f"no CircuitBreakerOpen answer after restart: {answers}"
        await asyncio.sleep(3)  # several group_interval ticks: a lost log would resend now
        after = [(b["groupKey"], b["status"]) for b in receiver.bodies("/hook")]
        assert after[: len(before)] == before
        repeated = [k for k in after[len(before):] if k in before]
        assert not repeated, f"notified again after the restart: {repeated}"

        for _ in range(6):
            with pytest.raises(FAILED_CALL):
                await client.call("Ledger", "fail", {}, timeout=5)
        try:
            await receiver.wait_until(lambda got: breaker_opened(got) == ["Payments", "Ledger"], path="/hook",
                                      timeout=15, what="CircuitBreakerOpen firing for Ledger")
        except AssertionError:
            events = [(e.get("service"), e.get("to")) for e in watcher.on("/circuit-breaker")]
            alerts = [(a.get("labels", {}).get("alertname"), a.get("labels", {}).get("service"), a.get("status"))
                      for a in watcher.on("/alerts")]
            raise AssertionError(f"no new notification; breaker events {events}; alerts topic {alerts}; log:\n"
                                 f"{(tmp_path / 'operate.log').read_text(errors='replace')[-2000:]}") from None
        await asyncio.sleep(3)  # several group_interval ticks: a repeated notification would be sent now
        keys = [(b["groupKey"], b["status"]) for b in receiver.bodies("/hook")]
        assert len(keys) == len(set(keys)), f"a notification was repeated: {keys}"
        assert breaker_opened(receiver.received("/hook")) == ["Payments", "Ledger"]
    finally:
        op.stop()
        for s in services:
            s.stop()
        await client.close()
        await bus.stop()
