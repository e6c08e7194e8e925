"""The one interface every security detection rule implements (the rules and their registry are
in :mod:`policies.security.rules`)."""

from __future__ import annotations

from typing import ClassVar, Literal, Protocol

from policies.security.detection_rules import SecurityPolicy
from policies.security.events import (
    AuthEvent,
    AuthzEvent,
    DataAccessEvent,
    RoleChangeEvent,
    SecurityAlert,
    UserActivity,
)
from policies.security.state import RuleState

EventKind = Literal["auth", "authz", "role_change", "data_access", "activity"]
SecurityEvent = AuthEvent | AuthzEvent | RoleChangeEvent | DataAccessEvent | UserActivity


class DetectionRule(Protocol):
    """A pure detection rule: built once from the policy, then given each event of the kinds it
    reads with the shared state and ``now``; returns its findings as values (no I/O, no clock).

    ``name`` is its ``security.yaml`` section (whose ``enabled`` switches it on or off, and which
    configures it); ``events`` the event kinds it reads. A rule suppresses its own repeats through
    ``state.admit`` and keeps its windows in the state's per-user/per-IP entries."""

    name: ClassVar[str]
    events: ClassVar[tuple[EventKind, ...]]

    def __init__(self, policy: SecurityPolicy) -> None: ...

    def evaluate(self, event: SecurityEvent, state: RuleState, now: float) -> list[SecurityAlert]: ...
