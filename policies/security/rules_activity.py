"""Pattern rules over each user's calls per service (``SecurityAnalyzer.on_activity``, one
:class:`~policies.security.events.UserActivity` at a time): unusual API volume and unusual service
access. Each is a :class:`~policies.security.rules.DetectionRule`."""

from __future__ import annotations

from typing import ClassVar

from policies.security import alerts as build
from policies.security.detection_rules import SecurityPolicy
from policies.security.entity_state import BucketedSum
from policies.security.events import SecurityAlert, UserActivity
from policies.security.rules_base import EventKind, SecurityEvent
from policies.security.state import RuleState, UserState, record_services


class UnusualApiVolume:
    """More calls in the window than ``multiplier`` x the user's baseline requests per hour (with
    a floor, ``min_requests_per_hour``)."""

    name: ClassVar[str] = "unusual_api_volume"
    events: ClassVar[tuple[EventKind, ...]] = ("activity",)

    def __init__(self, policy: SecurityPolicy) -> None:
        self.rule = policy.unusual_api_volume

    def evaluate(self, event: SecurityEvent, state: RuleState, now: float) -> list[SecurityAlert]:
        if not isinstance(event, UserActivity):
            return []
        vol, user = self.rule, event.user_id
        st = state.users.get_or_create(user, UserState)
        base, profiled = state.baseline(user)
        if st.volume is None:
            st.volume = BucketedSum(window_s=vol.window, buckets=vol.buckets)
        count = st.volume.add(now, sum(event.calls.values()))
        per_hour = max(vol.multiplier * base.requests_per_hour, vol.min_requests_per_hour) * state.factor(now, user)
        if count > per_hour * vol.window / 3600.0 and state.admit("unusual_api_volume", f"user:{user}", now,
                                                                  vol.suppress_for):
            return [build.api_volume(vol, user=user, count=count, baseline=base, profiled=profiled, now=now)]
        return []


class UnusualServiceAccess:
    """At least ``new_services`` services outside the user's usual set within the window (a user
    without a baseline has no usual set: no verdict unless ``require_baseline`` is off)."""

    name: ClassVar[str] = "unusual_service_access"
    events: ClassVar[tuple[EventKind, ...]] = ("activity",)

    def __init__(self, policy: SecurityPolicy) -> None:
        self.rule = policy.unusual_service_access

    def evaluate(self, event: SecurityEvent, state: RuleState, now: float) -> list[SecurityAlert]:
        if not isinstance(event, UserActivity):
            return []
        svc, user = self.rule, event.user_id
        st = state.users.get_or_create(user, UserState)
        base, profiled = state.baseline(user)
        seen = st.services
        if seen is None:
            seen = st.services = {}
        record_services(seen, event.calls, now, svc.window, svc.max_services_per_user)
        if not (profiled or not svc.require_baseline):
            return []
        new = sorted(s for s in seen if s not in base.services)
        if len(new) >= svc.new_services and state.admit("unusual_service_access", f"user:{user}", now,
                                                        svc.suppress_for):
            return [build.service_access(svc, user=user, new=new, baseline=base, now=now)]
        return []
