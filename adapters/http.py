"""A small async HTTP client over aiohttp for JSON management APIs (EMQX) and webhooks.

:class:`HttpClient` keeps one ``aiohttp.ClientSession`` (created lazily inside the running loop),
joins paths to a base URL, sends basic auth when given, and bounds every request by a total
timeout. It returns every status as an :class:`HttpResponse`; judging a status is the caller's job.

Errors::

    HttpError
     └── HttpUnavailable   could not connect, or the connection broke
          └── HttpTimeout  no response within the timeout (also a TimeoutError)

``aiohttp`` errors never leave this module.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from adapters.urls import redact_url


class HttpError(Exception):
    """Base of every error this module raises."""


class HttpUnavailable(HttpError):
    """No answer: connection refused or broken, or no response within the timeout."""


class HttpTimeout(HttpUnavailable, TimeoutError):
    """No response within the client's timeout."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON; raises :class:`HttpError` if it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(f"HTTP {self.status}: body is not JSON: {self.body[:80]!r}") from exc


class HttpClient:
    """Requests to one base URL (``https://emqx:18083``); ``close()`` when done."""

    def __init__(
        self, *, base_url: str, timeout_s: float = 5.0, username: str | None = None,
        password: str | None = None, headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = dict(headers or {})
        if username is not None:  # built by hand: aiohttp 3.12+ deprecates BasicAuth/auth=
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._session

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, json: Any = None,
    ) -> HttpResponse:
        """Send one request; any status comes back as a response, no answer raises HttpUnavailable."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        data = orjson.dumps(json) if json is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with self._get_session().request(method, url, params=params, data=data,
                                                   headers=headers) as resp:
                body = await resp.read()
                return HttpResponse(resp.status, dict(resp.headers), body)
        except TimeoutError as exc:
            raise HttpTimeout(f"{method} {redact_url(url)}: no response within {self.timeout_s:g}s") from exc
        except aiohttp.ClientError as exc:
            # aiohttp's message may quote the URL: redact it too
            detail = str(exc).replace(url, redact_url(url))
            raise HttpUnavailable(f"{method} {redact_url(url)}: {type(exc).__name__}: {detail}".rstrip(": ")) from exc

    async def get(self, path: str, *, params: Mapping[str, str] | None = None) -> HttpResponse:
        return await self.request("GET", path, params=params)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
