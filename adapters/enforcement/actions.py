"""Carrying out enforcement actions outside sfa-ops: Redis keys with TTL and EMQX bans.

- :class:`RedisEnforcement` — ``sfa:block:ip:{ip}``, ``sfa:suspend:user:{id}``,
  ``sfa:ratelimit:user:{id}`` (prefix configurable), each holding a small JSON document
  (action, actionId, incidentId, until, params) and expiring with the action, so any gateway can
  enforce them with one ``MGET`` and nothing has to clean up after a crash.
- :class:`EmqxBans` — ``POST /api/v5/banned`` (``as: peerhost``, ``until`` RFC 3339) for
  ``block_ip`` and ``DELETE /api/v5/banned/peerhost/{ip}`` on its undo (EMQX v5.8
  ``emqx_mgmt_api_banned.erl``: 200 with the ban, 400 ``ALREADY_EXISTS`` with the old ban,
  204 on delete, 404 ``NOT_FOUND`` when there is nothing to delete).
- :class:`Enforcement` — both behind one ``apply``/``undo``; returns per-backend failures instead
  of raising, so the responder records each failure on the incident and goes on.

Only ``ENFORCED`` actions (and their undos) touch a backend; the rest (notifications,
monitoring) are published and recorded only. Targets are validated before they become a key or a
URL path: an IP must parse as one, a user id must be printable without ``/`` or whitespace.

Errors::

    EnforcementError
     ├── EnforcementConfigError   bad URL/credentials setting
     ├── EnforcementTargetError   a target that must not reach a key or URL (also ValueError)
     └── EnforcementUnavailable   the backend did not answer or refused (retry may help)
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from adapters.http.client import HttpClient, HttpError
from protocol.base import rfc3339_from_epoch

# action -> (key kind, entity); an undo names the action it reverses through `undoes`.
ENFORCED: dict[str, tuple[str, str]] = {
    "block_ip": ("block", "ip"),
    "suspend_user": ("suspend", "user"),
    "rate_limit_user": ("ratelimit", "user"),
}
UNDO_OF: dict[str, str] = {"unblock_ip": "block_ip", "reinstate_user": "suspend_user",
                           "remove_rate_limit": "rate_limit_user"}
_USER_MAX = 256


class EnforcementError(Exception):
    """Base of every error this module raises."""


class EnforcementConfigError(EnforcementError):
    """A backend URL or credential setting is wrong."""


class EnforcementTargetError(EnforcementError, ValueError):
    """The target is not a valid IP / user id for this action."""


class EnforcementUnavailable(EnforcementError):
    """The backend did not answer, or answered with an error."""


@dataclass(frozen=True, kw_only=True)
class EnforcementConfig:
    """Which backends to use. Credentials come from config/env (``SFA_OPS_EMQX_API_KEY`` …),
    never from code; ``redis_url`` may carry a password (``redis://:pw@host:6379/0``)."""

    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "sfa"
    emqx_url: str | None = None
    emqx_api_key: str | None = None
    emqx_api_secret: str | None = field(default=None, repr=False)
    timeout_s: float = 3.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> EnforcementConfig:
        """``SFA_OPS_ENFORCEMENT_REDIS``, ``SFA_OPS_EMQX_URL``, ``SFA_OPS_EMQX_API_KEY``,
        ``SFA_OPS_EMQX_API_SECRET``; keyword overrides win."""
        base: dict[str, Any] = {
            "redis_url": env.get("SFA_OPS_ENFORCEMENT_REDIS") or None,
            "emqx_url": env.get("SFA_OPS_EMQX_URL") or None,
            "emqx_api_key": env.get("SFA_OPS_EMQX_API_KEY") or None,
            "emqx_api_secret": env.get("SFA_OPS_EMQX_API_SECRET") or None,
        }
        return cls(**(base | overrides))


def check_target(entity: str, target: str) -> str:
    """The target, normalised (IPs in canonical form); raises EnforcementTargetError."""
    if entity == "ip":
        try:
            return str(ipaddress.ip_address(target))
        except ValueError as exc:
            raise EnforcementTargetError(f"{target[:80]!r} is not an IP address") from exc
    if not target or len(target) > _USER_MAX or not target.isprintable() or any(
            c.isspace() or c == "/" for c in target):
        raise EnforcementTargetError(f"{target[:80]!r} is not a usable user id (printable, no '/' or spaces)")
    return target


def redis_key(action: str, target: str, prefix: str = "sfa") -> str:
    """``sfa:block:ip:203.0.113.7`` for ``block_ip`` (also for its undo ``unblock_ip``)."""
    base = UNDO_OF.get(action, action)
    if base not in ENFORCED:
        raise EnforcementTargetError(f"{action!r} is not an enforced action ({', '.join(ENFORCED)})")
    kind, entity = ENFORCED[base]
    return f"{prefix}:{kind}:{entity}:{check_target(entity, target)}"


def _ttl(until: float | None, now: float) -> int | None:
    """Whole seconds left (at least 1), or None for an untimed action."""
    if until is None:
        return None
    return max(1, math.ceil(until - now))


class RedisEnforcement:
    """SET with EX on apply, DEL on undo. One connection pool per instance."""

    def __init__(self, *, url: str, prefix: str = "sfa", timeout_s: float = 3.0) -> None:
        try:
            self._redis = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        except ValueError as exc:
            raise EnforcementConfigError(f"enforcement Redis URL is not valid: {exc}") from exc
        self.prefix = prefix

    async def apply(self, action: Mapping[str, Any], *, until: float | None, now: float) -> None:
        """``action`` is an ``EnforcementAction`` wire dict; the key lives until ``until``."""
        key = redis_key(str(action["action"]), str(action["target"]), self.prefix)
        doc = {"action": action["action"], "actionId": action.get("actionId"),
               "incidentId": action.get("incidentId"), "params": action.get("params") or {},
               "until": rfc3339_from_epoch(until) if until is not None else None}
        try:
            await self._redis.set(key, orjson.dumps(doc), ex=_ttl(until, now))
        except RedisError as exc:
            raise EnforcementUnavailable(f"Redis SET {key}: {exc}") from exc

    async def undo(self, action: str, target: str) -> None:
        key = redis_key(action, target, self.prefix)
        try:
            await self._redis.delete(key)
        except RedisError as exc:
            raise EnforcementUnavailable(f"Redis DEL {key}: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()


class EmqxBans:
    """EMQX v5 ``/api/v5/banned`` for IPs (``as: peerhost``); HTTP basic auth with an API key."""

    def __init__(self, *, base_url: str, api_key: str, api_secret: str, timeout_s: float = 3.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise EnforcementConfigError(f"EMQX API URL {base_url!r} must start with http:// or https://")
        self._http = HttpClient(base_url=base_url, timeout_s=timeout_s, username=api_key, password=api_secret)

    async def ban_ip(self, ip: str, *, until: float | None, reason: str, now: float) -> None:
        ip = check_target("ip", ip)
        body = {"as": "peerhost", "who": ip, "by": "sfa-ops", "reason": reason[:200], "at": rfc3339_from_epoch(now),
                "until": rfc3339_from_epoch(until) if until is not None else "infinity"}
        resp = await self._call("POST", "/api/v5/banned", body)
        if resp.status == 400 and b"ALREADY_EXISTS" in resp.body:
            # A ban from an earlier incident: replace it so the new (longer) expiry holds.
            await self.unban_ip(ip)
            resp = await self._call("POST", "/api/v5/banned", body)
        if not 200 <= resp.status < 300:
            raise EnforcementUnavailable(f"EMQX POST /api/v5/banned answered HTTP {resp.status}: {resp.body[:200]!r}")

    async def unban_ip(self, ip: str) -> None:
        ip = check_target("ip", ip)
        path = f"/api/v5/banned/peerhost/{quote(ip, safe='')}"
        resp = await self._call("DELETE", path, None)
        if resp.status == 404 or 200 <= resp.status < 300:
            return  # gone already (expired at EMQX, or lifted by hand): the undo's goal holds
        raise EnforcementUnavailable(f"EMQX DELETE {path} answered HTTP {resp.status}: {resp.body[:200]!r}")

    async def _call(self, method: str, path: str, body: Any) -> Any:
        try:
            resp = await self._http.request(method, path, json=body)
        except HttpError as exc:
            raise EnforcementUnavailable(f"EMQX {method} {path}: {exc}") from exc
        if resp.status in (401, 403):
            raise EnforcementConfigError(
                f"EMQX API rejected the credentials (HTTP {resp.status}): check SFA_OPS_EMQX_API_KEY/SECRET")
        return resp

    async def close(self) -> None:
        await self._http.close()


@dataclass(frozen=True, slots=True)
class BackendFailure:
    """One backend failed to carry out an action."""

    backend: str
    error: str


class Enforcement:
    """The configured backends behind one interface; without any, apply/undo do nothing."""

    def __init__(self, config: EnforcementConfig) -> None:
        self.config = config
        self.redis = (RedisEnforcement(url=config.redis_url, prefix=config.redis_prefix, timeout_s=config.timeout_s)
                      if config.redis_url else None)
        self.emqx: EmqxBans | None = None
        if config.emqx_url:
            if not config.emqx_api_key or not config.emqx_api_secret:
                raise EnforcementConfigError("EMQX URL set without SFA_OPS_EMQX_API_KEY / SFA_OPS_EMQX_API_SECRET")
            self.emqx = EmqxBans(base_url=config.emqx_url, api_key=config.emqx_api_key,
                                 api_secret=config.emqx_api_secret, timeout_s=config.timeout_s)

    async def apply(self, action: Mapping[str, Any], *, until: float | None, now: float,
                    reason: str = "") -> list[BackendFailure]:
        """Carry out an enforced action on every backend; the failures (empty when all worked)."""
        name = str(action["action"])
        if name not in ENFORCED:
            return []
        failures: list[BackendFailure] = []
        if self.redis is not None:
            await _attempt(failures, "redis", self.redis.apply(action, until=until, now=now))
        if self.emqx is not None and name == "block_ip":
            await _attempt(failures, "emqx", self.emqx.ban_ip(str(action["target"]), until=until,
                                                              reason=reason or name, now=now))
        return failures

    async def undo(self, original: str, target: str) -> list[BackendFailure]:
        """Reverse ``original`` (the action name, e.g. ``block_ip``) for ``target``."""
        if original not in ENFORCED:
            return []
        failures: list[BackendFailure] = []
        if self.redis is not None:
            await _attempt(failures, "redis", self.redis.undo(original, target))
        if self.emqx is not None and original == "block_ip":
            await _attempt(failures, "emqx", self.emqx.unban_ip(target))
        return failures

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()
        if self.emqx is not None:
            await self.emqx.close()


async def own_addresses(hosts: Sequence[str], *, timeout_s: float = 2.0) -> set[str]:
    """sfa-ops' own hosts as protected targets: each of ``hosts`` (the broker's host …) and this
    machine's name, with the addresses they resolve to. A name that does not resolve in time
    contributes only itself (never fails: protection must not stop the responder starting)."""
    names = [h for h in dict.fromkeys([*hosts, socket.gethostname()]) if h]
    out: set[str] = set(names)
    loop = asyncio.get_running_loop()
    for name in names:
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(name, None), timeout_s)
        except (OSError, TimeoutError, UnicodeError):
            continue
        out.update(str(info[4][0]) for info in infos)
    return out


async def _attempt(failures: list[BackendFailure], backend: str, op: Any) -> None:
    try:
        await op
    except EnforcementError as exc:
        failures.append(BackendFailure(backend, str(exc)))
