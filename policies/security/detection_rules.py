"""Detection rule configuration: the ``policies/security.yaml`` model.

Defaults are the seed's numbers (SecurityMonitor, AuditLogger.CheckComplianceViolations); every
rule is keyed by an entity (user or IP), windowed, and suppressed per entity for ``suppress_for``.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from pathlib import Path

from pydantic import Field, field_validator

from policies.common.config import Duration, PolicyModel, load_policy
from policies.security.events import SEVERITY_RANK, Severity, UserBaseline

# --- configuration (policies/security.yaml) ---------------------------------------------------


class RuleConfig(PolicyModel):
    enabled: bool = True
    severity: Severity = "warning"
    suppress_for: Duration = Field(default=900.0, description="one alert per entity per this long")


class BruteForceRule(RuleConfig):
    severity: Severity = "critical"
    failures: int = Field(default=5, ge=1)
    window: Duration = 900.0
    per_user: bool = True
    per_ip: bool = True


class CredentialStuffingRule(RuleConfig):
    severity: Severity = "critical"
    distinct_users: int = Field(default=10, ge=2)
    window: Duration = 600.0


class ApiVolumeRule(RuleConfig):
    suppress_for: Duration = 3600.0
    multiplier: float = Field(default=3.0, gt=0)
    window: Duration = 3600.0
    buckets: int = Field(default=12, ge=1, le=1440)
    # A floor so a baseline of a few calls an hour does not alert on a dozen calls.
    min_requests_per_hour: float = Field(default=30.0, ge=0)


class ServiceAccessRule(RuleConfig):
    suppress_for: Duration = 3600.0
    new_services: int = Field(default=3, ge=1)
    window: Duration = 3600.0
    max_services_per_user: int = Field(default=256, ge=1)
    # A user with no baseline has no "usual" services: everything would be new.
    require_baseline: bool = True


class ExfiltrationRule(RuleConfig):
    severity: Severity = "critical"
    suppress_for: Duration = 3600.0
    window: Duration = 3600.0
    buckets: int = Field(default=12, ge=1, le=1440)
    min_records: int = Field(default=10_000, ge=1, description="absolute cap per window")
    baseline_multiplier: float = Field(default=5.0, gt=0, description="k x baseline for the window")
    read_operations: frozenset[str] = frozenset(
        {"read", "find", "get", "list", "query", "search", "select", "export", "download"}
    )

    @field_validator("read_operations")
    @classmethod
    def _lower(cls, v: frozenset[str]) -> frozenset[str]:
        return frozenset(s.lower() for s in v)


class PrivilegeEscalationRule(RuleConfig):
    severity: Severity = "critical"
    privileged_methods: tuple[str, ...] = ("admin*", "delete*", "grant*")
    window: Duration = 600.0
    min_denials: int = Field(default=1, ge=1)
    privileged_roles: tuple[str, ...] = ("admin", "*admin", "admin*", "root", "superuser")
    role_change_severity: Severity = "error"
    self_grant_severity: Severity = "critical"


class ExcessiveAccessRule(RuleConfig):
    max_records: int = Field(default=1000, ge=1)
    window: Duration = 86400.0
    buckets: int = Field(default=24, ge=1, le=1440)
    suppress_for: Duration = 86400.0
    regulation: str = "GDPR Article 5(1)(c) - Data Minimization"


class LoginPatternRule(RuleConfig):
    """A login unlike the user's earlier successful ones (``policies.security.login_patterns``): a new
    source network, a new device (user agent), an hour of day never seen. Its severity is capped
    like a service's own report (``reporter``'s ``trusted_reporters`` entry, else
    ``service_report_max_severity``): one auth event is all it rests on."""

    suppress_for: Duration = 3600.0
    min_baseline_logins: int = Field(default=5, ge=1, le=10_000,
                                     description="successful logins learned before any verdict")
    min_novel: int = Field(default=2, ge=1, le=3, description="novel aspects (network, device, hour) that alert")
    new_network_alone: bool = Field(default=True, description="a new network alone is enough")
    check_failed: bool = Field(default=True, description="judge failed logins too (only successes are learned)")
    ipv4_prefix: int = Field(default=24, ge=8, le=32)
    ipv6_prefix: int = Field(default=64, ge=16, le=128)
    reporter: str = Field(default="Auth", max_length=63, description="whose report-severity cap applies")
    max_users: int = Field(default=100_000, ge=1)
    max_networks_per_user: int = Field(default=32, ge=1, le=4096)
    max_devices_per_user: int = Field(default=16, ge=1, le=4096)


class DefaultBaseline(PolicyModel):
    requests_per_hour: float = Field(default=100.0, ge=0)
    services: frozenset[str] = frozenset()
    records_per_day: float = Field(default=1000.0, ge=0)

    def as_baseline(self) -> UserBaseline:
        return UserBaseline(
            requests_per_hour=self.requests_per_hour,
            services=self.services,
            records_per_day=self.records_per_day,
        )


def check_networks(items: tuple[str, ...]) -> tuple[str, ...]:
    """Each item parses as an IP address or CIDR network (else ValueError naming it)."""
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from exc
    return items


class Allowlist(PolicyModel):
    ips: tuple[str, ...] = ()
    users: frozenset[str] = frozenset()

    @field_validator("ips")
    @classmethod
    def _valid_networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_networks(v)


class Protected(Allowlist):
    """Targets no automatic enforcement action may hit (a refused action is recorded and
    counted; the incident still records the finding): the listed ``ips`` (addresses or networks)
    and ``users``; ``loopback`` adds 127.0.0.0/8 and ::1, ``own_hosts`` the broker's host and this
    machine's addresses (resolved by the responder)."""

    loopback: bool = True
    own_hosts: bool = True


class StateLimits(PolicyModel):
    max_users: int = Field(default=100_000, ge=1)
    max_ips: int = Field(default=100_000, ge=1)
    max_suppressions: int = Field(default=100_000, ge=1)


class SecurityPolicy(PolicyModel):
    """The whole ``security.yaml``."""

    state: StateLimits = StateLimits()
    allowlist: Allowlist = Allowlist()
    default_baseline: DefaultBaseline = DefaultBaseline()
    brute_force: BruteForceRule = BruteForceRule()
    credential_stuffing: CredentialStuffingRule = CredentialStuffingRule()
    unusual_api_volume: ApiVolumeRule = ApiVolumeRule()
    unusual_service_access: ServiceAccessRule = ServiceAccessRule()
    data_exfiltration: ExfiltrationRule = ExfiltrationRule()
    privilege_escalation: PrivilegeEscalationRule = PrivilegeEscalationRule()
    excessive_data_access: ExcessiveAccessRule = ExcessiveAccessRule()
    unusual_login_pattern: LoginPatternRule = LoginPatternRule()
    protected: Protected = Protected()
    service_report_max_severity: Severity = "warning"
    trusted_reporters: dict[str, Severity] = Field(
        default_factory=dict, description="service -> highest severity its own security reports may carry")
    alert_resolve_after: Duration = Field(
        default=4 * 3600.0, gt=0, description="security alerts nobody resolves end this long after they start")


def report_severity(policy: SecurityPolicy, service: str, claimed: Severity) -> Severity:
    """The severity a service-reported security event gets: what it claims, capped at what the
    policy lets that service report (``trusted_reporters``, else ``service_report_max_severity``)."""
    cap = policy.trusted_reporters.get(service, policy.service_report_max_severity)
    return claimed if SEVERITY_RANK[claimed] <= SEVERITY_RANK[cap] else cap


def load_security_policy(overrides_dir: Path | str | None = None) -> SecurityPolicy:
    """``policies/security.yaml`` merged with the override directory's copy, validated."""
    return load_policy(SecurityPolicy, "security.yaml", overrides_dir)


def compile_patterns(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """Glob patterns (``admin*``) → one case-insensitive regex (never matches if empty)."""
    if not patterns:
        return re.compile(r"(?!)")
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), re.IGNORECASE)
