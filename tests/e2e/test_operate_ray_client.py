"""operate as deploy/kuberay/operate.yaml runs it: a driver outside the Ray cluster that joins it as
a Ray Client (``--ray-address ray://head:port``) with token authentication, serving the /healthz and
/readyz its Kubernetes probes call. The cluster is a local `ray start --head` in its own processes,
so the test session's Ray is untouched."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from adapters.runtime.processes import free_port
from policies.security.broker_acl import SFA_OPS
from tests.e2e.test_ray_cluster import RAY, REPO, ray_token_env, stop_head
from tests.support.broker import SessionBroker
from tests.support.operations import Watcher

pytestmark = pytest.mark.timeout(600)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0  # not listening yet


def _started(head: subprocess.Popen[bytes]) -> str:
    """Reads the head's output until Ray says it started ("" then) or the head ends (its output).
    In Kubernetes an operate that comes up first fails to connect, exits and is restarted."""
    assert head.stdout is not None
    seen: list[bytes] = []
    for line in iter(head.stdout.readline, b""):
        if b"Ray runtime started" in line:
            return ""
        seen.append(line)
    return b"".join(seen).decode(errors="replace")[-3000:]


def _client_server_logs(temp_dir: str) -> str:
    """The tail of the Ray Client servers' logs (why a connection was refused)."""
    logs = sorted(Path(temp_dir).glob("session_latest/logs/ray_client_server*.err"))
    return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in logs)


async def test_operate_joins_as_ray_client_and_answers_its_probes(
        session_broker: SessionBroker, broker_url: str, tmp_path: Path) -> None:
    from adapters.mqtt.bus import MqttBus, MqttConfig

    client_port, http_port = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = ray_token_env(tmp_path)
    # The image sets PYTHONPATH to the code (deploy/Dockerfile): the cluster's workers import actors/ from it.
    head_env = {**env, "PYTHONPATH": str(REPO)}
    head = subprocess.Popen(
        [RAY, "start", "--head", f"--port={free_port()}", f"--dashboard-port={free_port()}", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--block", f"--temp-dir={temp_dir}", f"--ray-client-server-port={client_port}",
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"],
        cwd=REPO, env=head_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = f"rc{uuid.uuid4().hex[:6]}"
    watcher = Watcher()
    bus = MqttBus(config=MqttConfig.from_url(broker_url))
    operate: subprocess.Popen[str] | None = None
    try:
        await bus.start()
        await bus.wait_connected(10)
        await bus.subscribe(f"system/{cluster}/health", watcher, qos=1)
        failed_start = await asyncio.wait_for(asyncio.to_thread(_started, head), 240)
        assert not failed_start, failed_start + _client_server_logs(temp_dir)
        # As in the Deployment: the password in a file, the Ray address and --http from options.
        argv = [sys.executable, "-m", "drivers.operate",
                "--broker", f"mqtt://{SFA_OPS}@127.0.0.1:{session_broker.port}",
                "--broker-password-file", str(session_broker.password_file(SFA_OPS)),
                "--cluster-id", cluster, "--store", f"sqlite:///{tmp_path / 'rc.db'}", "--no-security",
                "--ray-address", f"ray://127.0.0.1:{client_port}", "--http", f"127.0.0.1:{http_port}",
                "--duration", "45s", "--status-every", "5"]
        base = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 300
        ready, exits = 0, []
        # Kubernetes restarts an operate that exits (a Ray Client connection the head's proxy fails to
        # set up ends the process); this test does the same, at most three times, and says so.
        while ready != 200 and len(exits) < 3 and time.monotonic() < deadline:
            operate = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True)
            while time.monotonic() < deadline and operate.poll() is None:
                ready = await asyncio.to_thread(_status, base + "/readyz")
                if ready == 200:
                    break
                await asyncio.sleep(1)
            if ready != 200 and operate.poll() is not None:
                exits.append(operate.communicate()[0][-2000:])
        if ready != 200:
            assert operate is not None
            if operate.poll() is None:
                operate.kill()
            out = operate.communicate()[0] if operate.stdout and not operate.stdout.closed else ""
            pytest.fail(f"/readyz never answered 200 (last {ready}); exits: {exits}\n{out[-3000:]}\n"
                        f"{_client_server_logs(temp_dir)}")
        assert operate is not None
        if exits:
            print(f"operate exited {len(exits)} time(s) before it was ready and was restarted:", *exits, sep="\n")
        assert await asyncio.to_thread(_status, base + "/healthz") == 200
        out = (await asyncio.to_thread(operate.communicate, timeout=240))[0]
        assert operate.returncode == 0, out[-3000:]
        assert "operating cluster" in out
        health = watcher.on("/health")
        assert health and health[-1]["clusterId"] == cluster
    finally:
        if operate is not None and operate.poll() is None:
            operate.kill()
            operate.communicate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bus.stop(), 30)
        stop_head(head, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
