"""Detection rules over authorization decisions, role changes and data access: privilege
escalation (denied privileged calls then a success; a privileged role granted), excessive data
access (GDPR Art. 5(1)(c)) and suspected exfiltration. Each is a
:class:`~policies.security.rules.DetectionRule`."""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from policies.security import alerts as build
from policies.security.detection_rules import SecurityPolicy, compile_patterns
from policies.security.entity_state import BucketedSum
from policies.security.events import AuthzEvent, DataAccessEvent, RoleChangeEvent, SecurityAlert
from policies.security.rules_base import EventKind, SecurityEvent
from policies.security.state import RuleState, UserState

_CACHE_CAP = 4096  # privileged-method match cache; cleared when full


class PrivilegeEscalation:
    """Denials on privileged methods, then a success, within a window (authz events; allowlisted
    users and addresses are counted here, for privileged calls only); or a role change that grants
    a privileged role."""

    name: ClassVar[str] = "privilege_escalation"
    events: ClassVar[tuple[EventKind, ...]] = ("authz", "role_change")

    def __init__(self, policy: SecurityPolicy) -> None:
        self.rule = policy.privilege_escalation
        self._privileged_re = compile_patterns(self.rule.privileged_methods)
        self._privileged_role_re = compile_patterns(self.rule.privileged_roles)
        self._method_cache: dict[str, bool] = {}

    def evaluate(self, event: SecurityEvent, state: RuleState, now: float) -> list[SecurityAlert]:
        if isinstance(event, AuthzEvent):
            return self._authz(event, state, now)
        if isinstance(event, RoleChangeEvent):
            return self._role_change(event, state, now)
        return []

    def _authz(self, event: AuthzEvent, state: RuleState, now: float) -> list[SecurityAlert]:
        pe = self.rule
        if not self._is_privileged(event.method):
            return []
        user = event.user_id
        if user in state.allow_users or (event.ip_address is not None and state.ip_allowed(event.ip_address)):
            state.allowlisted += 1
            return []
        if not event.allowed:
            st = state.users.get_or_create(user, UserState)
            if st.denials is None:
                st.denials = deque(maxlen=pe.min_denials)
            st.denials.append((now, event.service, event.method))
            return []
        known = state.users.get(user)  # a success alone creates no state
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
        if not state.admit("privilege_escalation", f"user:{user}", now, pe.suppress_for):
            return []
        return [build.denied_then_allowed(pe, user=user, ip=event.ip_address, denied=denied,
                                          allowed=f"{event.service}.{event.method}", roles=sorted(event.roles),
                                          now=now)]

    def _role_change(self, event: RoleChangeEvent, state: RuleState, now: float) -> list[SecurityAlert]:
        added = event.new_roles - event.old_roles
        granted = sorted(r for r in added if self._privileged_role_re.match(r))
        if not granted or not state.admit("privilege_escalation", f"role:{event.user_id}", now,
                                          self.rule.suppress_for):
            return []
        return [build.role_granted(self.rule, event=event, granted=granted, now=now)]

    def _is_privileged(self, method: str) -> bool:
        hit = self._method_cache.get(method)
        if hit is None:
            hit = self._privileged_re.match(method) is not None
            if len(self._method_cache) >= _CACHE_CAP:
                self._method_cache.clear()
            self._method_cache[method] = hit
        return hit


class ExcessiveDataAccess:
    """More records than ``max_records`` in the window (scaled down for a watched user)."""

    name: ClassVar[str] = "excessive_data_access"
    events: ClassVar[tuple[EventKind, ...]] = ("data_access",)

    def __init__(self, policy: SecurityPolicy) -> None:
        self.rule = policy.excessive_data_access

    def evaluate(self, event: SecurityEvent, state: RuleState, now: float) -> list[SecurityAlert]:
        if not isinstance(event, DataAccessEvent):
            return []
        ex, user, n = self.rule, event.user_id, event.record_count
        st = state.users.get_or_create(user, UserState)
        if st.records is None:
            st.records = BucketedSum(window_s=ex.window, buckets=ex.buckets)
        total = st.records.add(now, n)
        if total > ex.max_records * state.factor(now, user) and state.admit(
                "excessive_data_access", f"user:{user}", now, ex.suppress_for):
            return [build.excessive_access(ex, event=event, total=total, now=now, single_event=n > ex.max_records)]
        return []


class DataExfiltration:
    """Reads in the window above both an absolute cap and k x the user's baseline for it."""

    name: ClassVar[str] = "data_exfiltration"
    events: ClassVar[tuple[EventKind, ...]] = ("data_access",)

    def __init__(self, policy: SecurityPolicy) -> None:
        self.rule = policy.data_exfiltration

    def evaluate(self, event: SecurityEvent, state: RuleState, now: float) -> list[SecurityAlert]:
        if not isinstance(event, DataAccessEvent) or event.operation.lower() not in self.rule.read_operations:
            return []
        de, user, n = self.rule, event.user_id, event.record_count
        st = state.users.get_or_create(user, UserState)
        if st.reads is None:
            st.reads = BucketedSum(window_s=de.window, buckets=de.buckets)
        reads = st.reads.add(now, n)
        if reads <= de.min_records * state.factor(now, user):
            return []
        expected = state.baseline(user)[0].records_per_day * de.window / 86400.0
        if reads > de.baseline_multiplier * expected and state.admit(
                "data_exfiltration_suspected", f"user:{user}", now, de.suppress_for):
            # One event over both thresholds on its own: nothing but its word behind it.
            single = n > de.min_records and n > de.baseline_multiplier * expected
            return [build.exfiltration(de, event=event, total=reads, expected=expected, now=now,
                                       single_event=single)]
        return []
