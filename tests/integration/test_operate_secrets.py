"""operate against a real mosquitto that requires a password: given with --broker-password-file,
the password reaches the broker (operate starts, so it authenticated) and appears nowhere in what
operate prints or in the logs of its Ray session (actors included). It runs with JSON logs at
info level, which must carry the actors' records to operate's own output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from adapters.runtime.processes import Mosquitto, find_binary

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_operate_never_prints_or_logs_the_broker_password(tmp_path: Path) -> None:
    password = f"pw@{uuid.uuid4().hex[:12]}:/x"
    workdir = Path(tempfile.mkdtemp(prefix="sfa-mosquitto-"))
    passwd = workdir / "passwd"
    subprocess.run([find_binary("mosquitto_passwd"), "-b", "-c", str(passwd), "sfa", password], check=True,
                   capture_output=True)
    broker = Mosquitto(workdir=workdir, extra_config=("allow_anonymous false", f"password_file {passwd}"))
    svc = broker.start()
    pw_file = tmp_path / "broker-password"
    pw_file.write_text(password + "\n")
    ray_tmp = Path(tempfile.mkdtemp(prefix="r"))  # short: Ray's socket paths must fit in 107 bytes
    out = tmp_path / "operate.log"
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "drivers.operate", "--broker", f"mqtt://sfa@127.0.0.1:{svc.port}",
             "--broker-password-file", str(pw_file), "--store", f"sqlite:///{tmp_path}/ops.db",
             "--no-security", "--status-every", "1s", "--duration", "120s",
             "--log-format", "json", "--log-level", "info"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "sfa-ops: operating" not in out.read_text(errors="replace"):
            assert proc.poll() is None, out.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, out.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        while out.read_text(errors="replace").count("sfa-ops: ") < 3:  # a status line or two as well
            assert time.monotonic() < deadline and proc.poll() is None, out.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        printed = out.read_text(errors="replace")
        assert f"on mqtt://sfa:***@127.0.0.1:{svc.port}" in printed
        # --log-format json --log-level info: the actors' records reach operate's output (as they
        # reach `ray job logs`), one JSON object each, with the actor that wrote it; none twice.
        records = [json.loads(line[line.index("{"):]) for line in printed.splitlines()
                   if '"levelname"' in line]
        actors = {r.get("actor_name") for r in records} - {None}
        assert "sfa-supervisor-local" in actors and "sfa-alertmanager-local" in actors, printed[-3000:]
        stamps = [r["timestamp_ns"] for r in records if "actor_name" not in r]
        assert stamps and len(stamps) == len(set(stamps)), "a driver record was logged twice"
        ray_logs = [p for p in ray_tmp.rglob("*") if p.is_file() and "logs" in p.parts]
        assert any(p.name.startswith("worker") for p in ray_logs), "no Ray worker logs to search"
        leaks = [str(p) for p in [out, *ray_tmp.rglob("*")] if p.is_file() and _holds(p, password)]
        assert not leaks, leaks
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        svc.stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _holds(path: Path, password: str) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return any(s.encode() in data for s in (password, quote(password, safe=""), password.split("@", 1)[1]))
