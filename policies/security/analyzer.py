"""Security detection (seed: SecurityMonitor): a pure state machine over auth, authz, data-access,
role-change and per-tick activity events, returning ``SecurityAlert`` values.

``SecurityAnalyzer`` never reads the clock: every method takes ``now`` (epoch seconds), and all
windows are measured in ``now`` — when replaying history, pass each event's own timestamp.
Per-entity state lives in LRU maps with caps (evictions counted); each event costs O(1)
amortised (deques capped at the rule's threshold, bucketed sums, bounded distinct-user sets).

The rules themselves are :data:`policies.security.rules.DETECTION_RULES` (one class each, behind
the ``DetectionRule`` interface); the analyzer counts each event, drops what the allowlist
exempts, and hands the event to every enabled rule that reads its kind, in registry order.

Module map: ``security_events`` (inputs, baselines, the alert), ``detection_rules`` (the
``security.yaml`` model), ``security_rules*`` (the rules), ``security_state`` (their shared
state), ``security_alerts`` (each rule's alert), ``entity_state`` (LRU, bucketed sums,
suppression). The public names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from policies.response.monitoring_watch import Watch
from policies.security.detection_rules import SecurityPolicy, load_security_policy
from policies.security.events import (
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
from policies.security.login_patterns import LoginPatterns
from policies.security.rules import DETECTION_RULES
from policies.security.rules_base import DetectionRule, EventKind, SecurityEvent
from policies.security.rules_login import BruteForce
from policies.security.state import IpState, RuleState, SecurityStats, UserState


class SecurityAnalyzer:
    """The detection rules of ``security.yaml`` over bounded per-user and per-IP state."""

    def __init__(
        self, *, config: SecurityPolicy, baselines: Mapping[str, UserBaseline] | None = None,
        rules: Mapping[str, type[DetectionRule]] | None = None,
    ) -> None:
        self.config = config
        self.state = RuleState(config, baselines)
        registry = DETECTION_RULES if rules is None else rules
        self.rules: tuple[DetectionRule, ...] = tuple(
            cls(config) for name, cls in registry.items() if getattr(config, name).enabled)
        by_kind: dict[EventKind, list[DetectionRule]] = {}
        for rule in self.rules:
            for kind in rule.events:
                by_kind.setdefault(kind, []).append(rule)
        self._auth, self._authz, self._roles, self._access, self._activity = (
            tuple(by_kind.get(k, ())) for k in ("auth", "authz", "role_change", "data_access", "activity"))
        # Per-IP brute force creates every failing source's entry itself.
        self._tracks_ips = any(isinstance(r, BruteForce) and r.rule.per_ip for r in self.rules)

    @property
    def logins(self) -> LoginPatterns:
        """What the unusual-login-pattern rule has learned (profiles per user)."""
        return self.state.logins

    def set_baselines(self, baselines: Mapping[str, UserBaseline]) -> None:
        """Replace the baselines used when a method is not given its own."""
        self.state.baselines = baselines

    def set_watched(self, watched: Mapping[str, Watch]) -> None:
        """Entities under heightened monitoring (``policies.response.monitoring_watch``): their thresholds
        are scaled by the watch's factor while it is active."""
        self.state.watched = watched

    def watched(self, entity: str, now: float) -> Watch | None:
        w = self.state.watched.get(entity)
        return w if w is not None and w.active(now) else None

    def _run(self, rules: tuple[DetectionRule, ...], event: SecurityEvent, now: float) -> list[SecurityAlert]:
        if len(rules) == 1:
            return rules[0].evaluate(event, self.state, now)
        alerts: list[SecurityAlert] = []
        for rule in rules:
            found = rule.evaluate(event, self.state, now)
            if found:
                alerts += found
        return alerts

    def on_auth(self, event: AuthEvent, now: float) -> list[SecurityAlert]:
        """Unusual login pattern, then, for a failure, brute force (per user and per IP) and
        credential stuffing (distinct users per IP). Allowlisted attempts reach no rule (a failed
        one is counted as allowlisted)."""
        st = self.state
        st.events["auth"] += 1
        user, ip = event.user_id, event.ip_address
        allowed = (user is not None and user in st.allow_users) or (ip is not None and st.ip_allowed(ip))
        if allowed:
            if not event.success:
                st.allowlisted += 1
            return []
        if not event.success and ip is not None and not self._tracks_ips:
            st.ips.get_or_create(ip, IpState)  # a failing source is tracked whatever the rules say
        return self._run(self._auth, event, now)

    def on_authz(self, event: AuthzEvent, now: float) -> list[SecurityAlert]:
        """Privilege escalation: denials on privileged methods, then a success, within a window
        (the rule applies the allowlist: only a privileged call counts as allowlisted)."""
        self.state.events["authz"] += 1
        return self._run(self._authz, event, now)

    def on_role_change(self, event: RoleChangeEvent, now: float) -> list[SecurityAlert]:
        """Privilege escalation by a role change that grants a privileged role."""
        self.state.events["role_change"] += 1
        return self._run(self._roles, event, now)

    def on_data_access(
        self, event: DataAccessEvent, now: float, baselines: Mapping[str, UserBaseline] | None = None
    ) -> list[SecurityAlert]:
        """Excessive data access (GDPR Art. 5(1)(c)) and suspected exfiltration (reads above both
        an absolute cap and k x the user's baseline for the window)."""
        st = self.state
        st.events["data_access"] += 1
        if event.record_count <= 0:
            return []
        if event.user_id in st.allow_users:
            st.allowlisted += 1
            return []
        if not self._access:  # the user is tracked whatever the rules say (the rules touch it too)
            st.users.get_or_create(event.user_id, UserState)
            return []
        if baselines is None:
            return self._run(self._access, event, now)
        st.baselines_override = baselines
        try:
            return self._run(self._access, event, now)
        finally:
            st.baselines_override = None

    def on_activity(
        self, batch: Iterable[UserActivity], baselines: Mapping[str, UserBaseline] | None, now: float
    ) -> list[SecurityAlert]:
        """Pattern rules over per-tick call counts: unusual volume (> multiplier x the baseline
        requests per hour over the window) and unusual service access (>= N services outside the
        baseline set). ``baselines=None`` uses the ones given to ``set_baselines``."""
        st = self.state
        alerts: list[SecurityAlert] = []
        st.baselines_override = baselines
        try:
            for act in batch:
                st.events["activity"] += 1
                if act.user_id in st.allow_users:
                    st.allowlisted += 1
                    continue
                if not self._activity:
                    st.users.get_or_create(act.user_id, UserState)
                    continue
                alerts += self._run(self._activity, act, now)
        finally:
            st.baselines_override = None
        return alerts

    def stats(self) -> SecurityStats:
        """Events seen, alerts raised per type, suppressed and allowlisted counts, evictions."""
        return self.state.stats()


__all__ = [
    "DETECTION_RULES",
    "SEVERITY_RANK",
    "AlertType",
    "AuthEvent",
    "AuthzEvent",
    "DataAccessEvent",
    "DetectionRule",
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
