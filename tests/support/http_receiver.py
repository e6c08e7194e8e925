"""A real local HTTP server that records POSTed bodies and answers from a script, for webhook tests.

Usage::

    with http_receiver() as rx:
        rx.script([503, 503, 200])            # the next three answers; then 200 (rx.default)
        rx.script([Answer(200, delay_s=2)], path="/slow")   # per-path scripts win over the global one
        ... post to f"{rx.url}/hook" ...
        [req] = await rx.wait_for(1, path="/hook")
        req.json                               # the decoded body

It runs ``ThreadingHTTPServer`` in a thread on a free loopback port, so Ray actors in other
processes and asyncio clients in this one can reach it. Every request is recorded (in arrival order,
with the status it was answered with) before it is answered.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

__all__ = ["Answer", "HttpReceiver", "Received", "http_receiver"]


@dataclass(frozen=True)
class Answer:
    """One scripted answer; ``delay_s`` before answering simulates a slow receiver (timeouts)."""

    status: int = 200
    delay_s: float = 0.0
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    """A request as it arrived, and the status it was answered with."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    status: int
    at: float

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class HttpReceiver:
    """See the module docstring; build it with :func:`http_receiver`."""

    def __init__(self, *, default: Answer | int = 200) -> None:
        self.default = default if isinstance(default, Answer) else Answer(default)
        self.requests: list[Received] = []
        self._script: deque[Answer] = deque()
        self._by_path: dict[str, deque[Answer]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, answers: Iterable[Answer | int], *, path: str | None = None) -> None:
        """Queue answers (ints are statuses) for any path, or for ``path`` only."""
        items = [a if isinstance(a, Answer) else Answer(a) for a in answers]
        with self._lock:
            (self._by_path.setdefault(path, deque()) if path else self._script).extend(items)

    def received(self, path: str | None = None) -> list[Received]:
        """Requests so far (for ``path`` only, if given)."""
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def bodies(self, path: str | None = None) -> list[Any]:
        """Decoded JSON bodies of the requests so far."""
        return [r.json for r in self.received(path)]

    async def wait_for(self, n: int, *, path: str | None = None, timeout: float = 5.0) -> list[Received]:
        """Wait (without blocking the loop) until ``n`` requests arrived; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while len(got := self.received(path)) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(got)} of {n} request(s) on {path or 'any path'} within {timeout}s")
            await asyncio.sleep(0.02)
        return got

    async def wait_until(self, predicate: Callable[[list[Received]], bool], *, path: str | None = None,
                         timeout: float = 5.0, what: str = "condition") -> list[Received]:
        """Wait (without blocking the loop) until ``predicate`` holds for the requests so far."""
        deadline = time.monotonic() + timeout
        while not predicate(got := self.received(path)):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not met within {timeout}s; {len(got)} request(s) on {path or 'any path'}")
            await asyncio.sleep(0.02)
        return got

    def _answer(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Answer:
        with self._lock:
            queue = self._by_path.get(path)
            if queue:
                answer = queue.popleft()
            elif self._script:
                answer = self._script.popleft()
            else:
                answer = self.default
            self.requests.append(Received(method, path, dict(headers), body, answer.status, time.time()))
        return answer

    @contextmanager
    def running(self) -> Iterator[HttpReceiver]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.partition("?")[0]
                answer = outer._answer(self.command, path, dict(self.headers.items()), body)
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                try:
                    self.send_response(answer.status)
                    for k, v in answer.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    pass

            do_POST = do_PUT = do_GET = _handle

            def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name="http-receiver", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)


@contextmanager
def http_receiver(script: Iterable[Answer | int] = (), *, default: Answer | int = 200) -> Iterator[HttpReceiver]:
    """A running :class:`HttpReceiver` with an optional global script."""
    rx = HttpReceiver(default=default)
    rx.script(script)
    with rx.running() as running:
        yield running
