"""The alert each detection rule raises: wording, metadata and recommended actions in one place.

Metadata keys are snake_case, as in the seed's SecurityAlert (``user_id``, ``request_count``,
``baseline_count``, ``time_window``); values are JSON-ready.
"""

from __future__ import annotations

from policies.common.config import format_duration
from policies.security.detection_rules import (
    ApiVolumeRule,
    BruteForceRule,
    CredentialStuffingRule,
    ExcessiveAccessRule,
    ExfiltrationRule,
    LoginPatternRule,
    PrivilegeEscalationRule,
    ServiceAccessRule,
)
from policies.security.events import (
    DataAccessEvent,
    RoleChangeEvent,
    SecurityAlert,
    Severity,
    UserBaseline,
)
from policies.security.login_patterns import LoginNovelty


def brute_force(
    rule: BruteForceRule, *, user: str | None, ip: str | None, keyed_by: str, now: float
) -> SecurityAlert:
    """``keyed_by`` is ``"user"`` (failures against one account) or ``"ip"`` (from one address)."""
    target = (user if keyed_by == "user" else ip) or ""
    return SecurityAlert(
        type="brute_force_attempt",
        severity=rule.severity,
        source=ip or target,
        target=target,
        user_id=user,
        ip_address=ip,
        timestamp=now,
        description=f"Detected {rule.failures} failed login attempts within {format_duration(rule.window)}",
        metadata={
            "key": keyed_by,
            "failures": rule.failures,
            "user_id": user,
            "ip_address": ip,
            "time_window": format_duration(rule.window),
        },
        recommended_actions=(
            "Block IP address",
            "Lock user account if targeted",
            "Review authentication logs",
            "Check for credential leaks",
        ),
    )


def credential_stuffing(
    rule: CredentialStuffingRule, *, ip: str, users: list[str], now: float
) -> SecurityAlert:
    return SecurityAlert(
        type="credential_stuffing",
        severity=rule.severity,
        source=ip,
        target=ip,
        ip_address=ip,
        timestamp=now,
        description=f"Failed logins for {len(users)} distinct users from {ip} "
        f"within {format_duration(rule.window)}",
        metadata={
            "ip_address": ip,
            "distinct_users": len(users),
            "users": users,
            "time_window": format_duration(rule.window),
        },
        recommended_actions=(
            "Block IP address",
            "Force password reset for listed users",
            "Check for credential leaks",
        ),
    )


def denied_then_allowed(
    rule: PrivilegeEscalationRule,
    *,
    user: str,
    ip: str | None,
    denied: list[str],
    allowed: str,
    roles: list[str],
    now: float,
) -> SecurityAlert:
    return SecurityAlert(
        type="privilege_escalation",
        severity=rule.severity,
        source=user,
        target=user,
        user_id=user,
        ip_address=ip,
        timestamp=now,
        description=f"User {user} was denied {len(denied)} privileged call(s) then allowed {allowed} "
        f"within {format_duration(rule.window)}",
        metadata={
            "user_id": user,
            "trigger": "denied_then_allowed",
            "denied": denied,
            "allowed": allowed,
            "roles": roles,
            "time_window": format_duration(rule.window),
        },
        recommended_actions=("Review the user's role assignments", "Review authorization logs"),
    )


def role_granted(
    rule: PrivilegeEscalationRule, *, event: RoleChangeEvent, granted: list[str], now: float
) -> SecurityAlert:
    user = event.user_id
    self_grant = event.changed_by is not None and event.changed_by == user
    by = " by themselves" if self_grant else f" by {event.changed_by or 'an unknown actor'}"
    return SecurityAlert(
        type="privilege_escalation",
        severity=rule.self_grant_severity if self_grant else rule.role_change_severity,
        source=event.changed_by or user,
        target=user,
        user_id=user,
        timestamp=now,
        description=f"User {user} was granted {', '.join(granted)}{by}",
        metadata={
            "user_id": user,
            "trigger": "role_change",
            "granted_roles": granted,
            "changed_by": event.changed_by,
            "self_granted": self_grant,
            "old_roles": sorted(event.old_roles),
            "new_roles": sorted(event.new_roles),
        },
        recommended_actions=("Confirm the change with the approver", "Review the audit trail"),
    )


def excessive_access(
    rule: ExcessiveAccessRule, *, event: DataAccessEvent, total: int, now: float, single_event: bool = False
) -> SecurityAlert:
    """``single_event``: this one event crossed the limit on its own."""
    user = event.user_id
    return SecurityAlert(
        type="excessive_data_access",
        severity=rule.severity,
        source=user,
        target=user,
        user_id=user,
        timestamp=now,
        description=f"User accessed {total} records in {format_duration(rule.window)}",
        metadata={
            "user_id": user,
            "record_count": total,
            "limit": rule.max_records,
            "time_window": format_duration(rule.window),
            "regulation": rule.regulation,
            "last_collection": f"{event.service}/{event.collection}",
            "single_event": single_event,
        },
        recommended_actions=("Review the user's need for this data",),
    )


def exfiltration(
    rule: ExfiltrationRule,
    *,
    event: DataAccessEvent,
    total: int,
    expected: float,
    now: float,
    single_event: bool = False,
) -> SecurityAlert:
    """``single_event``: this one event crossed both thresholds on its own."""
    user = event.user_id
    return SecurityAlert(
        type="data_exfiltration_suspected",
        severity=rule.severity,
        source=user,
        target=user,
        user_id=user,
        timestamp=now,
        description=f"User {user} read {total} records in {format_duration(rule.window)} "
        f"(baseline {expected:.0f})",
        metadata={
            "user_id": user,
            "records_read": total,
            "absolute_cap": rule.min_records,
            "baseline_records": expected,
            "multiplier": rule.baseline_multiplier,
            "time_window": format_duration(rule.window),
            "last_collection": f"{event.service}/{event.collection}",
            "single_event": single_event,
        },
        recommended_actions=("Suspend the user", "Block data access", "Preserve evidence"),
    )


def api_volume(
    rule: ApiVolumeRule, *, user: str, count: int, baseline: UserBaseline, profiled: bool, now: float
) -> SecurityAlert:
    expected = baseline.requests_per_hour * rule.window / 3600.0
    return SecurityAlert(
        type="unusual_api_volume",
        severity=rule.severity,
        source=user,
        target=user,
        user_id=user,
        timestamp=now,
        description=f"User {user} made {count} API calls in {format_duration(rule.window)} "
        f"(baseline: {expected:.0f})",
        metadata={
            "user_id": user,
            "request_count": count,
            "baseline_count": expected,
            "baseline_source": "user" if profiled else "default",
            "time_window": format_duration(rule.window),
        },
        recommended_actions=("Rate limit the user", "Enable enhanced logging"),
    )


def service_access(
    rule: ServiceAccessRule, *, user: str, new: list[str], baseline: UserBaseline, now: float
) -> SecurityAlert:
    return SecurityAlert(
        type="unusual_service_access",
        severity=rule.severity,
        source=user,
        target=user,
        user_id=user,
        timestamp=now,
        description=f"User {user} accessed {len(new)} services outside normal pattern",
        metadata={
            "user_id": user,
            "new_services": new,
            "typical_services": sorted(baseline.services),
            "time_window": format_duration(rule.window),
        },
        recommended_actions=("Confirm the access with the user's team", "Enable enhanced logging"),
    )


def login_pattern(
    rule: LoginPatternRule, *, found: LoginNovelty, ip: str | None, severity: Severity, now: float
) -> SecurityAlert:
    """A login unlike the user's earlier ones; ``severity`` is the rule's, already capped."""
    outcome = "login" if found.success else "failed login"
    return SecurityAlert(
        type="unusual_login_pattern",
        severity=severity,
        source=ip or found.user_id,
        target=found.user_id,
        user_id=found.user_id,
        ip_address=ip,
        timestamp=now,
        description=f"Unusual {outcome} for {found.user_id}: new {', '.join(found.novel)} "
        f"(against {found.baseline_logins} earlier logins)",
        metadata={**found.details(), "ip_address": ip, "min_novel": rule.min_novel},
        recommended_actions=("Confirm the login with the user", "Review the user's recent sessions",
                             "Require re-authentication if not recognised"),
    )
