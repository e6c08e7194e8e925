"""Posting JSON to receivers (webhooks, another Alertmanager, relays) over aiohttp.

:class:`JsonPoster` keeps one ``aiohttp.ClientSession`` (created lazily inside the running loop)
for any number of URLs. Every request is bounded by a total and a connect timeout. Redirects are
not followed blindly: only ``307``/``308`` (which keep the method and body) to the *same* origin
(scheme, host, port) are followed, up to ``max_redirects``; any other 3xx comes back as the
response, so a receiver cannot bounce an alert (and its labels) to a host nobody configured.
Response bodies are read up to ``max_body_bytes`` (receivers' answers are only logged).

Every HTTP status comes back as an :class:`HttpResult`; judging it is the caller's job.

Errors::

    HttpClientError
     ├── HttpUnreachable   could not connect, the connection broke, or no answer within the timeout
     └── HttpBadUrl        the URL is not http(s) or names no host (also ValueError)

``aiohttp`` errors never leave this module.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson

from adapters.urls import redact_url as _redact_url

__all__ = ["HttpBadUrl", "HttpClientError", "HttpResult", "HttpUnreachable", "JsonPoster", "redact_url"]

_FOLLOW = frozenset({307, 308})


class HttpClientError(Exception):
    """Base of every error this module raises."""


class HttpUnreachable(HttpClientError):
    """No answer: connection refused or broken, or no response within the timeout."""


class HttpBadUrl(HttpClientError, ValueError):
    """The URL cannot be posted to: not http/https, or no host."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpResult:
    """An HTTP answer: status, the (possibly truncated) body and how long the exchange took."""

    status: int
    body: bytes
    elapsed_s: float
    url: str

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status < 300


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


class JsonPoster:
    """POSTs JSON bodies to absolute URLs; ``await close()`` when done."""

    def __init__(
        self, *, timeout_s: float = 5.0, connect_timeout_s: float = 2.0, max_redirects: int = 3,
        max_body_bytes: int = 64 * 1024, headers: Mapping[str, str] | None = None,
        user_agent: str = "sfa-ops-alertmanager",
    ) -> None:
        if timeout_s <= 0 or connect_timeout_s <= 0 or max_redirects < 0 or max_body_bytes < 0:
            raise ValueError("timeouts must be positive; max_redirects and max_body_bytes >= 0")
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_redirects = max_redirects
        self.max_body_bytes = max_body_bytes
        self._headers = {"User-Agent": user_agent, **dict(headers or {})}
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def post_json(
        self, url: str, body: Any, *, headers: Mapping[str, str] | None = None, timeout_s: float | None = None,
    ) -> HttpResult:
        """POST ``body`` as JSON; any status comes back, no answer raises :class:`HttpUnreachable`.

        ``timeout_s`` bounds the whole exchange, redirects included.
        """
        origin = _origin(url)
        data = orjson.dumps(body)
        sent_headers = {"Content-Type": "application/json", **dict(headers or {})}
        total = timeout_s if timeout_s is not None else self.timeout_s
        timeout = aiohttp.ClientTimeout(total=total, connect=min(self.connect_timeout_s, total))
        started = time.monotonic()
        target = url
        try:
            for _ in range(self.max_redirects + 1):
                async with self._get_session().post(
                    target, data=data, headers=sent_headers, timeout=timeout, allow_redirects=False,
                ) as resp:
                    location = resp.headers.get("Location")
                    payload = await resp.content.read(self.max_body_bytes) if self.max_body_bytes else b""
                    status = resp.status
                if status in _FOLLOW and location:
                    nxt = urljoin(target, location)
                    if _same_origin(nxt, origin):
                        target = nxt
                        continue
                return HttpResult(status=status, body=payload, elapsed_s=time.monotonic() - started, url=target)
            return HttpResult(status=status, body=payload, elapsed_s=time.monotonic() - started, url=target)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # noqa: UP041 - aiohttp raises both names
            what = type(exc).__name__
            raise HttpUnreachable(f"POST {redact_url(target)}: {what}: {exc}".rstrip(": ")) from exc

    async def close(self) -> None:
        """Close the session (a later request opens a new one)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> JsonPoster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
