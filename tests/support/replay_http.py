"""A local HTTP server that replays recorded responses, for APIs that cannot run here (EMQX's
management API, the Kubernetes API server).

Routes map ``path`` or ``path?query`` (exact query string, tried first) to a :class:`Reply`.
Unknown paths get 404. With ``expected_auth`` set, requests whose Authorization header differs
get ``unauthorized`` (a 401) — except ``open_paths``. Every request is recorded in ``requests``.
It runs in a thread, so synchronous clients (the kubernetes package) and asyncio ones both work.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay_s: float = 0.0

    @classmethod
    def file(cls, path: Path | str, status: int = 200, **kw: object) -> Reply:
        """A reply whose body is a fixture file (relative paths are under tests/fixtures/)."""
        p = Path(path)
        return cls(status=status, body=(p if p.is_absolute() else FIXTURES / p).read_bytes(), **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class ReplayServer:
    """``with ReplayServer(routes).running() as srv: srv.url``; ``srv.requests`` lists what came in."""

    def __init__(
        self, routes: Mapping[str, Reply], *, expected_auth: str | None = None,
        unauthorized: Reply | None = None, open_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.routes = dict(routes)
        self.expected_auth = expected_auth
        self.unauthorized = unauthorized or Reply(status=401, body=b'{"code":"UNAUTHORIZED"}')
        self.open_paths = open_paths
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _reply_for(self, method: str, path: str, query: str, headers: Mapping[str, str]) -> Reply:
        with self._lock:
            self.requests.append(Received(method, path, query, dict(headers)))
        if self.expected_auth is not None and path not in self.open_paths \
                and headers.get("Authorization") != self.expected_auth:
            return self.unauthorized
        reply = self.routes.get(f"{path}?{query}") if query else None
        return reply or self.routes.get(path) or Reply(status=404, body=b'{"code":"NOT_FOUND"}')

    @contextmanager
    def running(self) -> Iterator[ReplayServer]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                reply = outer._reply_for("GET", path, query, dict(self.headers.items()))
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    pass

            def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, name="replay-http", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)
