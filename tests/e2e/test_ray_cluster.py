"""operate on real Ray clusters (issue 4 §4.8): submitted as a Ray job to a `ray start --head`
cluster, and on a simulated three-node cluster where a node is removed under it. Both run in
their own processes so the test session's Ray is untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from adapters.processes import free_port
from tests.support.operations import Watcher

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def test_multinode_spread_and_node_loss(broker_url: str, tmp_path: Path) -> None:
    """Actors spread over three nodes; removing a worker node restarts its monitors on a surviving
    node with their open breakers restored from the store, and the health summary carries on."""
    proc = subprocess.run([sys.executable, "-m", "tests.support.multinode", broker_url, str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=400)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    seen = json.loads(lines[-1])
    assert seen["actor_nodes"] == 3
    assert seen["monitors_on_workers"] >= 1
    assert seen["monitor_moved"] is True
    assert seen["restored_breaker"] == "open"
    assert seen["health_after_node_loss"] is True


async def test_submitted_as_ray_job(broker_url: str, tmp_path: Path) -> None:
    """`ray job submit --working-dir . -- python -m drivers.operate ...` against a local
    `ray start --head` cluster: the job runs operate, which publishes the retained health summary,
    and ends SUCCEEDED after --duration."""
    import asyncio

    from adapters.mqtt import MqttBus, MqttConfig

    gcs_port, dash_port = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rj-")  # short: Ray's socket paths must fit in 107 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "token"}
    head = subprocess.Popen(
        [RAY, "start", "--head", f"--port={gcs_port}", f"--dashboard-port={dash_port}", "--dashboard-host=127.0.0.1",
         "--num-cpus=2", "--include-dashboard=true", "--block", f"--temp-dir={temp_dir}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = f"job{uuid.uuid4().hex[:6]}"
    watcher = Watcher()
    bus = MqttBus(config=MqttConfig.from_url(broker_url))
    await bus.start()
    await bus.wait_connected(10)
    await bus.subscribe(f"system/{cluster}/health", watcher, qos=1)
    try:
        address = f"http://127.0.0.1:{dash_port}"
        submit = [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
                  sys.executable, "-m", "drivers.operate", "--broker", broker_url, "--cluster-id", cluster,
                  "--store", f"sqlite:///{tmp_path / 'job.db'}", "--duration", "20s", "--status-every", "0",
                  "--no-security"]
        deadline = time.monotonic() + 120
        result = None
        while time.monotonic() < deadline:  # the dashboard's job API comes up a little after the head
            result = await asyncio.to_thread(subprocess.run, submit, cwd=REPO, env=env, capture_output=True,
                                             text=True, timeout=300)
            if result.returncode == 0 or "Connection refused" not in (result.stdout + result.stderr):
                break
            await asyncio.sleep(2)
        assert result is not None
        head_log = ""
        if result.returncode != 0:
            os.killpg(head.pid, signal.SIGTERM)
            head_log = head.communicate(timeout=60)[0].decode(errors="replace")[-3000:]
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:] + head_log
        assert "succeeded" in (result.stdout + result.stderr).lower()
        health = watcher.on("/health")
        assert health and health[-1]["clusterId"] == cluster and health[-1]["type"] == "system_health"
    finally:
        await bus.stop()
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        subprocess.run([RAY, "stop", "--force", f"--address=127.0.0.1:{gcs_port}"], env=env, capture_output=True,
                       timeout=60, check=False)


pytestmark = pytest.mark.timeout(600)
