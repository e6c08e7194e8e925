"""The one HTTP client of sfa-ops, over aiohttp: JSON management APIs (EMQX) and posting JSON to
receivers (webhooks, another Alertmanager, relays).

:class:`HttpClient` keeps one ``aiohttp.ClientSession`` (created lazily inside the running loop).
``request``/``get`` join a path to the client's ``base_url`` (basic auth when given);
``post_json`` posts to an absolute URL. Every exchange is bounded by a total and a connect timeout,
and response bodies are read up to ``max_body_bytes``. Redirects are not followed blindly: only
``307``/``308`` (which keep the method and body) to the *same* origin (scheme, host, port), up to
``max_redirects``; any other 3xx comes back as the response, so a receiver cannot bounce an alert
(and its labels) to a host nobody configured.

Every HTTP status comes back as an :class:`HttpResponse`; judging it is the caller's job.

Errors::

    HttpError
     ├── HttpUnreachable   could not connect, or the connection broke
     │    └── HttpTimeout  no response within the timeout (also a TimeoutError)
     └── HttpBadUrl        the URL is not http(s) or names no host (also ValueError)

``aiohttp`` errors never leave this module, and URLs in messages are redacted.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson

from adapters.runtime.urls import redact_url as _redact_url

__all__ = [
    "HttpBadUrl",
    "HttpClient",
    "HttpError",
    "HttpResponse",
    "HttpTimeout",
    "HttpUnreachable",
    "redact_url",
]

_FOLLOW = frozenset({307, 308})


class HttpError(Exception):
    """Base of every error this module raises."""


class HttpUnreachable(HttpError):
    """No answer: connection refused or broken, or no response within the timeout."""


class HttpTimeout(HttpUnreachable, TimeoutError):
    """No response within the timeout."""


class HttpBadUrl(HttpError, ValueError):
    """The URL cannot be requested: not http/https, or no host."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpResponse:
    """An HTTP answer: status, the (possibly truncated) body, headers, the URL that answered and
    how long the exchange took."""

    status: int
    body: bytes
    url: str
    elapsed_s: float
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body decoded as JSON; raises :class:`HttpError` if it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(f"HTTP {self.status}: body is not JSON: {self.body[:80]!r}") from exc


def redact_url(url: str) -> str:
    """``url`` without password, query or fragment (webhook URLs often carry tokens there)."""
    return _redact_url(url, drop_query=True)


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise HttpBadUrl(f"cannot parse URL {redact_url(url)!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpBadUrl(f"URL {redact_url(url)!r} must be http:// or https:// with a host")
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname.lower(), port or default


def _same_origin(url: str, origin: tuple[str, str, int | None]) -> bool:
    try:
        return _origin(url) == origin
    except HttpBadUrl:
        return False


class HttpClient:
    """Requests to ``base_url`` (``https://emqx:18083``) and JSON posts to absolute URLs;
    ``await close()`` (or ``async with``) when done."""

    def __init__(
        self, *, base_url: str | None = None, timeout_s: float = 5.0, connect_timeout_s: float = 2.0,
        username: str | None = None, password: str | None = None, headers: Mapping[str, str] | None = None,
        user_agent: str = "sfa-ops", max_redirects: int = 3, max_body_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        if timeout_s <= 0 or connect_timeout_s <= 0 or max_redirects < 0 or max_body_bytes < 0:
            raise ValueError("timeouts must be positive; max_redirects and max_body_bytes >= 0")
        self.base_url = base_url.rstrip("/") if base_url is not None else None
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_redirects = max_redirects
        self.max_body_bytes = max_body_bytes
        self._headers = {"User-Agent": user_agent, **dict(headers or {})}
        if username is not None:  # built by hand: aiohttp 3.12+ deprecates BasicAuth/auth=
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    def _timeout(self, timeout_s: float | None) -> aiohttp.ClientTimeout:
        total = timeout_s if timeout_s is not None else self.timeout_s
        return aiohttp.ClientTimeout(total=total, connect=min(self.connect_timeout_s, total))

    async def _exchange(
        self, method: str, url: str, *, params: Mapping[str, str] | None, data: bytes | None,
        headers: Mapping[str, str] | None, timeout_s: float | None, max_body_bytes: int,
    ) -> HttpResponse:
        """One request, following same-origin 307/308 redirects; errors become :class:`HttpError`."""
        origin = _origin(url)
        timeout = self._timeout(timeout_s)
        started = time.monotonic()
        target = url
        try:
            for _ in range(self.max_redirects + 1):
                async with self._get_session().request(
                    method, target, params=params, data=data, headers=headers, timeout=timeout,
                    allow_redirects=False,
                ) as resp:
                    body = await resp.content.read(max_body_bytes) if max_body_bytes else b""
                    status, got = resp.status, dict(resp.headers)
                location = got.get("Location")
                if status in _FOLLOW and location and _same_origin(nxt := urljoin(target, location), origin):
                    target = nxt
                    continue
                break
            return HttpResponse(status=status, body=body, url=target, headers=got,
                                elapsed_s=time.monotonic() - started)
        except TimeoutError as exc:
            took = timeout.total or 0.0
            raise HttpTimeout(f"{method} {redact_url(target)}: no response within {took:g}s") from exc
        except aiohttp.ClientError as exc:
            # aiohttp's message may quote the URL: redact it too
            detail = str(exc).replace(target, redact_url(target))
            raise HttpUnreachable(f"{method} {redact_url(target)}: {type(exc).__name__}: {detail}".rstrip(": ")) from exc

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, json: Any = None,
        timeout_s: float | None = None,
    ) -> HttpResponse:
        """Send one request to ``base_url`` + ``path``; any status comes back as a response, no
        answer raises :class:`HttpUnreachable`."""
        if self.base_url is None:
            raise HttpBadUrl(f"{method} {path}: this client has no base_url")
        url = f"{self.base_url}/{path.lstrip('/')}"
        data = orjson.dumps(json) if json is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        return await self._exchange(method, url, params=params, data=data, headers=headers,
                                    timeout_s=timeout_s, max_body_bytes=self.max_body_bytes)

    async def get(self, path: str, *, params: Mapping[str, str] | None = None) -> HttpResponse:
        return await self.request("GET", path, params=params)

    async def post_json(
        self, url: str, body: Any, *, headers: Mapping[str, str] | None = None, timeout_s: float | None = None,
        max_body_bytes: int = 64 * 1024,
    ) -> HttpResponse:
        """POST ``body`` as JSON to the absolute ``url``; any status comes back, no answer raises
        :class:`HttpUnreachable`. ``timeout_s`` bounds the whole exchange, redirects included; the
        answer's body is read up to ``max_body_bytes`` (receivers' answers are only logged)."""
        sent = {"Content-Type": "application/json", **dict(headers or {})}
        return await self._exchange("POST", url, params=None, data=orjson.dumps(body), headers=sent,
                                    timeout_s=timeout_s, max_body_bytes=min(max_body_bytes, self.max_body_bytes))

    async def close(self) -> None:
        """Close the session (a later request opens a new one)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
