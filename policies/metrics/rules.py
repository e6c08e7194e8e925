"""Alerting rules on sfa-ops' own metric series: one policy (``metric_rules.yaml``), two uses.

- ``drivers.prometheus_rules`` renders it as a Prometheus rule file (``deploy/prometheus/rules.yml``)
  through :func:`promql` and :func:`prometheus_rule`;
- the supervisor evaluates it itself on its status (``policies.metrics.rules_eval``), so an
  embedded deployment without Prometheus gets the same alerts through its alert routing.

A rule: ``alert`` (the alertname), ``value`` (how the compared number is computed from the series
of ``policies.supervision.status_view.metric_families``), ``op`` and ``threshold``, ``for`` (how long the
condition must hold before the alert fires), ``severity``, extra ``labels``, and ``summary`` /
``description`` templates. Value kinds:

- ``gauge``: the series as is (``by``: ``max by (...)``);
- ``rate``: per-second increase of a counter over ``window`` (``by``: ``sum by (...)``);
- ``ratio``: ``sum by (by) (rate(series[window])) / sum by (by) (rate(over[window]))``, only where
  the denominator's increase over the window is at least ``min_count``.

Series are written as PromQL selectors, ``name{label="v",other=~"a|b"}`` (equality and regex
matchers). Templates take the Prometheus subset ``{{ $labels.NAME }}``, ``{{ $value }}`` and
``{{ $value | humanize }}`` / ``humanizePercentage`` / ``humanizeDuration``, rendered here the way
Prometheus renders them, so both uses produce the same text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from policies.alerting.matchers import Matcher, MatcherSyntaxError, parse_matchers
from policies.common.config import Duration, PolicyModel, format_duration, load_policy, load_policy_text

FILENAME = "metric_rules.yaml"
MAX_ANNOTATION = 1024
"""Rendered annotations are cut to this many characters (label values come from traffic)."""

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_PLACEHOLDER = re.compile(
    r"\$labels\.(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)"
    r"|\$value(?:\s*\|\s*(?P<fn>humanize|humanizePercentage|humanizeDuration))?")
RESERVED_LABELS = frozenset({"alertname", "severity"})
Op = Literal[">", ">=", "<", "<=", "==", "!="]


class Selector:
    """A parsed ``name{matchers}`` series selector."""

    __slots__ = ("matchers", "name")

    def __init__(self, text: str) -> None:
        name, brace, rest = text.strip().partition("{")
        name = name.strip()
        if not _NAME.fullmatch(name):
            raise ValueError(f"a series selector like name{{label=\"value\"}}, got {text!r}")
        self.name = name
        self.matchers: tuple[Matcher, ...] = ()
        if brace:
            if not rest.rstrip().endswith("}"):
                raise ValueError(f"unclosed '{{' in series selector {text!r}")
            inner = rest.rstrip()[:-1]
            try:
                self.matchers = parse_matchers(inner) if inner.strip() else ()
            except MatcherSyntaxError as exc:
                raise ValueError(f"series selector {text!r}: {exc}") from exc
            for m in self.matchers:
                if m.name == "__name__":
                    raise ValueError("give the series name before '{', not as a __name__ matcher")

    def __str__(self) -> str:
        if not self.matchers:
            return self.name
        return self.name + "{" + ",".join(str(m) for m in self.matchers) + "}"

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


class ValueSpec(PolicyModel):
    """How a rule's value is computed from the series."""

    kind: Literal["gauge", "rate", "ratio"]
    series: str
    over: str | None = None
    """``ratio`` only: the denominator's selector."""
    window: Duration = 300.0
    by: tuple[str, ...] | None = None
    min_count: float = Field(0.0, ge=0)
    """``ratio`` only: the denominator's increase over ``window`` must be at least this."""

    @field_validator("series", "over")
    @classmethod
    def _selector(cls, v: str | None) -> str | None:
        if v is not None:
            Selector(v)
        return v

    @field_validator("by")
    @classmethod
    def _labels(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for label in v or ():
            if not _LABEL.fullmatch(label):
                raise ValueError(f"{label!r} is not a label name")
        return v

    @model_validator(mode="after")
    def _shape(self) -> ValueSpec:
        if self.kind == "ratio" and (self.over is None or not self.by):
            raise ValueError("a ratio needs 'over' (the denominator's series) and 'by' (the labels both sides keep)")
        if self.kind != "ratio" and (self.over is not None or self.min_count):
            raise ValueError("'over' and 'min_count' belong to kind: ratio")
        if self.kind != "gauge" and self.window <= 0:
            raise ValueError("a rate or ratio needs a window longer than 0s")
        return self

    @property
    def selector(self) -> Selector:
        return Selector(self.series)

    @property
    def denominator(self) -> Selector | None:
        return Selector(self.over) if self.over is not None else None


class MetricRule(PolicyModel):
    alert: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)
    value: ValueSpec
    op: Op
    threshold: float
    for_: Duration = Field(0.0, alias="for")
    severity: Literal["info", "warning", "error", "critical", "emergency"]
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str
    description: str = ""

    @field_validator("labels")
    @classmethod
    def _rule_labels(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not _LABEL.fullmatch(k) or k in RESERVED_LABELS:
                raise ValueError(f"label {k!r}: a label name other than alertname and severity")
        return v

    @field_validator("summary", "description")
    @classmethod
    def _template(cls, v: str) -> str:
        for m in _TEMPLATE.finditer(v):
            if not _PLACEHOLDER.fullmatch(m.group(1)):
                raise ValueError(f"template {m.group(0)!r}: only {{{{ $labels.NAME }}}}, {{{{ $value }}}} and "
                                 "{{ $value | humanize|humanizePercentage|humanizeDuration }} are supported")
        return v


class MetricRulesPolicy(PolicyModel):
    group: str = Field("sfa-ops", min_length=1, max_length=128)
    """The Prometheus rule group's name."""
    interval: Duration = 15.0
    """How often the rules are evaluated (both by Prometheus and embedded)."""
    max_series_per_rule: int = Field(1000, ge=1)
    """Label sets (alerts, and counter series remembered for rates) kept per rule; more are refused
    and counted."""
    max_points_per_series: int = Field(256, ge=2)
    """Counter samples kept per series for a rate (the oldest go first)."""
    rules: tuple[MetricRule, ...] = ()

    @model_validator(mode="after")
    def _checks(self) -> MetricRulesPolicy:
        names = [r.alert for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"alert names must be unique, repeated: {', '.join(dupes)}")
        if self.interval <= 0:
            raise ValueError("interval must be longer than 0s")
        return self


def load_metric_rules(overrides_dir: Path | str | None = None) -> MetricRulesPolicy:
    """Load ``metric_rules.yaml`` (defaults, then the override directory's copy: its ``rules``
    list replaces the default list whole)."""
    return load_policy(MetricRulesPolicy, FILENAME, overrides_dir)


def metric_rules_from_text(text: str, source: str = "<string>") -> MetricRulesPolicy:
    return load_policy_text(MetricRulesPolicy, text, source)


# -- rendering for Prometheus ----------------------------------------------------------------------


def _by(labels: tuple[str, ...]) -> str:
    return f"by ({', '.join(labels)})"


def _range(fn: str, selector: str, window: float) -> str:
    return f"{fn}({selector}[{format_duration(window)}])"


def promql(rule: MetricRule) -> str:
    """The rule's condition as a PromQL expression (what Prometheus evaluates)."""
    v = rule.value
    cmp = f"{rule.op} {_plain(rule.threshold)}"
    if v.kind == "gauge":
        expr = f"max {_by(v.by)} ({v.series})" if v.by else v.series
        return f"{expr} {cmp}"
    if v.kind == "rate":
        expr = _range("rate", v.series, v.window)
        return f"sum {_by(v.by)} ({expr}) {cmp}" if v.by else f"{expr} {cmp}"
    assert v.over is not None and v.by is not None
    num = f"sum {_by(v.by)} ({_range('rate', v.series, v.window)})"
    den = f"sum {_by(v.by)} ({_range('rate', v.over, v.window)})"
    expr = f"({num} / {den}) {cmp}"
    if v.min_count:
        expr += f" and sum {_by(v.by)} ({_range('increase', v.over, v.window)}) >= {_plain(v.min_count)}"
    return expr


def prometheus_rule(rule: MetricRule) -> dict[str, Any]:
    """One entry of a Prometheus rule group."""
    out: dict[str, Any] = {"alert": rule.alert, "expr": promql(rule)}
    if rule.for_:
        out["for"] = format_duration(rule.for_)
    out["labels"] = {**rule.labels, "severity": rule.severity}
    out["annotations"] = {"summary": rule.summary, **({"description": rule.description} if rule.description else {})}
    return out


def prometheus_rules_document(policy: MetricRulesPolicy) -> dict[str, Any]:
    """The whole Prometheus rule file."""
    return {"groups": [{"name": policy.group, "interval": format_duration(policy.interval),
                        "rules": [prometheus_rule(r) for r in policy.rules]}]}


# -- templates, rendered as Prometheus renders them --------------------------------------------


def _g(v: float) -> str:
    """Go's ``%.4g``."""
    text = f"{v:.4g}"
    if text in ("inf", "-inf", "nan"):
        return {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}[text]
    return text


def humanize(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return _g(v)
    if abs(v) >= 1:
        prefix = ""
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix, v = p, v / 1000
        return _g(v) + prefix
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return _g(v) + prefix


def humanize_percentage(v: float) -> str:
    return _g(v * 100) + "%"


def humanize_duration(v: float) -> str:
    if not math.isfinite(v):
        return _g(v)
    if v == 0:
        return _g(v) + "s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        whole = int(v)
        seconds, minutes, hours, days = whole % 60, whole // 60 % 60, whole // 3600 % 24, whole // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return f"{_g(v)}{prefix}s"


def _plain(v: float) -> str:
    """``{{ $value }}``: the shortest repr (Go may switch to an exponent at other magnitudes)."""
    if not math.isfinite(v):
        return _g(v)
    text = repr(v)
    return text[:-2] if text.endswith(".0") else text


_FUNCTIONS = {None: _plain, "humanize": humanize,
              "humanizePercentage": humanize_percentage, "humanizeDuration": humanize_duration}


def render_template(template: str, labels: Mapping[str, str], value: float) -> str:
    """A summary/description with its placeholders filled (a missing label renders empty, as in
    Prometheus); cut to ``MAX_ANNOTATION`` characters."""
    def fill(m: re.Match[str]) -> str:
        p = _PLACEHOLDER.fullmatch(m.group(1))
        if p is None:  # refused at load time; kept literal if a caller skipped validation
            return m.group(0)
        if p.group("label"):
            return labels.get(p.group("label"), "")
        return _FUNCTIONS[p.group("fn")](value)

    return _TEMPLATE.sub(fill, template)[:MAX_ANNOTATION]


__all__ = [
    "FILENAME",
    "MetricRule",
    "MetricRulesPolicy",
    "Selector",
    "ValueSpec",
    "humanize",
    "humanize_duration",
    "humanize_percentage",
    "load_metric_rules",
    "metric_rules_from_text",
    "prometheus_rule",
    "prometheus_rules_document",
    "promql",
    "render_template",
]
