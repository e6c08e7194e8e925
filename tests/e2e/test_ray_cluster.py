"""operate on real Ray clusters: submitted as a Ray job to a `ray start --head`
cluster, and on a simulated three-node cluster where a node is removed under it. Both run in
their own processes so the test session's Ray is untouched."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from adapters.runtime.processes import free_port
from policies.security.broker_acl import SFA_OPS
from tests.support import multinode
from tests.support.broker import SessionBroker
from tests.support.operations import Watcher

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def test_multinode_spread_and_node_loss(session_broker: SessionBroker, tmp_path: Path) -> None:
    """Actors spread over three nodes, the three monitors one per node (placed by the supervisor,
    not left to chance); removing a worker node restarts its monitor on a surviving node (soft node
    affinity) with its open breaker restored from the store, and the health summary carries on."""
    for name in multinode.SERVICES:  # their principals, before the child process starts
        session_broker.service_principal(name)
    proc = subprocess.run([sys.executable, "-m", "tests.support.multinode", session_broker.plain_url, str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=400,
                          env={**os.environ, **session_broker.export()})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    seen = json.loads(lines[-1])
    assert seen["actor_nodes"] == 3
    assert seen["monitors_per_node"] == [1] * len(multinode.SERVICES) == [1, 1, 1], seen
    assert seen["monitors_on_workers"] == 2
    assert seen["monitor_moved"] is True
    assert seen["restored_breaker"] == "open"
    assert seen["health_after_node_loss"] is True


def test_sixty_services_monitors_spread_and_crashes_detected(session_broker: SessionBroker, tmp_path: Path) -> None:
    """60 services on a simulated three-node cluster: one monitor each, spread evenly over the three
    nodes (20 each: the supervisor places them); six of them have a real instance (the other 54 are
    configured and monitored without one: 60 service processes beside 60 monitors do not fit two
    cores), wherever their monitors run; all six are killed together and each ``service_unavailable``
    reaches the broker within 5 s of its kill (the single-node crash test's bound), and no other
    service is reported down."""
    for name in multinode.SPREAD_REAL:
        session_broker.service_principal(name)
    proc = subprocess.run([sys.executable, "-m", "tests.support.multinode", session_broker.plain_url, str(tmp_path),
                           "spread"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **session_broker.export()})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    seen = json.loads(lines[-1])
    print(seen)  # the figures (placement, detection times), shown with -s
    assert seen["monitors"] == len(multinode.SPREAD_SERVICES)
    per_node = seen["monitors_per_node"]
    assert len(per_node) == 3 and max(per_node) - min(per_node) <= 1, per_node
    assert seen["unavailable"] == sorted(multinode.SPREAD_REAL), seen
    assert all(0 <= t <= 5.0 for t in seen["detect_s"].values()), seen["detect_s"]


def ray_token_env(workdir: Path) -> dict[str, str]:
    """The environment for `ray start`, `ray job submit` and `ray stop`: token authentication with a
    token this test makes itself (a random secret in a file of its own), and an empty HOME, so the test
    neither depends on nor writes to the user's ~/.ray."""
    home = workdir / "home"
    home.mkdir()
    token = workdir / "ray_auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    inherited = {k: v for k, v in os.environ.items()
                 if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    return inherited | {"HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


def stop_head(head: subprocess.Popen[bytes], temp_dir: str) -> str:
    """Stops the `ray start --block` head and every process of its node; returns the tail of the
    head's output. Idempotent, and never raises for processes already gone, so cleanup cannot mask
    the assertion that failed. (`ray stop` is not used: it stops every Ray on the machine, the test
    session's own included, and takes no address.)"""
    if head.stdout is None or head.stdout.closed:
        return ""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)
    try:
        out = head.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        out = head.communicate()[0]
    for proc in Path("/proc").iterdir():  # the node's daemons that left the head's process group
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if temp_dir.encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
    return (out or b"").decode(errors="replace")[-3000:]


async def test_submitted_as_ray_job(session_broker: SessionBroker, broker_url: str, tmp_path: Path) -> None:
    """`ray job submit --working-dir . -- python -m drivers.operate ...` against a local
    `ray start --head` cluster with token authentication: the job runs operate, which publishes the
    retained health summary, and ends SUCCEEDED after --duration."""
    import asyncio

    from adapters.mqtt.bus import MqttBus, MqttConfig

    gcs_port, dash_port = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rj-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = ray_token_env(tmp_path)
    head = subprocess.Popen(
        [RAY, "start", "--head", f"--port={gcs_port}", f"--dashboard-port={dash_port}", "--dashboard-host=127.0.0.1",
         "--num-cpus=2", "--include-dashboard=true", "--block", f"--temp-dir={temp_dir}",
         # Ports of their own: the test session's Ray, already running, holds the default agent
         # ports (52365 and others), and a head whose job agent cannot bind accepts no jobs.
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
         f"--ray-client-server-port={free_port()}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = f"job{uuid.uuid4().hex[:6]}"
    watcher = Watcher()
    bus = MqttBus(config=MqttConfig.from_url(broker_url))
    head_log = ""
    try:
        await bus.start()
        await bus.wait_connected(10)
        await bus.subscribe(f"system/{cluster}/health", watcher, qos=1)
        address = f"http://127.0.0.1:{dash_port}"
        job_id = f"sfa-ops-{cluster}"
        submit = [RAY, "job", "submit", "--address", address, "--no-wait", "--submission-id", job_id,
                  "--working-dir", str(REPO),
                  # operate logs in as sfa-ops; its password stays in its file (the job's
                  # entrypoint and runtime env are stored and shown by Ray).
                  "--runtime-env-json", json.dumps({"env_vars": {
                      "SFA_OPS_MQTT_USERNAME": SFA_OPS,
                      "SFA_OPS_MQTT_PASSWORD_FILE": str(session_broker.password_file(SFA_OPS))}}),
                  "--", sys.executable, "-m", "drivers.operate", "--broker", session_broker.plain_url,
                  "--cluster-id", cluster,
                  "--store", f"sqlite:///{tmp_path / 'job.db'}", "--duration", "20s", "--status-every", "0",
                  "--no-security"]

        def ray_cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
            return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)

        deadline = time.monotonic() + 180
        result = None
        while time.monotonic() < deadline:  # the dashboard's job API comes up a little after the head
            result = await asyncio.to_thread(ray_cli, *submit)
            if result.returncode == 0 or "Connection refused" not in (result.stdout + result.stderr):
                break
            await asyncio.sleep(2)
        assert result is not None
        if result.returncode != 0:
            head_log = stop_head(head, temp_dir)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:] + head_log
        # Wait for the job to end (operate runs --duration 20s), then judge it by its status.
        status = ""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            out = await asyncio.to_thread(ray_cli, RAY, "job", "status", "--address", address, job_id)
            status = (out.stdout + out.stderr).lower()  # "Job 'ID' succeeded" (the CLI logs to stderr)
            if any(f"' {word}" in status for word in ("succeeded", "failed", "stopped")):
                break
            await asyncio.sleep(2)
        if "' succeeded" not in status:
            logs = await asyncio.to_thread(ray_cli, RAY, "job", "logs", "--address", address, job_id)
            pytest.fail(f"job did not succeed: {status[-1000:]}\n{logs.stdout[-3000:]}{logs.stderr[-1000:]}")
        health = watcher.on("/health")
        assert health and health[-1]["clusterId"] == cluster and health[-1]["type"] == "system_health"
        assert not (tmp_path / "home" / ".ray").exists(), "Ray wrote a token into HOME"
    finally:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bus.stop(), 30)  # cleanup must not hide the failure that got us here
        stop_head(head, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


pytestmark = pytest.mark.timeout(600)
