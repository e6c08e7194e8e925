"""The state the detection rules share (``policies.security.rules``): bounded per-user and per-IP
entries, per-(rule, entity) suppression, the allowlist, heightened-monitoring watches, baselines
and the counters behind ``SecurityAnalyzer.stats``. Pure: no clock, ``now`` is passed in.

Rules keep their own windows in the per-entity entries (one slot each), so a user evicted from the
LRU is forgotten by every rule at once and the state stays within ``security.yaml`` ``state``.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.response.monitoring_watch import Watch, factor_for
from policies.security.detection_rules import SecurityPolicy
from policies.security.entity_state import BoundedLRU, BucketedSum, Suppressions
from policies.security.events import AlertType, UserBaseline
from policies.security.login_patterns import LoginPatterns

_CACHE_CAP = 4096  # per-string match caches (IP allowlist, privileged methods); cleared when full


class UserState:
    """What the rules remember about one user (each slot belongs to one rule, None until used)."""

    __slots__ = ("denials", "failures", "reads", "records", "services", "volume")

    def __init__(self) -> None:
        self.failures: deque[float] | None = None
        self.denials: deque[tuple[float, str, str]] | None = None
        self.reads: BucketedSum | None = None
        self.records: BucketedSum | None = None
        self.volume: BucketedSum | None = None
        self.services: dict[str, float] | None = None  # service -> last seen, least recent first


class IpState:
    """What the rules remember about one source address."""

    __slots__ = ("failures", "users")

    def __init__(self) -> None:
        self.failures: deque[float] | None = None
        self.users: OrderedDict[str, float] | None = None  # user -> last failure, oldest first


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityStats:
    """Counters for the health topic: nothing dropped or suppressed goes unseen."""

    events: Mapping[str, int]
    alerts: Mapping[str, int]
    suppressed: int
    allowlisted: int
    evictions: Mapping[str, int]
    tracked: Mapping[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": dict(self.events),
            "alerts": dict(self.alerts),
            "suppressed": self.suppressed,
            "allowlisted": self.allowlisted,
            "evictions": dict(self.evictions),
            "tracked": dict(self.tracked),
        }


class RuleState:
    """The shared, bounded state every detection rule reads and updates (module doc)."""

    def __init__(self, config: SecurityPolicy, baselines: Mapping[str, UserBaseline] | None = None) -> None:
        limits = config.state
        self.users: BoundedLRU[str, UserState] = BoundedLRU(capacity=limits.max_users)
        self.ips: BoundedLRU[str, IpState] = BoundedLRU(capacity=limits.max_ips)
        self.suppress = Suppressions(capacity=limits.max_suppressions)
        self.logins = LoginPatterns(config.unusual_login_pattern)
        self.baselines: Mapping[str, UserBaseline] = baselines or {}
        self.baselines_override: Mapping[str, UserBaseline] | None = None
        """Baselines given with one call (``on_data_access``/``on_activity``); None: ``baselines``."""
        self.default_baseline = config.default_baseline.as_baseline()
        self.watched: Mapping[str, Watch] = {}
        self.events = dict.fromkeys(("auth", "authz", "data_access", "role_change", "activity"), 0)
        self.alerts: dict[str, int] = {}
        self.allowlisted = 0
        self.allow_users = config.allowlist.users
        nets = [ipaddress.ip_network(n, strict=False) for n in config.allowlist.ips]
        # Single addresses match by string (no parsing on the hot path); networks need parsing.
        self._allow_ip_exact = frozenset(str(n.network_address) for n in nets if n.num_addresses == 1)
        self._allow_nets = tuple(n for n in nets if n.num_addresses > 1)
        self._ip_cache: dict[str, bool] = {}

    def admit(self, rule: AlertType, entity: str, now: float, suppress_for: float) -> bool:
        """True if an alert for (rule, entity) may be sent now (not inside its suppression window).
        Rules build the alert only after this says yes, so suppressed bursts stay cheap."""
        if not self.suppress.admit(rule, entity, now, suppress_for):
            return False
        self.alerts[rule] = self.alerts.get(rule, 0) + 1
        return True

    def factor(self, now: float, *entities: str | None) -> float:
        """Threshold scale for entities under heightened monitoring (1.0: none watched)."""
        return factor_for(self.watched, entities, now) if self.watched else 1.0

    def baseline(self, user: str) -> tuple[UserBaseline, bool]:
        """The user's baseline and whether it is theirs (False: the configured default)."""
        source = self.baselines_override if self.baselines_override is not None else self.baselines
        known = source.get(user)
        return (known, True) if known is not None else (self.default_baseline, False)

    def ip_allowed(self, ip: str) -> bool:
        if ip in self._allow_ip_exact:
            return True
        if not self._allow_nets:
            return False
        hit = self._ip_cache.get(ip)
        if hit is None:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                hit = False  # not an address at all: never allowlisted
            else:
                hit = any(addr in net for net in self._allow_nets)
            if len(self._ip_cache) >= _CACHE_CAP:
                self._ip_cache.clear()
            self._ip_cache[ip] = hit
        return hit

    def stats(self) -> SecurityStats:
        logins = self.logins.stats()
        return SecurityStats(
            events=dict(self.events),
            alerts=dict(self.alerts),
            suppressed=self.suppress.suppressed,
            allowlisted=self.allowlisted,
            evictions={
                "users": self.users.evictions,
                "ips": self.ips.evictions,
                "suppressions": self.suppress.evictions,
                "login_users": logins["user_evictions"],
                "login_networks": logins["network_overflow"],
                "login_devices": logins["device_overflow"],
            },
            tracked={"users": len(self.users), "ips": len(self.ips), "suppressions": len(self.suppress),
                     "login_users": logins["users"]},
        )


def burst(dq: deque[float], now: float, window: float, threshold: int) -> bool:
    """Record an event at ``now`` in a deque capped at the configured threshold (its maxlen);
    True — and reset, so a burst raises one alert — when ``threshold`` (at most the maxlen: a
    watched entity's is lower) events lie within ``window``."""
    dq.append(now)
    cutoff = now - window
    while dq and dq[0] <= cutoff:
        dq.popleft()
    if len(dq) >= threshold:
        dq.clear()
        return True
    return False


def distinct_burst(st: IpState, user: str, now: float, window: float, threshold: int) -> list[str]:
    """Record a failure for ``user`` from this IP; the distinct users (sorted) once ``threshold``
    of them failed within ``window`` (then reset), else []. Holds at most ``threshold`` users."""
    users = st.users
    if users is None:
        users = st.users = OrderedDict()
    users[user] = now
    users.move_to_end(user)
    cutoff = now - window
    while users and next(iter(users.values())) <= cutoff:
        users.popitem(last=False)
    if len(users) < threshold:
        return []
    names = sorted(users)
    users.clear()
    return names


def record_services(seen: dict[str, float], calls: Mapping[str, int], now: float, window: float, cap: int) -> None:
    """Mark the services called now as seen; forget those older than ``window`` or beyond ``cap``."""
    for name, n in calls.items():
        if n > 0:
            seen.pop(name, None)  # re-insert so dict order stays least recently seen first
            seen[name] = now
    cutoff = now - window
    while seen:
        oldest = next(iter(seen))
        if seen[oldest] > cutoff and len(seen) <= cap:
            break
        del seen[oldest]
