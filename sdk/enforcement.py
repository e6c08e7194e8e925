"""Runtime-side enforcement of sfa-ops' security actions: the ``enforcement=`` hook of
``ServiceRuntime.connect``.

Two sources, same answers:

- :class:`ActionsEnforcement` (default) keeps the retained set on
  ``system/{cluster}/security/actions/active`` (``protocol.security.ActiveActions``; each new
  retained copy replaces the whole set, so a service that starts late knows every ban at once).
- :class:`RedisEnforcementCheck` reads the Redis keys the IncidentResponder writes
  (``sfa:block:ip:{ip}``, ``sfa:suspend:user:{id}``, ``sfa:ratelimit:user:{id}``) with one MGET
  per call, caching each answer for ``cache_s`` (a ban takes effect at most that much later).

Answers (the call's ``userContext`` supplies ``ipAddress`` and ``userId``):

=====================================  =========================================
the caller's IP is blocked              -32003 AuthorizationError (``reason: ip_blocked``)
the user is suspended                   -32003 AuthorizationError (``reason: user_suspended``)
the user is rate limited, over rate     -32006 RateLimitError with ``retryAfterSeconds``
=====================================  =========================================

Whom this trusts: the ``userContext`` is written by whoever published the call on
``service/{Service}``, and is taken as given. Deploy so that only gateway principals (which
authenticate the user and take ``ipAddress`` from the connection) may publish calls carrying a
``userContext`` (broker ACLs on ``service/+``); otherwise the check is advisory — a caller can
claim another address or user id to slip past a ban (it cannot cause one: bans come only from the
IncidentResponder, over ``system/{cluster}/security/actions/active`` or the Redis keys).

Every action is honoured only until its ``until``: an expired ban stops refusing calls even if
its undo message is late. A rate limit allows ``ratePerMinute`` (from the action's params, else
``default_rate_per_minute``) per user per instance, as a token bucket with a burst of the same
size per minute / 6 (at least 1).

Whose actions it believes: the retained set is signed by sfa-ops (``operate --signing-key``).
With ``trust=SystemTrust.from_files("sfa-ops-signing.key.pub")`` a set that is unsigned, signed
by another key, tampered with or stale (its ``timestamp`` older than ``trust.max_age_s``; the
IncidentResponder republishes the set well within that) is ignored — the ban set stays as it was —
and counted by reason in ``trust.counts``, the same check as ``PlatformAwareClient(trust=…)``
(``sdk.trust.verified``). Without a trust the caller must say ``allow_unsigned=True`` (any client
allowed to publish on the topic then decides whom the service refuses: only where the broker's
ACLs keep ``system/{cluster}/#`` to sfa-ops); neither is a ``ValueError``.

Use::

    enforcement = ActionsEnforcement(cluster="prod", trust=SystemTrust.from_files("sfa-ops-signing.key.pub"))
    runtime = ServiceRuntime.connect(service, broker_url=url, cluster="prod", enforcement=enforcement)
    await enforcement.attach(runtime.bus)   # before or after runtime.start()
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from adapters.mqtt.bus import Message, MqttBus
from protocol.base import epoch_from_rfc3339, parse_model
from protocol.exceptions import ProtocolError
from protocol.rpc import UserContext
from protocol.security import ActiveActions, EnforcementAction
from sdk.errors import AuthorizationError, RateLimitError, ServiceFunctionError
from sdk.service import CallContext
from sdk.trust import SystemTrust, verified

_FOREVER = math.inf
_MAX_BUCKETS = 10_000


def active_topic(cluster: str) -> str:
    """The retained set of active actions (published by the IncidentResponder)."""
    from protocol import topics

    return f"{topics.security_actions(cluster)}/active"


def _epoch(value: Any) -> float:
    if value is None:
        return _FOREVER
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return epoch_from_rfc3339(value)
    raise ValueError(f"not a timestamp: {value!r}")


def _rate_of(params: Any, default: float) -> float:
    if isinstance(params, Mapping):
        v = params.get("ratePerMinute")
        if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
            return float(v)
    return default


class _Buckets:
    """Token buckets per user, bounded (least recently used evicted)."""

    def __init__(self) -> None:
        self._b: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, user: str, per_minute: float, now: float) -> float:
        """0 when a call is allowed now, else seconds until one would be."""
        rate = per_minute / 60.0
        burst = max(1.0, per_minute / 6.0)
        tokens, last = self._b.pop(user, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / rate if rate > 0 else 60.0
        self._b[user] = (tokens, now)
        while len(self._b) > _MAX_BUCKETS:
            self._b.popitem(last=False)
        return wait


class _Verdicts:
    """The refusal rules shared by both sources."""

    def __init__(self, default_rate_per_minute: float, clock: Callable[[], float]) -> None:
        self.default_rate = default_rate_per_minute
        self.clock = clock
        self.buckets = _Buckets()
        self.counts = {"allowed": 0, "ip_blocked": 0, "user_suspended": 0, "rate_limited": 0}

    def decide(self, ip: str | None, user: str | None, *, ip_until: float | None, suspended_until: float | None,
               rate: tuple[float, float] | None, now: float) -> ServiceFunctionError | None:
        if ip is not None and ip_until is not None and ip_until > now:
            self.counts["ip_blocked"] += 1
            return AuthorizationError("Access from this address is blocked", reason="ip_blocked",
                                      retryAfterSeconds=_retry(ip_until, now))
        if user is not None and suspended_until is not None and suspended_until > now:
            self.counts["user_suspended"] += 1
            return AuthorizationError("This account is suspended", reason="user_suspended",
                                      retryAfterSeconds=_retry(suspended_until, now))
        if user is not None and rate is not None and rate[1] > now:
            wait = self.buckets.take(user, rate[0], now)
            if wait > 0:
                self.counts["rate_limited"] += 1
                return RateLimitError(f"Rate limit of {rate[0]:g} calls per minute exceeded",
                                      retry_after=round(wait, 3))
        self.counts["allowed"] += 1
        return None


def _retry(until: float, now: float) -> float | None:
    return None if until == _FOREVER else round(until - now, 3)


class ActionsEnforcement:
    """Enforces the retained active-actions set of one cluster (see the module docstring)."""

    def __init__(self, *, cluster: str, trust: SystemTrust | None = None, allow_unsigned: bool = False,
                 default_rate_per_minute: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        if trust is None and not allow_unsigned:
            raise ValueError("ActionsEnforcement needs trust=SystemTrust.from_files(<sfa-ops' public key>) to "
                             "believe only signed action sets, or allow_unsigned=True to believe any publisher")
        self.cluster = cluster
        self.trust = trust
        self._v = _Verdicts(default_rate_per_minute, clock)
        self._ips: dict[str, float] = {}
        self._suspended: dict[str, float] = {}
        self._rates: dict[str, tuple[float, float]] = {}
        self.updates = 0
        self.malformed = 0

    async def attach(self, bus: MqttBus) -> None:
        """Subscribe to the retained set (works before the bus is connected)."""
        await bus.subscribe(active_topic(self.cluster), verified(self._on_active, self.trust), qos=1)

    def _on_active(self, msg: Message) -> None:
        try:
            self.load(parse_model(ActiveActions, msg.payload).actions)
        except ProtocolError:
            self.malformed += 1

    def load(self, actions: Iterable[EnforcementAction | Mapping[str, Any]]) -> None:
        """Replace the set from ``EnforcementAction`` models or their wire dicts (undo entries are
        ignored); raises ``ProtocolError`` on a malformed entry, leaving the set as it was."""
        ips: dict[str, float] = {}
        users: dict[str, float] = {}
        rates: dict[str, tuple[float, float]] = {}
        for raw in actions:
            a = raw if isinstance(raw, EnforcementAction) else parse_model(EnforcementAction, dict(raw))
            if a.undo:
                continue
            name, target = a.action, a.target
            until = _FOREVER if a.until is None else a.until.timestamp()
            if name == "block_ip":
                ips[target] = max(until, ips.get(target, 0.0))
            elif name == "suspend_user":
                users[target] = max(until, users.get(target, 0.0))
            elif name == "rate_limit_user":
                rate = _rate_of(a.params, self._v.default_rate)
                held = rates.get(target)
                rates[target] = (min(rate, held[0]) if held else rate, max(until, held[1] if held else 0.0))
        self._ips, self._suspended, self._rates = ips, users, rates
        self.updates += 1

    def __call__(self, ctx: CallContext, user: UserContext | None) -> ServiceFunctionError | None:
        ip = user.ip_address if user is not None else None
        uid = user.user_id if user is not None else None
        return self._v.decide(
            ip, uid, ip_until=self._ips.get(ip) if ip is not None else None,
            suspended_until=self._suspended.get(uid) if uid is not None else None,
            rate=self._rates.get(uid) if uid is not None else None, now=self._v.clock())

    @property
    def counts(self) -> dict[str, int]:
        """Calls allowed and refused per reason."""
        return dict(self._v.counts)


class RedisEnforcementCheck:
    """Enforces the Redis keys (see the module docstring); an async check. A Redis failure
    allows the call (fail open: enforcement must not become an outage) and is counted."""

    def __init__(self, *, url: str, prefix: str = "sfa", default_rate_per_minute: float = 60.0,
                 cache_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.prefix = prefix
        self.cache_s = cache_s
        self._v = _Verdicts(default_rate_per_minute, clock)
        self._cache: OrderedDict[tuple[str | None, str | None], tuple[float, list[Any]]] = OrderedDict()
        self.errors = 0

    async def _lookup(self, ip: str | None, uid: str | None, now: float) -> list[Any]:
        key = (ip, uid)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        from redis.exceptions import RedisError

        p = self.prefix
        keys = [f"{p}:block:ip:{ip}" if ip else f"{p}:none", f"{p}:suspend:user:{uid}" if uid else f"{p}:none",
                f"{p}:ratelimit:user:{uid}" if uid else f"{p}:none"]
        try:
            raw = await self._redis.mget(keys)
        except RedisError:
            self.errors += 1
            return [None, None, None]
        docs = [_doc(v) for v in raw]
        self._cache[key] = (now + self.cache_s, docs)
        while len(self._cache) > _MAX_BUCKETS:
            self._cache.popitem(last=False)
        return docs

    async def __call__(self, ctx: CallContext, user: UserContext | None) -> ServiceFunctionError | None:
        ip = user.ip_address if user is not None else None
        uid = user.user_id if user is not None else None
        now = self._v.clock()
        if ip is None and uid is None:
            return self._v.decide(None, None, ip_until=None, suspended_until=None, rate=None, now=now)
        block, suspend, limit = await self._lookup(ip, uid, now)
        # The key's TTL is the expiry; `until` inside it keeps the cache honest near the end.
        rate = ((_rate_of(limit.get("params"), self._v.default_rate), _until(limit)) if limit is not None else None)
        return self._v.decide(ip, uid, ip_until=_until(block) if block is not None else None,
                              suspended_until=_until(suspend) if suspend is not None else None, rate=rate, now=now)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._v.counts)

    async def close(self) -> None:
        await self._redis.aclose()


def _doc(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}  # a key set by another tool: its presence is the verdict
    return doc if isinstance(doc, dict) else {}


def _until(doc: Mapping[str, Any]) -> float:
    try:
        return _epoch(doc.get("until"))
    except ValueError:
        return _FOREVER
