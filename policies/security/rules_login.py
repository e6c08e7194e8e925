"""Detection rules over login attempts (``security/auth/+``): unusual login pattern, brute force
(per user and per IP) and credential stuffing (many users failing from one IP). Each is a
:class:`~policies.security.rules.DetectionRule`; the analyzer has already dropped allowlisted
attempts and counted the event."""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from policies.response.monitoring_watch import lowered
from policies.security import alerts as build
from policies.security.detection_rules import SecurityPolicy, report_severity
from policies.security.events import AuthEvent, SecurityAlert
from policies.security.rules_base import EventKind, SecurityEvent
from policies.security.state import IpState, RuleState, UserState, burst, distinct_burst


class UnusualLoginPattern:
    """A login unlike the user's earlier successful ones (``policies.security.login_patterns``), its
    severity capped like a service's own report."""

    name: ClassVar[str] = "unusual_login_pattern"
    events: ClassVar[tuple[EventKind, ...]] = ("auth",)

    def __init__(self, policy: SecurityPolicy) -> None:
        self.rule = policy.unusual_login_pattern
        self.severity = report_severity(policy, self.rule.reporter, self.rule.severity)

    def evaluate(self, event: SecurityEvent, state: RuleState, now: float) -> list[SecurityAlert]:
        if not isinstance(event, AuthEvent):
            return []
        found = state.logins.observe(user_id=event.user_id, ip=event.ip_address, user_agent=event.user_agent,
                                     success=event.success, now=now)
        if found is None or not state.admit("unusual_login_pattern", f"user:{found.user_id}", now,
                                            self.rule.suppress_for):
            return []
        return [build.login_pattern(self.rule, found=found, ip=event.ip_address, severity=self.severity, now=now)]


class BruteForce:
    """Failed logins in a window, per user and per IP; a burst already reported for the user is
    the same burst as the IP's, so it is folded into that alert rather than reported twice."""

    name: ClassVar[str] = "brute_force"
    events: ClassVar[tuple[EventKind, ...]] = ("auth",)

    def __init__(self, policy: SecurityPolicy) -> None:
        self.rule = policy.brute_force

    def evaluate(self, event: SecurityEvent, state: RuleState, now: float) -> list[SecurityAlert]:
        if not isinstance(event, AuthEvent) or event.success:
            return []
        bf, user, ip = self.rule, event.user_id, event.ip_address
        alerts: list[SecurityAlert] = []
        user_burst = False
        if user is not None and bf.per_user:
            st = state.users.get_or_create(user, UserState)
            if st.failures is None:
                st.failures = deque(maxlen=bf.failures)
            user_burst = burst(st.failures, now, bf.window, lowered(bf.failures, state.factor(now, user)))
            if user_burst and state.admit("brute_force_attempt", f"user:{user}", now, bf.suppress_for):
                alerts.append(build.brute_force(bf, user=user, ip=ip, keyed_by="user", now=now))
        if ip is not None and bf.per_ip:
            ip_state = state.ips.get_or_create(ip, IpState)
            if ip_state.failures is None:
                ip_state.failures = deque(maxlen=bf.failures)
            # The IP's window is always fed, even when the user's burst is the one reported.
            ip_burst = burst(ip_state.failures, now, bf.window, lowered(bf.failures, state.factor(now, ip)))
            if ip_burst and not user_burst and state.admit("brute_force_attempt", f"ip:{ip}", now, bf.suppress_for):
                alerts.append(build.brute_force(bf, user=user, ip=ip, keyed_by="ip", now=now))
        return alerts


class CredentialStuffing:
    """Failures for many distinct users from one IP within a window."""

    name: ClassVar[str] = "credential_stuffing"
    events: ClassVar[tuple[EventKind, ...]] = ("auth",)

    def __init__(self, policy: SecurityPolicy) -> None:
        self.rule = policy.credential_stuffing

    def evaluate(self, event: SecurityEvent, state: RuleState, now: float) -> list[SecurityAlert]:
        if not isinstance(event, AuthEvent) or event.success:
            return []
        cs, user, ip = self.rule, event.user_id, event.ip_address
        if ip is None or user is None:
            return []
        threshold = max(2, lowered(cs.distinct_users, state.factor(now, ip)))
        names = distinct_burst(state.ips.get_or_create(ip, IpState), user, now, cs.window, threshold)
        if names and state.admit("credential_stuffing", f"ip:{ip}", now, cs.suppress_for):
            return [build.credential_stuffing(cs, ip=ip, users=names, now=now)]
        return []
