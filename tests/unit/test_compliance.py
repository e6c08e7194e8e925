"""Compliance classification and access violations (policies/compliance/classification.py, compliance.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.common.config import PolicyConfigError, load_policy_text
from policies.compliance.classification import (
    CompliancePolicy,
    DataAccess,
    DataClassification,
    LawfulBasis,
    Severity,
    check_access,
    classify,
    load_compliance_policy,
)

DEFAULT = load_compliance_policy()

RULES = """
default: {data_classification: internal, retention: 30d, lawful_basis: legitimate_interests,
          gdpr_applicable: false, hipaa_applicable: false}
rules:
  - {name: any-user-service, service: "User*", data_classification: pii, gdpr_applicable: true}
  - {name: user-management, service: UserManagement, retention: 3y_is_not_allowed_here}
"""

TABLE = """
default: {data_classification: internal, retention: 30d, lawful_basis: legitimate_interests,
          gdpr_applicable: false, hipaa_applicable: false}
rules:
  - {name: user-services, service: "User*", data_classification: pii, gdpr_applicable: true, lawful_basis: contract}
  - {name: user-management, service: UserManagement, retention: 90d}
  - {name: medical, collection: "medical_*", data_classification: phi, hipaa_applicable: true, retention: 6d}
  - {name: medical-exact, collection: medical_records, retention: 7d}
  - {name: first-tie, service: "Bill*", data_classification: confidential}
  - {name: second-tie, service: "Bil*g", data_classification: restricted}
"""


@pytest.mark.parametrize(
    ("service", "collection", "cls", "retention", "basis", "gdpr", "hipaa"),
    [
        ("Inventory", None, "internal", "30d", "legitimate_interests", False, False),
        ("UserProfile", None, "pii", "30d", "contract", True, False),
        ("UserManagement", None, "pii", "90d", "contract", True, False),
        ("usermanagement", None, "pii", "90d", "contract", True, False),  # case-insensitive
        ("UserManagement", "medical_notes", "phi", "6d", "contract", True, True),  # collection wins
        ("UserManagement", "medical_records", "phi", "7d", "contract", True, True),  # exact beats glob
        ("Inventory", "Medical_Records", "phi", "7d", "legitimate_interests", False, True),
        ("Inventory", "stock", "internal", "30d", "legitimate_interests", False, False),
        ("Billing", None, "confidential", "30d", "legitimate_interests", False, False),  # tie: file order
    ],
)
def test_classification_most_specific_wins(
    service: str, collection: str | None, cls: str, retention: str, basis: str, gdpr: bool, hipaa: bool
) -> None:
    """Each field comes from the most specific matching rule that sets it, else the default."""
    policy = load_policy_text(CompliancePolicy, TABLE)
    info = classify(service, collection, policy)
    assert (
        info.data_classification.value,
        info.retention_text,
        info.lawful_basis.value,
        info.gdpr_applicable,
        info.hipaa_applicable,
    ) == (cls, retention, basis, gdpr, hipaa)


def test_collection_rules_do_not_match_calls_without_collection() -> None:
    """A rule naming a collection never applies to a plain service call."""
    policy = load_policy_text(CompliancePolicy, TABLE)
    assert classify("Inventory", None, policy).matched_rules == ()


def test_default_file_examples_and_wire_form() -> None:
    """The shipped policy classifies medical, card and user data as the regulations require."""
    med = classify("Clinic", "medical_records", DEFAULT)
    assert med.data_classification is DataClassification.PHI and med.hipaa_applicable
    assert med.retention_seconds == 6 * 365 * 86400
    card = classify("Payments", "payment_cards", DEFAULT)
    assert card.data_classification is DataClassification.PCI
    user = classify("UserManagement", None, DEFAULT)
    assert user.lawful_basis is LawfulBasis.CONTRACT and user.gdpr_applicable
    assert user.to_wire() == {
        "dataClassification": "pii",
        "retentionPeriod": 1095 * 86400.0,
        "retentionPeriodText": "1095d",
        "lawfulBasis": "contract",
        "gdprApplicable": True,
        "hipaaApplicable": False,
    }


def access(collection: str, roles: set[str], operation: str = "read", count: int = 5) -> DataAccess:
    return DataAccess(
        user_id="u-1",
        roles=frozenset(roles),
        service="Clinic",
        collection=collection,
        operation=operation,
        record_count=count,
        timestamp=1_700_000_000.0,
    )


@pytest.mark.parametrize(
    ("collection", "roles", "usage", "expected"),
    [
        ("orders", set(), 1000, []),
        ("orders", set(), 1001, [("excessive_data_access", "GDPR Article 5(1)(c)", Severity.MEDIUM)]),
        (
            "medical_records",
            {"nurse"},
            10,
            [("unauthorized_sensitive_access", "HIPAA §164.312(a)", Severity.HIGH)],
        ),
        ("medical_records", {"Medical_Staff"}, 10, []),
        (
            "patient_visits",
            set(),
            10,
            [("unauthorized_sensitive_access", "HIPAA §164.312(a)", Severity.HIGH)],
        ),
        (
            "payment_cards",
            {"support"},
            10,
            [("unauthorized_sensitive_access", "PCI DSS Requirement 7", Severity.HIGH)],
        ),
        ("payment_cards", {"pci_auditor"}, 10, []),
        (
            "audit_log",
            {"developer"},
            10,
            [("unauthorized_sensitive_access", "GDPR Article 32", Severity.HIGH)],
        ),
        (
            "medical_records",
            set(),
            5000,
            [
                ("excessive_data_access", "GDPR Article 5(1)(c)", Severity.MEDIUM),
                ("unauthorized_sensitive_access", "HIPAA §164.312(a)", Severity.HIGH),
            ],
        ),
    ],
)
def test_access_violations(
    collection: str, roles: set[str], usage: int, expected: list[tuple[str, str, Severity]]
) -> None:
    """Excessive access (>1000 records/24 h) and sensitive reads without the authorizing role are flagged."""
    found = check_access(access(collection, roles), usage, DEFAULT)
    assert [(v.type, v.regulation, v.severity) for v in found] == expected
    assert all(v.user_id == "u-1" and v.description for v in found)


def test_access_rule_limited_to_operations() -> None:
    """A rule listing operations ignores the others."""
    policy = load_policy_text(
        CompliancePolicy,
        """
default: {data_classification: internal, retention: 30d, lawful_basis: consent,
          gdpr_applicable: false, hipaa_applicable: false}
access_rules:
  - {name: exports, collections: ["*"], operations: [export], required_roles: [dpo], regulation: "GDPR Article 32"}
""",
    )
    assert check_access(access("orders", set(), "read"), 1, policy) == []
    [v] = check_access(access("orders", set(), "EXPORT"), 1, policy)
    assert v.details["requiredRoles"] == ["dpo"] and v.details["rule"] == "exports"


def test_bad_policy_names_key_and_value() -> None:
    """An invalid value in the file is reported with its key path and the value."""
    with pytest.raises(PolicyConfigError) as err:
        load_policy_text(CompliancePolicy, RULES, "compliance.yaml")
    assert "rules.1.retention" in str(err.value) and "3y_is_not_allowed_here" in str(err.value)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "default: {data_classification: secretish, retention: 1d, lawful_basis: consent, "
            "gdpr_applicable: false, hipaa_applicable: false}",
            "default.data_classification",
        ),
        (
            "default: {data_classification: pii, retention: 1d, lawful_basis: because, "
            "gdpr_applicable: false, hipaa_applicable: false}",
            "default.lawful_basis",
        ),
        (
            "default: {data_classification: pii, retention: 1d, lawful_basis: consent, "
            "gdpr_applicable: false, hipaa_applicable: false, colour: red}",
            "default.colour",
        ),
        ("redaction: {max_depth: 0}", "redaction.max_depth"),
    ],
)
def test_bad_policy_values(text: str, where: str) -> None:
    """Unknown enums, unknown keys and out-of-range caps are rejected naming the key."""
    with pytest.raises(PolicyConfigError, match=where.replace(".", r"\.")):
        load_policy_text(CompliancePolicy, text)


def test_override_directory_merges(tmp_path: Path) -> None:
    """An override file changes one threshold and keeps the shipped rules."""
    (tmp_path / "compliance.yaml").write_text("excessive_access: {max_records: 10}\n")
    policy = load_compliance_policy(tmp_path)
    assert policy.excessive_access.max_records == 10
    assert policy.rules == DEFAULT.rules
    assert [v.type for v in check_access(access("orders", set()), 11, policy)] == ["excessive_data_access"]
