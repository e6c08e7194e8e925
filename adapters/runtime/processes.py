"""Child processes sfa-ops starts itself: the embedded mosquitto broker, and (for tests and the
benchmarks) throwaway Redis, PostgreSQL and Alertmanager servers, each on a free loopback port with
its own data directory, stopped and removed on ``stop()``.

Errors::

    ProcessError
     └── BinaryNotFound
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ProcessError(RuntimeError):
    """A child service could not be started or stopped."""


class BinaryNotFound(ProcessError):
    """The server binary is not installed (``make`` installs it: scripts/install-system.sh)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary(name: str, extra_dirs: tuple[str, ...] = ()) -> str:
    found = shutil.which(name)
    if found:
        return found
    dirs = ("/usr/sbin", "/usr/local/sbin", "/usr/local/bin", *extra_dirs)
    for d in dirs:
        candidate = Path(d) / name
        if candidate.exists():
            return str(candidate)
    raise BinaryNotFound(f"{name} not found; run `make test` or scripts/install-system.sh to install it")


def _postgres_bindir() -> str:
    roots = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for root in roots:
        if (root / "initdb").exists():
            return str(root)
    return str(Path(find_binary("initdb")).parent)


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ProcessError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise ProcessError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


@dataclass
class ChildService:
    """A started server: ``url`` to connect to, ``stop()`` to end it and remove its data."""

    name: str
    port: int
    url: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    def kill(self) -> None:
        """SIGKILL to the server's whole process group, as a crash of its host would (the data
        directory stays for a restart). The group, not the main process alone: a PostgreSQL backend
        outlives a killed postmaster for a moment, still answering its connection and holding the
        shared memory a restart needs."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the child leads its own session (_spawn)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.terminate()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _spawn(argv: list[str], log_path: Path, **kw: object) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed with it
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw)  # type: ignore[call-overload]
    finally:
        log.close()


class Mosquitto:
    """A mosquitto broker as a child process (the embedded default and the tests' broker)."""

    def __init__(self, *, port: int | None = None, workdir: Path | None = None,
                 password_file: Path | str | None = None, acl_file: Path | str | None = None,
                 extra_config: Sequence[str] = ()) -> None:
        """``password_file``/``acl_file`` (``drivers.broker_acl`` writes them): clients must log in
        and are held to the ACLs; ``extra_config``: lines appended to the generated mosquitto.conf (a
        later line wins), e.g. ``["max_packet_size 4096"]`` for a broker with a small packet limit."""
        self.port = port or free_port()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="sfa-mosquitto-"))
        self.extra_config = tuple(extra_config)
        self.service: ChildService | None = None
        self._auth_files = {k: Path(v) for k, v in (("password_file", password_file), ("acl_file", acl_file)) if v}

    def _auth_lines(self) -> list[str]:
        """Copy the auth files into the work dir (0600: mosquitto runs as the user who started it)."""
        if not self._auth_files:
            return ["allow_anonymous true"]
        lines = ["allow_anonymous false" if "password_file" in self._auth_files else "allow_anonymous true"]
        for key, src in self._auth_files.items():
            dst = self.workdir / key
            dst.write_bytes(src.read_bytes())
            os.chmod(dst, 0o600)
            lines.append(f"{key} {dst}")
        return lines

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10) -> ChildService:
        binary = find_binary("mosquitto")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    # Started as root, mosquitto would switch to its `mosquitto` user, which cannot
                    # read files under a private TMPDIR (0700): a child broker keeps its parent's user.
                    *(["user root"] if os.geteuid() == 0 else []),
                    *self._auth_lines(),
                    "persistence false",
                    "max_queued_messages 100000",
                    "max_inflight_messages 0",
                    "message_size_limit 0",
                    "sys_interval 1",
                    "set_tcp_nodelay true",
                    "log_dest stdout",
                    "log_type error",
                    "log_type warning",
                    *self.extra_config,
                    "",
                ]
            )
        )
        log_path = self.workdir / "mosquitto.log"
        proc = _spawn([binary, "-c", str(conf)], log_path)
        wait_for_port(self.port, timeout, proc)
        self.service = ChildService("mosquitto", self.port, self.url, proc, self.workdir, log_path)
        return self.service

    def restart(self, timeout: float = 10) -> ChildService:
        """Start again on the same port (after ``kill``/``terminate``), keeping the work dir."""
        return self.start(timeout)


def start_mosquitto(timeout: float = 10, **options: Any) -> ChildService:
    """A started :class:`Mosquitto`; ``options`` as its constructor (auth files, extra config)."""
    return Mosquitto(**options).start(timeout)


def start_redis(*, port: int | None = None, timeout: float = 10, extra: list[str] | None = None) -> ChildService:
    binary = find_binary("redis-server")
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="sfa-redis-"))
    log_path = workdir / "redis.log"
    argv = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "no",
        "--protected-mode", "no",
        *(extra or []),
    ]
    proc = _spawn(argv, log_path)
    wait_for_port(port, timeout, proc)
    return ChildService("redis", port, f"redis://127.0.0.1:{port}/0", proc, workdir, log_path)


def start_alertmanager(
    *, webhook_url: str, resolve_timeout: str = "3s", group_by: tuple[str, ...] = ("test",),
    port: int | None = None, timeout: float = 30,
) -> ChildService:
    """Prometheus Alertmanager (Debian's ``prometheus-alertmanager``) on a loopback port, clustering
    off, a throwaway storage path, and one route to a webhook receiver at ``webhook_url``
    (``send_resolved``; groups flush at once and every second, repeat after 1 h)."""
    try:
        binary = find_binary("prometheus-alertmanager")  # Debian's name
    except BinaryNotFound:
        binary = find_binary("alertmanager")  # upstream's release tarball
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="sfa-alertmanager-"))
    conf = workdir / "alertmanager.yml"
    groups = ", ".join(f"'{g}'" for g in group_by)
    conf.write_text(
        "global:\n"
        f"  resolve_timeout: {resolve_timeout}\n"
        "route:\n"
        "  receiver: hook\n"
        f"  group_by: [{groups}]\n"
        "  group_wait: 0s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: hook\n"
        "    webhook_configs:\n"
        f"      - url: '{webhook_url}'\n"
        "        send_resolved: true\n"
    )
    log_path = workdir / "alertmanager.log"
    argv = [
        binary,
        f"--config.file={conf}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # empty: no HA gossip (no port 9094, no peers)
        "--log.level=warn",
    ]
    return _ready_http_service("alertmanager", argv, port, workdir, log_path, timeout)


def _ready_http_service(name: str, argv: list[str], port: int, workdir: Path, log_path: Path,
                        timeout: float) -> ChildService:
    """Starts ``argv`` and waits for ``/-/ready`` to answer 200 (the Prometheus projects' readiness
    endpoint: listening is not ready, the configuration must be loaded)."""
    proc = _spawn(argv, log_path)
    wait_for_port(port, timeout, proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as res:
                if res.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            svc = ChildService(name, port, url, proc, workdir, log_path)
            tail = svc.log_tail()
            svc.stop()
            raise ProcessError(f"{name} did not become ready: {tail}")
        time.sleep(0.05)
    return ChildService(name, port, url, proc, workdir, log_path)


def start_prometheus(*, targets: list[str], scrape_interval: str = "1s", port: int | None = None,
                     timeout: float = 30) -> ChildService:
    """Prometheus (Debian's ``prometheus``) on a loopback port scraping ``targets`` (host:port,
    path /metrics) every ``scrape_interval``, with a throwaway TSDB."""
    binary = find_binary("prometheus")
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="sfa-prometheus-"))
    conf = workdir / "prometheus.yml"
    listed = ", ".join(f"'{t}'" for t in targets)
    conf.write_text(
        "global:\n"
        f"  scrape_interval: {scrape_interval}\n"
        f"  evaluation_interval: {scrape_interval}\n"
        "scrape_configs:\n"
        "  - job_name: sfa-ops\n"
        f"    static_configs: [{{targets: [{listed}]}}]\n"
    )
    log_path = workdir / "prometheus.log"
    argv = [binary, f"--config.file={conf}", f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    return _ready_http_service("prometheus", argv, port, workdir, log_path, timeout)


def _as_postgres_user() -> dict[str, object]:
    """PostgreSQL refuses to run as root: drop to the ``postgres`` account the package creates."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ProcessError("running as root but no 'postgres' user exists; install postgresql") from exc
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def init_postgres_datadir(workdir: Path, *, bindir: str | None = None) -> Path:
    bindir = bindir or _postgres_bindir()
    datadir = workdir / "data"
    drop = _as_postgres_user()
    if drop:
        os.chown(workdir, drop["user"], drop["group"])  # type: ignore[arg-type]
    subprocess.run(
        [f"{bindir}/initdb", "-D", str(datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
         "--no-sync"],
        check=True, capture_output=True, **drop,  # type: ignore[call-overload]
    )
    return datadir


def start_postgres_datadir(
    datadir: Path, workdir: Path, *, port: int | None = None, timeout: float = 30,
    settings: dict[str, str] | None = None,
) -> ChildService:
    bindir = _postgres_bindir()
    port = port or free_port()
    log_path = workdir / f"postgres-{port}.log"
    drop = _as_postgres_user()
    if drop:
        log_path.touch()
        os.chown(log_path, drop["user"], drop["group"])  # type: ignore[arg-type]
    opts = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(workdir),
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
        **(settings or {}),
    }
    argv = [f"{bindir}/postgres", "-D", str(datadir)]
    for k, v in opts.items():
        argv += ["-c", f"{k}={v}"]
    proc = _spawn(argv, log_path, **drop)
    wait_for_port(port, timeout, proc)
    # Accepting TCP is not yet accepting queries; pg_isready tells.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok = subprocess.run([f"{bindir}/pg_isready", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
                            capture_output=True)
        if ok.returncode == 0:
            break
        time.sleep(0.05)
    return ChildService("postgresql", port, f"postgresql://postgres@127.0.0.1:{port}/postgres", proc, workdir, log_path)


def postgres_workdir(prefix: str) -> Path:
    """A new directory for a PostgreSQL data dir. PostgreSQL refuses to run as root, so as root it
    runs as ``postgres``, which must be able to reach the directory: under the temp dir when every
    directory above it lets others through, else under /tmp (a private TMPDIR is 0700)."""
    base = Path(tempfile.gettempdir()).resolve()
    if os.geteuid() == 0 and not all(p.stat().st_mode & stat.S_IXOTH for p in (base, *base.parents)):
        base = Path("/tmp")
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def start_postgres(*, port: int | None = None, timeout: float = 30) -> ChildService:
    workdir = postgres_workdir("sfa-postgres-")
    datadir = init_postgres_datadir(workdir)
    return start_postgres_datadir(datadir, workdir, port=port, timeout=timeout)
