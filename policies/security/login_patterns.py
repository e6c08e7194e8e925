"""Unusual login patterns (seed: SecurityMonitor.DetectUnusualLoginPatterns): each user's own
baseline, learned from their successful logins, and a verdict on every login against it.

A user's profile holds the source networks they logged in from (IPv4 /24, IPv6 /64 by default;
an IPv4-mapped IPv6 address counts as IPv4), the devices (a digest of the user agent: the auth
event carries no device id) and the hours of day (UTC, of ``now``: the analyst's clock at
arrival). Once ``min_baseline_logins`` successful logins are learned, a login (successful or, if
``check_failed``, failed) showing at least ``min_novel`` novel aspects, or a new network alone
when ``new_network_alone``, is reported as a :class:`LoginNovelty`. Only successful logins teach
the profile (a failed login from a new place must not make that place usual), and a failed
login never creates one (so failures for made-up users cannot evict real profiles).

Everything is bounded: at most ``max_users`` profiles (LRU; evictions counted), and per profile
at most ``max_networks_per_user`` networks and ``max_devices_per_user`` devices (least recently
seen dropped first; counted as ``overflow``); hours are a 24-bit mask. Pure: ``now`` is passed in.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from policies.security.detection_rules import LoginPatternRule
from policies.security.entity_state import BoundedLRU

ASPECTS = ("network", "device", "hour")
_CACHE_CAP = 4096
_MAX_LOGINS = 1 << 30  # a profile's login count stops here (it only gates the verdict)


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(r"\.".join([_OCTET] * 4))
"""A plain IPv4 address exactly as ``ipaddress`` accepts it (ASCII digits, no leading zeros)."""


def network_of(ip: str | None, ipv4_prefix: int = 24, ipv6_prefix: int = 64) -> str | None:
    """The source network of an address (``203.0.113.0/24``, ``2001:db8:1:2::/64``); None when
    ``ip`` is missing or not an address."""
    if not ip:
        return None
    if ipv4_prefix % 8 == 0 and (quad := _DOTTED_QUAD.fullmatch(ip)) is not None:  # hot path: no ipaddress
        keep = ipv4_prefix // 8
        return ".".join(quad.groups()[:keep] + ("0",) * (4 - keep)) + f"/{ipv4_prefix}"
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        mapped = addr.ipv4_mapped
        if mapped is None:
            net = ipaddress.IPv6Network((int(addr), ipv6_prefix), strict=False)
            return str(net)
        addr = mapped
    return str(ipaddress.IPv4Network((int(addr), ipv4_prefix), strict=False))


def device_of(user_agent: str | None) -> str | None:
    """A short, fixed-size key for a device (its user agent, whitespace-trimmed); None if absent."""
    if user_agent is None:
        return None
    ua = user_agent.strip()
    if not ua:
        return None
    return hashlib.blake2b(ua.encode("utf-8", "replace"), digest_size=8).hexdigest()


def hour_of(now: float) -> int:
    """Hour of day (UTC) of an epoch instant."""
    return int(now // 3600) % 24


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginNovelty:
    """What was new about one login for its user."""

    user_id: str
    novel: tuple[str, ...]
    """Subset of ``ASPECTS``, in that order."""
    network: str | None
    device: str | None
    hour: int
    baseline_logins: int
    known_networks: int
    known_devices: int
    hours_mask: int
    """Bit h set: the user had logged in at hour h (UTC) before."""
    success: bool

    @property
    def known_hours(self) -> tuple[int, ...]:
        return tuple(h for h in range(24) if (self.hours_mask >> h) & 1)

    def details(self) -> dict[str, Any]:
        """JSON-ready metadata for the alert."""
        return {"user_id": self.user_id, "novel": list(self.novel), "network": self.network,
                "device": self.device, "hour_utc": self.hour, "baseline_logins": self.baseline_logins,
                "known_networks": self.known_networks, "known_devices": self.known_devices,
                "known_hours_utc": list(self.known_hours), "success": self.success}


class _Profile:
    __slots__ = ("devices", "hours", "logins", "networks")

    def __init__(self) -> None:
        self.networks: OrderedDict[str, None] = OrderedDict()  # least recently seen first
        self.devices: OrderedDict[str, None] = OrderedDict()
        self.hours = 0  # bit h set: a successful login at hour h (UTC)
        self.logins = 0


class LoginPatterns:
    """Per-user login profiles and the verdict on each login (module docstring)."""

    def __init__(self, rule: LoginPatternRule) -> None:
        self.rule = rule
        self._users: BoundedLRU[str, _Profile] = BoundedLRU(capacity=rule.max_users)
        self._net_cache: dict[str, str | None] = {}
        self._dev_cache: dict[str, str] = {}
        self.counts = dict.fromkeys(("learned", "judged", "novel", "no_network", "network_overflow",
                                     "device_overflow"), 0)

    def _network(self, ip: str | None) -> str | None:
        if ip is None:
            return None
        if ip in self._net_cache:
            return self._net_cache[ip]
        net = network_of(ip, self.rule.ipv4_prefix, self.rule.ipv6_prefix)
        if len(self._net_cache) >= _CACHE_CAP:
            self._net_cache.clear()
        self._net_cache[ip] = net
        return net

    def _device(self, user_agent: str | None) -> str | None:
        if user_agent is None:
            return None
        dev = self._dev_cache.get(user_agent)
        if dev is None:
            dev = device_of(user_agent) or ""
            if len(self._dev_cache) >= _CACHE_CAP:
                self._dev_cache.clear()
            self._dev_cache[user_agent] = dev
        return dev or None

    def observe(self, *, user_id: str | None, ip: str | None, user_agent: str | None, success: bool,
                now: float) -> LoginNovelty | None:
        """Judge one login against the user's profile, then (if it succeeded) learn from it."""
        rule = self.rule
        if not user_id or not rule.enabled:
            return None
        if success:
            prof = self._users.get_or_create(user_id, _Profile)
        else:
            known = self._users.get(user_id) if rule.check_failed else None
            if known is None or known.logins < rule.min_baseline_logins:
                return None
            prof = known
        net, dev, hour = self._network(ip), self._device(user_agent), int(now // 3600) % 24
        if net is None:
            self.counts["no_network"] += 1
        found = None
        if prof.logins >= rule.min_baseline_logins:
            self.counts["judged"] += 1
            new_net = net is not None and net not in prof.networks
            new_dev = dev is not None and dev not in prof.devices
            new_hour = not (prof.hours >> hour) & 1
            if new_net + new_dev + new_hour >= rule.min_novel or (new_net and rule.new_network_alone):
                self.counts["novel"] += 1
                found = LoginNovelty(
                    user_id=user_id, novel=tuple(a for a, new in zip(ASPECTS, (new_net, new_dev, new_hour),
                                                                     strict=True) if new),
                    network=net, device=dev, hour=hour, baseline_logins=prof.logins,
                    known_networks=len(prof.networks), known_devices=len(prof.devices),
                    hours_mask=prof.hours, success=success)
        if success:
            self._learn(prof, net, dev, hour)
        return found

    def _learn(self, prof: _Profile, net: str | None, dev: str | None, hour: int) -> None:
        self.counts["learned"] += 1
        prof.logins = min(prof.logins + 1, _MAX_LOGINS)
        prof.hours |= 1 << hour
        if net is not None and _remember(prof.networks, net, self.rule.max_networks_per_user):
            self.counts["network_overflow"] += 1
        if dev is not None and _remember(prof.devices, dev, self.rule.max_devices_per_user):
            self.counts["device_overflow"] += 1

    def stats(self) -> dict[str, int]:
        """Counters, profiles tracked and profiles evicted."""
        return {**self.counts, "users": len(self._users), "user_evictions": self._users.evictions}

    def profile(self, user_id: str) -> dict[str, Any] | None:
        """One user's profile as data (operators, tests); None if not tracked."""
        prof = self._users.get(user_id)
        if prof is None:
            return None
        return {"logins": prof.logins, "networks": list(prof.networks), "devices": list(prof.devices),
                "hours": [h for h in range(24) if (prof.hours >> h) & 1]}


def _remember(seen: OrderedDict[str, None], key: str, cap: int) -> bool:
    """Mark ``key`` most recently seen; True if the least recently seen one had to go for room."""
    if key in seen:
        seen.move_to_end(key)
        return False
    seen[key] = None
    if len(seen) > cap:
        seen.popitem(last=False)
        return True
    return False


__all__ = ["ASPECTS", "LoginNovelty", "LoginPatterns", "device_of", "hour_of", "network_of"]
