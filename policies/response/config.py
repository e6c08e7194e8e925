"""Incident response configuration: the ``policies/response.yaml`` model.

The default playbook is the seed's ``DetermineResponseActions`` (IncidentResponseAutomation),
completed for the alert types the seed left out. Validation refuses a playbook step naming an
unknown action, a timed step whose action has no undo (every timed action is undone at expiry),
and an escalation rule without a condition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, model_validator

from policies.common.config import Duration, PolicyModel, load_policy
from policies.security.events import AlertType, Severity

ActionKind = Literal["enforcement", "monitoring", "notification", "forensics"]
TargetRef = Literal["source", "target", "user", "ip"]


class ActionSpec(PolicyModel):
    """One action the enforcement side knows how to carry out."""

    kind: ActionKind
    undo: str | None = Field(default=None, description="the action that reverses this one")


class PlaybookStep(PolicyModel):
    """``target``: the alert's ``source``/``target``, or its ``user``/``ip`` when known (a step
    whose target is unknown for an alert is skipped, and the skip is recorded)."""

    action: str
    target: TargetRef
    duration: Duration | None = None
    increment: bool = Field(default=False, description="repeat offenders get longer durations")
    params: dict[str, Any] = Field(default_factory=dict)


class RepeatPolicy(PolicyModel):
    """fail2ban's ``bantime.increment``: duration = base * factor^(n-1), capped at ``max_duration``,
    where n is this offence's number among the target's incidents within ``lookback``."""

    lookback: Duration = 7 * 86400.0
    factor: float = Field(default=2.0, ge=1.0)
    max_duration: Duration = 7 * 86400.0


class ApprovalPolicy(PolicyModel):
    """Which planned actions wait for an operator (``drivers.incidents approve|reject ID``)
    instead of being carried out: enforcement actions without expiry (``untimed``), and the
    ``single_event`` actions when the alert rests on one unverified event (any publisher can
    forge one; such an alert also escalates no higher than ``single_event_max_level``). A request not decided within ``expire_after`` lapses; at most ``max_pending``
    wait at once (the rest are refused and counted)."""

    untimed: bool = True
    single_event: frozenset[str] = frozenset({"suspend_user", "block_data_access"})
    expire_after: Duration = 7 * 86400.0
    max_pending: int = Field(default=1000, ge=1)
    single_event_max_level: int = Field(default=1, ge=1, le=5, description="escalation cap for one-event alerts")


class SourceLimit(PolicyModel):
    """At most ``max_incidents`` incidents per source (IP or user) within ``window``; later alerts
    from it are counted and folded into its latest incident (no new actions, no escalation)."""

    max_incidents: int = Field(default=5, ge=1, le=32)
    window: Duration = 3600.0


class EscalationRule(PolicyModel):
    """Matches when every condition it sets holds; the highest matching level wins."""

    name: str
    level: int = Field(ge=1, le=5)
    reason: str
    notify: tuple[str, ...] = ()
    severity_at_least: Severity | None = None
    alert_types: frozenset[AlertType] | None = None
    repeat_at_least: int | None = Field(default=None, ge=1)
    failed_actions_at_least: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _has_condition(self) -> EscalationRule:
        if (
            self.severity_at_least is None
            and self.alert_types is None
            and self.repeat_at_least is None
            and self.failed_actions_at_least is None
        ):
            raise ValueError(
                f"escalation rule {self.name!r} needs a condition: severity_at_least, alert_types, "
                "repeat_at_least or failed_actions_at_least"
            )
        return self


class ResponsePolicy(PolicyModel):
    """The whole ``response.yaml``."""

    actions: dict[str, ActionSpec]
    playbooks: dict[AlertType, list[PlaybookStep]]
    repeat: RepeatPolicy = RepeatPolicy()
    escalation: list[EscalationRule] = Field(default_factory=list)
    approval: ApprovalPolicy = ApprovalPolicy()
    per_source: SourceLimit = SourceLimit()
    incident_ttl: Duration = Field(
        default=86400.0, gt=0,
        description="an open incident with no new event for this long is resolved as expired (policies.response.incident_expiry)")

    @model_validator(mode="after")
    def _steps_are_known_and_undoable(self) -> ResponsePolicy:
        for alert_type, steps in self.playbooks.items():
            for i, step in enumerate(steps):
                where = f"playbooks.{alert_type}.{i}.action = {step.action!r}"
                spec = self.actions.get(step.action)
                if spec is None:
                    raise ValueError(f"{where}: unknown action; known: {', '.join(sorted(self.actions))}")
                if step.duration is not None and spec.undo is None:
                    raise ValueError(
                        f"{where}: a timed action needs an undo (set actions.{step.action}.undo)"
                    )
        return self


ALERT_TYPES: tuple[AlertType, ...] = get_args(AlertType)


def load_response_policy(overrides_dir: Path | str | None = None) -> ResponsePolicy:
    """``policies/response.yaml`` merged with the override directory's copy, validated."""
    return load_policy(ResponsePolicy, "response.yaml", overrides_dir)
