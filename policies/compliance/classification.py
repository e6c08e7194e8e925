"""Compliance policy: how a call or a data access is classified, and which accesses violate rules.

``classify(service, collection, policy)`` answers what the seed's ``AuditLogger`` asks its
``GetDataClassification`` / ``GetRetentionPeriod`` / ``GetProcessingBasis`` / ``IsGdprApplicable``
/ ``IsHipaaApplicable`` helpers: rules in ``compliance.yaml`` match a service and a collection by
glob (case-insensitive), the most specific matching rule decides each field, and ``default``
supplies whatever no rule sets. Specificity ranks the collection pattern before the service
pattern, because what data is touched decides its classification more than who touches it.

``check_access(event, usage_24h, policy)`` is the seed's ``CheckComplianceViolations``:
excessive access (more than N records in 24 h by one user, GDPR data minimisation) and reading a
sensitive collection without the authorizing role (HIPAA, PCI DSS, GDPR Art. 32; configurable).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from policies.audit.redaction import RedactionPolicy
from policies.common.config import Duration, PolicyModel, format_duration, load_policy

POLICY_FILE = "compliance.yaml"


class DataClassification(StrEnum):
    """Sensitivity of the data a call or access touches (ordered from least to most sensitive)."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"
    PII = "pii"
    PHI = "phi"
    PCI = "pci"


class LawfulBasis(StrEnum):
    """GDPR Article 6(1) lawful bases for processing, plus ``not_applicable`` for non-personal data."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"
    VITAL_INTERESTS = "vital_interests"
    PUBLIC_TASK = "public_task"
    LEGITIMATE_INTERESTS = "legitimate_interests"
    NOT_APPLICABLE = "not_applicable"


class Severity(StrEnum):
    """Severity of a compliance violation."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


def _glob(v: str) -> str:
    if not v.strip():
        raise ValueError("a glob pattern such as 'UserManagement', 'patient_*' or '*', not empty")
    return v.strip().lower()


class ClassificationDefaults(PolicyModel):
    """What applies when no rule says otherwise (every field required)."""

    data_classification: DataClassification
    retention: Duration
    lawful_basis: LawfulBasis
    gdpr_applicable: bool
    hipaa_applicable: bool


class ClassificationRule(PolicyModel):
    """A rule for services/collections matching globs; unset fields fall through to less specific
    rules and then to the default."""

    name: str
    service: str = "*"
    collection: str | None = Field(default=None, description="glob; unset matches any or no collection")
    data_classification: DataClassification | None = None
    retention: Duration | None = None
    lawful_basis: LawfulBasis | None = None
    gdpr_applicable: bool | None = None
    hipaa_applicable: bool | None = None

    @field_validator("service")
    @classmethod
    def _check_service(cls, v: str) -> str:
        return _glob(v)

    @field_validator("collection")
    @classmethod
    def _check_collection(cls, v: str | None) -> str | None:
        return None if v is None else _glob(v)

    def matches(self, service: str, collection: str | None) -> bool:
        if not fnmatch.fnmatchcase(service.lower(), self.service):
            return False
        if self.collection is None:
            return True
        return collection is not None and fnmatch.fnmatchcase(collection.lower(), self.collection)

    def specificity(self) -> tuple[int, int, int, int]:
        """Exact beats glob, longer literal text beats shorter; collection ranks before service."""
        c = self.collection
        return (
            int(c is not None and not _has_wildcard(c)),
            _literal_len(c) if c is not None else -1,
            int(not _has_wildcard(self.service)),
            _literal_len(self.service),
        )


def _has_wildcard(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _literal_len(pattern: str) -> int:
    return sum(1 for ch in pattern if ch not in "*?[]")


class AccessRule(PolicyModel):
    """Who may touch which sensitive data: collections by glob and/or by classification."""

    name: str
    collections: tuple[str, ...] = ()
    classifications: tuple[DataClassification, ...] = ()
    operations: tuple[str, ...] | None = Field(default=None, description="unset: every operation")
    required_roles: tuple[str, ...] = Field(min_length=1, description="any one of them authorizes")
    regulation: str
    severity: Severity = Severity.HIGH

    @field_validator("collections")
    @classmethod
    def _globs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_glob(p) for p in v)

    @field_validator("operations")
    @classmethod
    def _ops(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if v is None else tuple(op.lower() for op in v)

    def applies(self, collection: str, operation: str, classification: DataClassification) -> bool:
        if self.operations is not None and operation.lower() not in self.operations:
            return False
        by_name = any(fnmatch.fnmatchcase(collection.lower(), p) for p in self.collections)
        return by_name or classification in self.classifications


class ExcessiveAccessRule(PolicyModel):
    """The seed's data-minimisation check: more than ``max_records`` records by one user in 24 h."""

    max_records: int = Field(default=1000, ge=1)
    regulation: str = "GDPR Article 5(1)(c)"
    severity: Severity = Severity.MEDIUM


class CompliancePolicy(PolicyModel):
    """The whole of ``compliance.yaml``."""

    default: ClassificationDefaults
    rules: tuple[ClassificationRule, ...] = ()
    excessive_access: ExcessiveAccessRule = ExcessiveAccessRule()
    access_rules: tuple[AccessRule, ...] = ()
    redaction: RedactionPolicy = RedactionPolicy()


def load_compliance_policy(overrides_dir: Path | str | None = None) -> CompliancePolicy:
    """Load ``policies/compliance.yaml`` with the optional override directory merged over it."""
    return load_policy(CompliancePolicy, POLICY_FILE, overrides_dir)


@dataclass(frozen=True, kw_only=True)
class ComplianceInfo:
    """The compliance block of an audit event (seed ``ComplianceInfo``)."""

    data_classification: DataClassification
    retention_seconds: float
    retention_text: str
    lawful_basis: LawfulBasis
    gdpr_applicable: bool
    hipaa_applicable: bool
    matched_rules: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        """camelCase, as audit events carry it."""
        return {
            "dataClassification": self.data_classification.value,
            "retentionPeriod": self.retention_seconds,
            "retentionPeriodText": self.retention_text,
            "lawfulBasis": self.lawful_basis.value,
            "gdprApplicable": self.gdpr_applicable,
            "hipaaApplicable": self.hipaa_applicable,
        }


_FIELDS = ("data_classification", "retention", "lawful_basis", "gdpr_applicable", "hipaa_applicable")


def classify(service: str, collection: str | None, policy: CompliancePolicy) -> ComplianceInfo:
    """Classify a call (``collection=None``) or a data access; each field comes from the most
    specific matching rule that sets it (ties: the earlier rule in the file), else the default."""
    matching = [r for r in policy.rules if r.matches(service, collection)]
    # sorted() is stable, so among equally specific rules the file order decides.
    matching.sort(key=lambda r: r.specificity(), reverse=True)
    chosen: dict[str, Any] = {}
    used: list[str] = []
    for name in _FIELDS:
        for rule in matching:
            value = getattr(rule, name)
            if value is not None:
                chosen[name] = value
                if rule.name not in used:
                    used.append(rule.name)
                break
        else:
            chosen[name] = getattr(policy.default, name)
    retention = float(chosen["retention"])
    return ComplianceInfo(
        data_classification=chosen["data_classification"],
        retention_seconds=retention,
        retention_text=format_duration(retention),
        lawful_basis=chosen["lawful_basis"],
        gdpr_applicable=chosen["gdpr_applicable"],
        hipaa_applicable=chosen["hipaa_applicable"],
        matched_rules=tuple(used),
    )


@dataclass(frozen=True, kw_only=True)
class DataAccess:
    """One data access as reported on ``audit/{Service}/data-access``."""

    user_id: str
    roles: frozenset[str]
    service: str
    collection: str
    operation: str
    record_count: int
    timestamp: float


@dataclass(frozen=True, kw_only=True)
class ComplianceViolation:
    """A rule broken by an access (seed ``ComplianceViolation``)."""

    type: str
    regulation: str
    severity: Severity
    user_id: str
    description: str
    details: Mapping[str, Any] = field(default_factory=dict)


def check_access(event: DataAccess, usage_24h: int, policy: CompliancePolicy) -> list[ComplianceViolation]:
    """Violations of one access. ``usage_24h`` is the number of records the user touched in the
    24 h ending at this event, this event included (the caller keeps that window)."""
    violations: list[ComplianceViolation] = []
    rule = policy.excessive_access
    if usage_24h > rule.max_records:
        violations.append(
            ComplianceViolation(
                type="excessive_data_access",
                regulation=rule.regulation,
                severity=rule.severity,
                user_id=event.user_id,
                description=f"User accessed {usage_24h} records in 24 hours (limit {rule.max_records})",
                details={
                    "recordsIn24h": usage_24h,
                    "limit": rule.max_records,
                    "collection": event.collection,
                    "service": event.service,
                },
            )
        )
    info = classify(event.service, event.collection, policy)
    roles = {r.lower() for r in event.roles}
    for access in policy.access_rules:
        if not access.applies(event.collection, event.operation, info.data_classification):
            continue
        if roles.intersection(r.lower() for r in access.required_roles):
            continue
        violations.append(
            ComplianceViolation(
                type="unauthorized_sensitive_access",
                regulation=access.regulation,
                severity=access.severity,
                user_id=event.user_id,
                description=(
                    f"{event.operation} on {event.collection} ({info.data_classification.value}) "
                    f"without any of the roles {', '.join(access.required_roles)}"
                ),
                details={
                    "rule": access.name,
                    "collection": event.collection,
                    "operation": event.operation,
                    "service": event.service,
                    "recordCount": event.record_count,
                    "requiredRoles": list(access.required_roles),
                    "userRoles": sorted(event.roles),
                    "dataClassification": info.data_classification.value,
                },
            )
        )
    return violations


__all__ = [
    "AccessRule",
    "ClassificationRule",
    "ComplianceInfo",
    "CompliancePolicy",
    "ComplianceViolation",
    "DataAccess",
    "DataClassification",
    "LawfulBasis",
    "Severity",
    "check_access",
    "classify",
    "load_compliance_policy",
]
