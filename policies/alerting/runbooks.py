"""Runbooks: which steps to suggest for an alert, with its values filled in safely.

The seed's ``RunbookEngine`` looks a runbook up by alert, falls back to a general one by component
and severity, and replaces placeholders in each step. Here:

- ``select_runbook(labels, policy)`` picks, in this order: a runbook listing the alert's type
  (label ``type``, ``alertname`` or ``alert_type``), one listing its ``component`` and ``severity``,
  one listing the component for any severity, then the fallback (the file order breaks ties).
- ``render_runbook(runbook, values)`` fills ``{NAME}`` placeholders. Commands are argument lists,
  never shell strings, and a value is accepted only if it is a Kubernetes label value (letters,
  digits, ``-``, ``_``, ``.``; starts and ends alphanumeric; 1–63 chars). So a value cannot split
  an argument, add an option (``--all-namespaces``), or reach a shell (``x;rm -rf /``, ``$(id)``).
  A step whose values fail is returned unfilled, marked ``unsafe_placeholder`` with the reason;
  a step lacking a value is marked ``missing_value``. Neither may be run automatically.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from policies.common.config import Duration, PolicyModel, load_policy

POLICY_FILE = "runbooks.yaml"

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
MAX_VALUE_LENGTH = 63
ALERT_TYPE_LABELS = ("type", "alertname", "alert_type")


class RunbookError(ValueError):
    """Base of this module's errors: no runbook applies, or a value is unsafe."""


class PlaceholderError(RunbookError):
    """A value may not be placed into a command; the message says which and why."""


def check_value(name: str, value: object) -> str:
    """Return ``value`` if it may fill placeholder ``name``; raise ``PlaceholderError`` otherwise."""
    if not isinstance(value, str):
        raise PlaceholderError(f"{{{name}}}: the value must be a string, got {type(value).__name__}")
    if not value:
        raise PlaceholderError(f"{{{name}}}: the value is empty")
    if len(value) > MAX_VALUE_LENGTH:
        raise PlaceholderError(
            f"{{{name}}}: the value is {len(value)} characters long (at most {MAX_VALUE_LENGTH})"
        )
    if not _LABEL_VALUE.fullmatch(value):
        raise PlaceholderError(
            f"{{{name}}}={value[:80]!r} is not allowed: only letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit (a Kubernetes label value)"
        )
    return value


def _placeholders(text: str) -> list[str]:
    return _PLACEHOLDER.findall(text)


def _check_template(text: str) -> str:
    # Braces outside a well-formed {NAME} are typos that would otherwise reach a command verbatim.
    rest = _PLACEHOLDER.sub("", text)
    if "{" in rest or "}" in rest:
        raise ValueError(f"{text!r}: braces are only allowed around a placeholder name like {{SERVICE_NAME}}")
    return text


def _norm(s: str) -> str:
    return re.sub(r"[\s_\-]", "", s).lower()


class StepSpec(PolicyModel):
    """One step as written in ``runbooks.yaml``."""

    title: str
    description: str = ""
    command: tuple[str, ...] | None = Field(default=None, description="argument list; unset: a manual step")
    expected: str = ""
    on_failure: str = ""
    impact: str = ""
    requires_approval: bool = False
    timeout: Duration = 30.0
    automated: bool = False

    @field_validator("command")
    @classmethod
    def _args(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return None
        if not v:
            raise ValueError("a command needs at least the program name; leave it out for a manual step")
        return tuple(_check_template(a) for a in v)

    @field_validator("title", "description")
    @classmethod
    def _text(cls, v: str) -> str:
        return _check_template(v)


class Runbook(PolicyModel):
    """A named list of steps and the alerts it is for."""

    name: str
    description: str = ""
    alert_types: tuple[str, ...] = ()
    components: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    fallback: bool = False
    defaults: dict[str, str] = Field(
        default_factory=dict, description="placeholder values used when not given"
    )
    steps: tuple[StepSpec, ...] = Field(min_length=1)

    @field_validator("defaults")
    @classmethod
    def _defaults(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            try:
                check_value(k, val)
            except PlaceholderError as exc:
                raise ValueError(str(exc)) from exc
        return v

    @model_validator(mode="after")
    def _severities_need_components(self) -> Runbook:
        if self.severities and not self.components:
            raise ValueError("'severities' narrows 'components'; list the components too")
        return self


class RunbookPolicy(PolicyModel):
    """The whole of ``runbooks.yaml``."""

    runbooks: tuple[Runbook, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_and_fallback(self) -> RunbookPolicy:
        names = [r.name for r in self.runbooks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"runbook names must be unique: {', '.join(dupes)}")
        if not any(r.fallback for r in self.runbooks):
            raise ValueError("one runbook must have 'fallback: true' (used when nothing else matches)")
        return self


def load_runbooks(overrides_dir: Path | str | None = None) -> RunbookPolicy:
    """Load ``policies/runbooks.yaml`` with the optional override directory merged over it."""
    return load_policy(RunbookPolicy, POLICY_FILE, overrides_dir)


def select_runbook(alert_labels: Mapping[str, str], runbooks: RunbookPolicy | Sequence[Runbook]) -> Runbook:
    """The runbook for an alert: by type, then component + severity, then component, then fallback."""
    books = runbooks.runbooks if isinstance(runbooks, RunbookPolicy) else tuple(runbooks)
    types = {_norm(alert_labels[k]) for k in ALERT_TYPE_LABELS if alert_labels.get(k)}
    component = _norm(alert_labels.get("component", ""))
    severity = _norm(alert_labels.get("severity", ""))
    levels = (
        lambda r: bool(types) and any(_norm(t) in types for t in r.alert_types),
        lambda r: (
            bool(component)
            and bool(severity)
            and component in map(_norm, r.components)
            and severity in map(_norm, r.severities)
        ),
        lambda r: bool(component) and not r.severities and component in map(_norm, r.components),
        lambda r: r.fallback,
    )
    for matches in levels:
        for book in books:
            if matches(book):
                return book
    raise RunbookError("no runbook matches and none is marked 'fallback: true'")


class StepStatus(StrEnum):
    """Whether a rendered step can be carried out as it stands."""

    READY = "ready"
    MANUAL = "manual"
    UNSAFE_PLACEHOLDER = "unsafe_placeholder"
    MISSING_VALUE = "missing_value"


@dataclass(frozen=True, kw_only=True)
class RunbookStep:
    """A step with its values filled in (or, if a value failed, its template and the reason)."""

    title: str
    description: str
    command: tuple[str, ...]
    requires_approval: bool
    timeout_s: float
    automated: bool
    status: StepStatus
    problems: tuple[str, ...] = ()
    expected: str = ""
    on_failure: str = ""
    impact: str = ""


def _fill(text: str, good: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: good.get(m.group(1), m.group(0)), text)


def render_step(step: StepSpec, values: Mapping[str, str]) -> RunbookStep:
    """Fill one step; see the module docstring for what is refused."""
    good: dict[str, str] = {}
    problems: list[str] = []
    texts = [step.title, step.description, *(step.command or ())]
    for name in dict.fromkeys(n for t in texts for n in _placeholders(t)):
        if name not in values:
            problems.append(f"{{{name}}}: no value given")
            continue
        try:
            good[name] = check_value(name, values[name])
        except PlaceholderError as exc:
            problems.append(str(exc))
    needed = {n for a in step.command or () for n in _placeholders(a)}
    if step.command is None:
        status = StepStatus.MANUAL
    elif any(n in values and n not in good for n in needed):
        status = StepStatus.UNSAFE_PLACEHOLDER
    elif any(n not in values for n in needed):
        status = StepStatus.MISSING_VALUE
    else:
        status = StepStatus.READY
    ready = status is StepStatus.READY
    return RunbookStep(
        title=_fill(step.title, good),
        description=_fill(step.description, good),
        # An unsafe or incomplete command is returned as its template: never half-filled.
        command=tuple(_fill(a, good) for a in step.command)
        if ready and step.command
        else tuple(step.command or ()),
        requires_approval=step.requires_approval,
        timeout_s=step.timeout,
        automated=step.automated and ready,
        status=status,
        problems=tuple(problems),
        expected=step.expected,
        on_failure=step.on_failure,
        impact=step.impact,
    )


def render_runbook(runbook: Runbook, values: Mapping[str, str]) -> list[RunbookStep]:
    """Every step of ``runbook`` filled from ``values`` over the runbook's ``defaults``."""
    merged = {**runbook.defaults, **values}
    return [render_step(step, merged) for step in runbook.steps]


__all__ = [
    "PlaceholderError",
    "Runbook",
    "RunbookError",
    "RunbookPolicy",
    "RunbookStep",
    "StepSpec",
    "StepStatus",
    "check_value",
    "load_runbooks",
    "render_runbook",
    "render_step",
    "select_runbook",
]
