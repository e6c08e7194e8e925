"""The security detection rules: :data:`DETECTION_RULES` maps each rule's name (its
``security.yaml`` section) to its class, in the order the analyzer runs them for an event (so
the alerts of one event come out in this order). Every rule implements
:class:`~policies.security.rules_base.DetectionRule`.

A new rule is one new module (``policies/security/rules_<topic>.py``: the class, pure), one line
here, and its section in ``security.yaml`` (with its config model, a ``RuleConfig`` subclass, as
a field of ``SecurityPolicy`` in ``policies.security.detection_rules``).
"""

from __future__ import annotations

from policies.security.rules_access import DataExfiltration, ExcessiveDataAccess, PrivilegeEscalation
from policies.security.rules_activity import UnusualApiVolume, UnusualServiceAccess
from policies.security.rules_base import DetectionRule
from policies.security.rules_login import BruteForce, CredentialStuffing, UnusualLoginPattern

DETECTION_RULES: dict[str, type[DetectionRule]] = {
    "unusual_login_pattern": UnusualLoginPattern,
    "brute_force": BruteForce,
    "credential_stuffing": CredentialStuffing,
    "privilege_escalation": PrivilegeEscalation,
    "excessive_data_access": ExcessiveDataAccess,
    "data_exfiltration": DataExfiltration,
    "unusual_api_volume": UnusualApiVolume,
    "unusual_service_access": UnusualServiceAccess,
}

__all__ = ["DETECTION_RULES"]
