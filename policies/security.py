"""Security detection (seed: SecurityMonitor): a pure state machine over auth, authz, data-access,
role-change and per-tick activity events, returning ``SecurityAlert`` values.

``SecurityAnalyzer`` never reads the clock: every method takes ``now`` (epoch seconds), and all
windows are measured in ``now`` — when replaying history, pass each event's own timestamp.
Per-entity state lives in LRU maps with caps (evictions counted); each event costs O(1)
amortised (deques capped at the rule's threshold, bucketed sums, bounded distinct-user sets).

Module map: ``security_events`` (inputs, baselines, the alert), ``detection_rules`` (the
``security.yaml`` model), ``security_alerts`` (each rule's alert), ``entity_state`` (LRU,
bucketed sums, suppression). The public names are re-exported here.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from policies import security_alerts as build
from policies.detection_rules import SecurityPolicy, compile_patterns, load_security_policy, report_severity
from policies.entity_state import BoundedLRU, BucketedSum, Suppressions
from policies.login_patterns import LoginPatterns
from policies.monitoring_watch import Watch, factor_for, lowered
from policies.security_events import (
    SEVERITY_RANK,
    AlertType,
    AuthEvent,
    AuthzEvent,
    DataAccessEvent,
    RoleChangeEvent,
    SecurityAlert,
    Severity,
    UserActivity,
    UserBaseline,
)

_CACHE_CAP = 4096  # per-string match caches (IP allowlist, privileged methods); cleared when full

_RULE_SECTION: dict[str, str] = {
    "brute_force_attempt": "brute_force",
    "credential_stuffing": "credential_stuffing",
    "unusual_api_volume": "unusual_api_volume",
    "unusual_service_access": "unusual_service_access",
    "data_exfiltration_suspected": "data_exfiltration",
    "privilege_escalation": "privilege_escalation",
    "excessive_data_access": "excessive_data_access",
    "unusual_login_pattern": "unusual_login_pattern",
}


class _UserState:
    __slots__ = ("denials", "failures", "reads", "records", "services", "volume")

    def __init__(self) -> None:
        self.failures: deque[float] | None = None
        self.denials: deque[tuple[float, str, str]] | None = None
        self.reads: BucketedSum | None = None
        self.records: BucketedSum | None = None
        self.volume: BucketedSum | None = None
        self.services: dict[str, float] | None = None  # service -> last seen, least recent first


class _IpState:
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


class SecurityAnalyzer:
    """The detection rules of ``security.yaml`` over bounded per-user and per-IP state."""

    def __init__(
        self, *, config: SecurityPolicy, baselines: Mapping[str, UserBaseline] | None = None
    ) -> None:
        self.config = config
        self._baselines: Mapping[str, UserBaseline] = baselines or {}
        self._default_baseline = config.default_baseline.as_baseline()
        limits = config.state
        self._users: BoundedLRU[str, _UserState] = BoundedLRU(capacity=limits.max_users)
        self._ips: BoundedLRU[str, _IpState] = BoundedLRU(capacity=limits.max_ips)
        self._suppress = Suppressions(capacity=limits.max_suppressions)
        self._events = dict.fromkeys(("auth", "authz", "data_access", "role_change", "activity"), 0)
        self._alerts: dict[str, int] = {}
        self._allowlisted = 0
        self._allow_users = config.allowlist.users
        nets = [ipaddress.ip_network(n, strict=False) for n in config.allowlist.ips]
        # Single addresses match by string (no parsing on the hot path); networks need parsing.
        self._allow_ip_exact = frozenset(str(n.network_address) for n in nets if n.num_addresses == 1)
        self._allow_nets = tuple(n for n in nets if n.num_addresses > 1)
        self._ip_cache: dict[str, bool] = {}
        pe = config.privilege_escalation
        self._privileged_re = compile_patterns(pe.privileged_methods)
        self._privileged_role_re = compile_patterns(pe.privileged_roles)
        self._method_cache: dict[str, bool] = {}
        self._watched: Mapping[str, Watch] = {}
        self.logins = LoginPatterns(config.unusual_login_pattern)

    def set_baselines(self, baselines: Mapping[str, UserBaseline]) -> None:
        """Replace the baselines used when a method is not given its own."""
        self._baselines = baselines

    def set_watched(self, watched: Mapping[str, Watch]) -> None:
        """Entities under heightened monitoring (``policies.monitoring_watch``): their thresholds
        are scaled by the watch's factor while it is active."""
        self._watched = watched

    def watched(self, entity: str, now: float) -> Watch | None:
        w = self._watched.get(entity)
        return w if w is not None and w.active(now) else None

    def _factor(self, now: float, *entities: str | None) -> float:
        return factor_for(self._watched, entities, now) if self._watched else 1.0

    # --- authentication ------------------------------------------------------------------------

    def on_auth(self, event: AuthEvent, now: float) -> list[SecurityAlert]:
        """Unusual login pattern (``policies.login_patterns``), then, for a failure, brute force
        (per user and per IP) and credential stuffing (distinct users per IP)."""
        self._events["auth"] += 1
        user, ip = event.user_id, event.ip_address
        allowed = (user is not None and user in self._allow_users) or (ip is not None and self._ip_allowed(ip))
        if event.success:
            return [] if allowed else self._login_pattern(event, now)
        if allowed:
            self._allowlisted += 1
            return []
        alerts = self._login_pattern(event, now)
        bf = self.config.brute_force
        ip_state = self._ips.get_or_create(ip, _IpState) if ip is not None else None
        ip_factor = self._factor(now, ip)
        if bf.enabled:
            user_burst = False
            if user is not None and bf.per_user:
                st = self._users.get_or_create(user, _UserState)
                if st.failures is None:
                    st.failures = deque(maxlen=bf.failures)
                user_burst = _burst(st.failures, now, bf.window, lowered(bf.failures, self._factor(now, user)))
                if user_burst and self._admit("brute_force_attempt", f"user:{user}", now):
                    alerts.append(build.brute_force(bf, user=user, ip=ip, keyed_by="user", now=now))
            if ip_state is not None and bf.per_ip:
                if ip_state.failures is None:
                    ip_state.failures = deque(maxlen=bf.failures)
                # The IP's window is always fed; a burst already reported for the user is the same
                # burst, so it is folded into that alert rather than reported twice.
                ip_burst = _burst(ip_state.failures, now, bf.window, lowered(bf.failures, ip_factor))
                if ip_burst and not user_burst and self._admit("brute_force_attempt", f"ip:{ip}", now):
                    alerts.append(build.brute_force(bf, user=user, ip=ip, keyed_by="ip", now=now))
        cs = self.config.credential_stuffing
        if cs.enabled and ip_state is not None and user is not None:
            names = _distinct_burst(ip_state, user, now, cs.window, max(2, lowered(cs.distinct_users, ip_factor)))
            if names and self._admit("credential_stuffing", f"ip:{ip}", now):
                alerts.append(build.credential_stuffing(cs, ip=str(ip), users=names, now=now))
        return alerts

    def _login_pattern(self, event: AuthEvent, now: float) -> list[SecurityAlert]:
        rule = self.config.unusual_login_pattern
        found = self.logins.observe(user_id=event.user_id, ip=event.ip_address, user_agent=event.user_agent,
                                    success=event.success, now=now)
        if found is None or not self._admit("unusual_login_pattern", f"user:{found.user_id}", now):
            return []
        severity = report_severity(self.config, rule.reporter, rule.severity)
        return [build.login_pattern(rule, found=found, ip=event.ip_address, severity=severity, now=now)]

    # --- authorization and roles ---------------------------------------------------------------

    def on_authz(self, event: AuthzEvent, now: float) -> list[SecurityAlert]:
        """Privilege escalation: denials on privileged methods, then a success, within a window."""
        self._events["authz"] += 1
        pe = self.config.privilege_escalation
        if not pe.enabled or not self._is_privileged(event.method):
            return []
        user = event.user_id
        if user in self._allow_users or (event.ip_address is not None and self._ip_allowed(event.ip_address)):
            self._allowlisted += 1
            return []
        if not event.allowed:
            st = self._users.get_or_create(user, _UserState)
            if st.denials is None:
                st.denials = deque(maxlen=pe.min_denials)
            st.denials.append((now, event.service, event.method))
            return []
        known = self._users.get(user)  # a success alone creates no state
        dq = known.denials if known is not None else None
        if not dq:
            return []
        cutoff = now - pe.window
        while dq and dq[0][0] <= cutoff:
            dq.popleft()
        if len(dq) < pe.min_denials:
            return []
        denied = [f"{svc}.{m}" for _, svc, m in dq]
        dq.clear()
        if not self._admit("privilege_escalation", f"user:{user}", now):
            return []
        return [
            build.denied_then_allowed(
                pe,
                user=user,
                ip=event.ip_address,
                denied=denied,
                allowed=f"{event.service}.{event.method}",
                roles=sorted(event.roles),
                now=now,
            )
        ]

    def on_role_change(self, event: RoleChangeEvent, now: float) -> list[SecurityAlert]:
        """Privilege escalation by a role change that grants a privileged role."""
        self._events["role_change"] += 1
        pe = self.config.privilege_escalation
        if not pe.enabled:
            return []
        added = event.new_roles - event.old_roles
        granted = sorted(r for r in added if self._privileged_role_re.match(r))
        if not granted or not self._admit("privilege_escalation", f"role:{event.user_id}", now):
            return []
        return [build.role_granted(pe, event=event, granted=granted, now=now)]

    # --- data access ---------------------------------------------------------------------------

    def on_data_access(
        self, event: DataAccessEvent, now: float, baselines: Mapping[str, UserBaseline] | None = None
    ) -> list[SecurityAlert]:
        """Excessive data access (GDPR Art. 5(1)(c)) and suspected exfiltration (reads above both
        an absolute cap and k x the user's baseline for the window)."""
        self._events["data_access"] += 1
        user, n = event.user_id, event.record_count
        if n <= 0:
            return []
        if user in self._allow_users:
            self._allowlisted += 1
            return []
        st = self._users.get_or_create(user, _UserState)
        alerts: list[SecurityAlert] = []
        factor = self._factor(now, user)
        ex = self.config.excessive_data_access
        if ex.enabled:
            if st.records is None:
                st.records = BucketedSum(window_s=ex.window, buckets=ex.buckets)
            total = st.records.add(now, n)
            if total > ex.max_records * factor and self._admit("excessive_data_access", f"user:{user}", now):
                alerts.append(build.excessive_access(ex, event=event, total=total, now=now,
                                                     single_event=n > ex.max_records))
        de = self.config.data_exfiltration
        if de.enabled and event.operation.lower() in de.read_operations:
            if st.reads is None:
                st.reads = BucketedSum(window_s=de.window, buckets=de.buckets)
            reads = st.reads.add(now, n)
            if reads > de.min_records * factor:
                expected = self._baseline(user, baselines)[0].records_per_day * de.window / 86400.0
                if reads > de.baseline_multiplier * expected and self._admit(
                    "data_exfiltration_suspected", f"user:{user}", now
                ):
                    # One event over both thresholds on its own: nothing but its word behind it.
                    single = n > de.min_records and n > de.baseline_multiplier * expected
                    alerts.append(build.exfiltration(de, event=event, total=reads, expected=expected, now=now,
                                                     single_event=single))
        return alerts

    # --- periodic activity ---------------------------------------------------------------------

    def on_activity(
        self, batch: Iterable[UserActivity], baselines: Mapping[str, UserBaseline] | None, now: float
    ) -> list[SecurityAlert]:
        """Pattern rules over per-tick call counts: unusual volume (> multiplier x the baseline
        requests per hour over the window) and unusual service access (>= N services outside the
        baseline set). ``baselines=None`` uses the ones given to ``set_baselines``."""
        vol = self.config.unusual_api_volume
        svc = self.config.unusual_service_access
        alerts: list[SecurityAlert] = []
        for act in batch:
            self._events["activity"] += 1
            user = act.user_id
            if user in self._allow_users:
                self._allowlisted += 1
                continue
            st = self._users.get_or_create(user, _UserState)
            base, profiled = self._baseline(user, baselines)
            if vol.enabled:
                if st.volume is None:
                    st.volume = BucketedSum(window_s=vol.window, buckets=vol.buckets)
                count = st.volume.add(now, sum(act.calls.values()))
                per_hour = max(vol.multiplier * base.requests_per_hour, vol.min_requests_per_hour) * self._factor(
                    now, user)
                if count > per_hour * vol.window / 3600.0 and self._admit(
                    "unusual_api_volume", f"user:{user}", now
                ):
                    alerts.append(
                        build.api_volume(
                            vol, user=user, count=count, baseline=base, profiled=profiled, now=now
                        )
                    )
            if svc.enabled:
                seen = st.services
                if seen is None:
                    seen = st.services = {}
                _record_services(seen, act.calls, now, svc.window, svc.max_services_per_user)
                if profiled or not svc.require_baseline:
                    new = sorted(s for s in seen if s not in base.services)
                    if len(new) >= svc.new_services and self._admit(
                        "unusual_service_access", f"user:{user}", now
                    ):
                        alerts.append(build.service_access(svc, user=user, new=new, baseline=base, now=now))
        return alerts

    # --- observability -------------------------------------------------------------------------

    def stats(self) -> SecurityStats:
        """Events seen, alerts raised per type, suppressed and allowlisted counts, evictions."""
        logins = self.logins.stats()
        return SecurityStats(
            events=dict(self._events),
            alerts=dict(self._alerts),
            suppressed=self._suppress.suppressed,
            allowlisted=self._allowlisted,
            evictions={
                "users": self._users.evictions,
                "ips": self._ips.evictions,
                "suppressions": self._suppress.evictions,
                "login_users": logins["user_evictions"],
                "login_networks": logins["network_overflow"],
                "login_devices": logins["device_overflow"],
            },
            tracked={"users": len(self._users), "ips": len(self._ips), "suppressions": len(self._suppress),
                     "login_users": logins["users"]},
        )

    # --- internals -----------------------------------------------------------------------------

    def _admit(self, rule: AlertType, entity: str, now: float) -> bool:
        """True if an alert for (rule, entity) may be sent now (not inside its suppression window).
        Callers build the alert only after this says yes, so suppressed bursts stay cheap."""
        cfg = getattr(self.config, _RULE_SECTION[rule])
        if not self._suppress.admit(rule, entity, now, cfg.suppress_for):
            return False
        self._alerts[rule] = self._alerts.get(rule, 0) + 1
        return True

    def _baseline(self, user: str, baselines: Mapping[str, UserBaseline] | None) -> tuple[UserBaseline, bool]:
        """The user's baseline and whether it is theirs (False: the configured default)."""
        known = (baselines if baselines is not None else self._baselines).get(user)
        return (known, True) if known is not None else (self._default_baseline, False)

    def _ip_allowed(self, ip: str) -> bool:
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

    def _is_privileged(self, method: str) -> bool:
        hit = self._method_cache.get(method)
        if hit is None:
            hit = self._privileged_re.match(method) is not None
            if len(self._method_cache) >= _CACHE_CAP:
                self._method_cache.clear()
            self._method_cache[method] = hit
        return hit


def _burst(dq: deque[float], now: float, window: float, threshold: int) -> bool:
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


def _distinct_burst(st: _IpState, user: str, now: float, window: float, threshold: int) -> list[str]:
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


def _record_services(
    seen: dict[str, float], calls: Mapping[str, int], now: float, window: float, cap: int
) -> None:
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


__all__ = [
    "SEVERITY_RANK",
    "AlertType",
    "AuthEvent",
    "AuthzEvent",
    "DataAccessEvent",
    "RoleChangeEvent",
    "SecurityAlert",
    "SecurityAnalyzer",
    "SecurityPolicy",
    "SecurityStats",
    "Severity",
    "UserActivity",
    "UserBaseline",
    "load_security_policy",
]
