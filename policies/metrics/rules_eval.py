"""Evaluating ``metric_rules.yaml`` on the series of one status, as Prometheus evaluates the rendered
rule file (pure: the caller passes the series, the previous state and ``now``).

Each evaluation computes every rule's value per label set (``policies.metrics.rules``), compares it
with the threshold and moves each label set through Prometheus' alert states: a new breach is
*pending* (active since ``now``); once it has held for ``for`` it *fires* (one firing alert, its
``startsAt`` the firing time); when the breach ends or its series disappears a firing alert is
*resolved* (one resolution, ``endsAt`` = ``now``) and a pending one is forgotten. Only these two
transitions come back as alerts, in the supervisor's alert format (``labels``, ``annotations``,
``startsAt``, ``endsAt``); the supervisor's ``FiringSet`` re-sends what is still firing.

Rates follow PromQL's ``rate``: counter samples in ``[now - window, now]``, a drop counted as a
reset (the new value is the increase since), per second over the time the samples span; at least
two samples are needed. Unlike Prometheus, nothing is extrapolated to the window's edges, so a
rate is judged on the samples sfa-ops actually took (one per evaluation). A series absent from
the status loses its samples (as a Prometheus staleness marker would end it).

Bounded: per rule at most ``max_series_per_rule`` alert label sets and remembered counter series,
``max_points_per_series`` samples each; what does not fit is refused and counted (``refused``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from policies.metrics.rules import MetricRule, MetricRulesPolicy, Selector, ValueSpec, render_template
from policies.supervision.status_view import Family

LabelKey = tuple[tuple[str, str], ...]
Points = tuple[tuple[float, float], ...]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}


@dataclass(frozen=True, slots=True)
class ActiveAlert:
    labels: LabelKey
    active_at: float
    fired_at: float | None
    annotations: LabelKey


@dataclass(frozen=True, slots=True)
class RuleState:
    active: Mapping[LabelKey, ActiveAlert] = field(default_factory=dict)
    history: Mapping[tuple[str, LabelKey], Points] = field(default_factory=dict)
    """Counter samples per (``num``/``den``, series labels)."""


@dataclass(frozen=True, slots=True)
class RulesState:
    rules: Mapping[str, RuleState] = field(default_factory=dict)
    refused: int = 0
    """Label sets and series refused by ``max_series_per_rule`` so far."""

    def summary(self) -> dict[str, int]:
        """Counts for a status document: firing and pending alerts, refusals."""
        alerts = [a for r in self.rules.values() for a in r.active.values()]
        firing = sum(1 for a in alerts if a.fired_at is not None)
        return {"firing": firing, "pending": len(alerts) - firing, "refused": self.refused}


@dataclass(frozen=True, slots=True)
class Evaluation:
    state: RulesState
    alerts: list[dict[str, Any]]
    """Alerts that started firing (``endsAt`` None) or were resolved (``endsAt`` = now)."""


def series_index(families: Iterable[Family]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by exposed series name (a counter family ``x`` is exposed as ``x_total``, a
    histogram's samples under ``x_bucket``, ``x_sum`` and ``x_count``)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in families:
        base = fam.name if fam.kind != "counter" or fam.name.endswith("_total") else fam.name + "_total"
        for s in fam.samples:
            name = base + str(getattr(s, "suffix", "") or "")  # a histogram sample's suffix, where set
            out.setdefault(name, []).append((dict(s.labels), s.value))
    return out


def _key(labels: Mapping[str, str]) -> LabelKey:
    return tuple(sorted((k, v) for k, v in labels.items() if v != ""))


def _group(labels: Mapping[str, str], by: tuple[str, ...] | None) -> LabelKey:
    return _key(labels) if by is None else _key({k: labels.get(k, "") for k in by})


def _select(index: Mapping[str, list[tuple[dict[str, str], float]]], sel: Selector) -> list[tuple[dict[str, str], float]]:
    return [(labels, v) for labels, v in index.get(sel.name, ()) if sel.matches(labels)]


def _increase(points: Points) -> float:
    total = 0.0
    for (_, prev), (_, cur) in pairwise(points):
        total += cur - prev if cur >= prev else cur  # a drop is a counter reset
    return total


class _Budget:
    """The per-rule cap on label sets; what does not fit is counted."""

    def __init__(self, cap: int) -> None:
        self.cap, self.used, self.refused = cap, 0, 0

    def take(self) -> bool:
        if self.used >= self.cap:
            self.refused += 1
            return False
        self.used += 1
        return True


def _counter_points(role: str, sel: Selector, index: Mapping[str, list[tuple[dict[str, str], float]]],
                    old: Mapping[tuple[str, LabelKey], Points], new: dict[tuple[str, LabelKey], Points],
                    budget: _Budget, *, now: float, window: float, max_points: int) -> list[tuple[LabelKey, Points]]:
    """Append this evaluation's sample to each selected counter series; the points in the window."""
    out = []
    remembered = {k for (r, k) in old if r == role}
    # Series already remembered keep their place under the cap; new ones come after, in order.
    present = sorted(((_key(labels), v) for labels, v in _select(index, sel)),
                     key=lambda kv: (kv[0] not in remembered, kv[0]))
    for key, value in present:
        if not math.isfinite(value) or not budget.take():
            continue
        kept = tuple(p for p in old.get((role, key), ()) if now - window <= p[0] < now)
        pts = (*kept, (now, value))[-max_points:]
        new[(role, key)] = pts
        out.append((key, pts))
    return out


def _values(spec: ValueSpec, index: Mapping[str, list[tuple[dict[str, str], float]]], rs: RuleState,
            policy: MetricRulesPolicy, now: float) -> tuple[dict[LabelKey, float], dict[tuple[str, LabelKey], Points], int]:
    """The rule's value per result label set, the new counter history, and refusals."""
    history: dict[tuple[str, LabelKey], Points] = {}
    budget = _Budget(policy.max_series_per_rule)
    if spec.kind == "gauge":
        gauges: dict[LabelKey, float] = {}
        for labels, v in _select(index, spec.selector):
            g = _group(labels, spec.by)
            gauges[g] = max(gauges[g], v) if g in gauges else v
        return gauges, history, 0
    num: dict[LabelKey, float] = {}
    for key, pts in _counter_points("num", spec.selector, index, rs.history, history, budget, now=now,
                                    window=spec.window, max_points=policy.max_points_per_series):
        if len(pts) >= 2 and pts[-1][0] > pts[0][0]:
            g = _group(dict(key), spec.by)
            num[g] = num.get(g, 0.0) + _increase(pts) / (pts[-1][0] - pts[0][0])
    if spec.kind == "rate":
        return num, history, budget.refused
    den: dict[LabelKey, float] = {}
    den_increase: dict[LabelKey, float] = {}
    assert spec.denominator is not None
    for key, pts in _counter_points("den", spec.denominator, index, rs.history, history, budget, now=now,
                                    window=spec.window, max_points=policy.max_points_per_series):
        if len(pts) >= 2 and pts[-1][0] > pts[0][0]:
            g = _group(dict(key), spec.by)
            den[g] = den.get(g, 0.0) + _increase(pts) / (pts[-1][0] - pts[0][0])
            den_increase[g] = den_increase.get(g, 0.0) + _increase(pts)
    ratios = {g: num[g] / d for g, d in den.items()
              if g in num and d > 0 and den_increase[g] >= spec.min_count}
    return ratios, history, budget.refused


def _alert(active: ActiveAlert, *, ends_at: float | None) -> dict[str, Any]:
    return {"labels": dict(active.labels), "annotations": dict(active.annotations),
            "startsAt": active.fired_at, "endsAt": ends_at}


def _evaluate_rule(rule: MetricRule, policy: MetricRulesPolicy, index: Mapping[str, list[tuple[dict[str, str], float]]],
                   rs: RuleState, now: float, out: list[dict[str, Any]]) -> tuple[RuleState, int]:
    values, history, refused = _values(rule.value, index, rs, policy, now)
    compare = _OPS[rule.op]
    breaching = {g: v for g, v in values.items() if not math.isnan(v) and compare(v, rule.threshold)}
    candidates = []
    for g, v in breaching.items():
        labels = {**dict(g), **rule.labels, "alertname": rule.alert, "severity": rule.severity}
        candidates.append((tuple(sorted(labels.items())), g, v))
    candidates.sort(key=lambda c: (c[0] not in rs.active, c[0]))  # active ones first: the cap never drops them
    budget = _Budget(policy.max_series_per_rule)
    active: dict[LabelKey, ActiveAlert] = {}
    for akey, g, v in candidates:
        if not budget.take():
            continue
        prev = rs.active.get(akey)
        active_at = prev.active_at if prev is not None else now
        fired_at = prev.fired_at if prev is not None else None
        annotations: LabelKey = ()
        if fired_at is None and now - active_at >= rule.for_:
            fired_at = now
        if fired_at is not None:  # rendered with the current value, as Prometheus does each evaluation
            series_labels = dict(g)
            annotations = tuple((k, render_template(t, series_labels, v))
                                for k, t in (("summary", rule.summary), ("description", rule.description)) if t)
        active[akey] = ActiveAlert(labels=akey, active_at=active_at, fired_at=fired_at, annotations=annotations)
        if fired_at == now and (prev is None or prev.fired_at is None):
            out.append(_alert(active[akey], ends_at=None))
    for akey, prev in sorted(rs.active.items()):
        if akey not in active and prev.fired_at is not None:
            out.append(_alert(prev, ends_at=now))
    return RuleState(active=active, history=history), refused + budget.refused


def evaluate_rules(policy: MetricRulesPolicy, families: Iterable[Family], state: RulesState,
                   now: float) -> Evaluation:
    """One evaluation of every rule on ``families`` (``policies.supervision.status_view.metric_families``)."""
    index = series_index(families)
    alerts: list[dict[str, Any]] = []
    rules: dict[str, RuleState] = {}
    refused = state.refused
    for rule in policy.rules:
        rules[rule.alert], n = _evaluate_rule(rule, policy, index, state.rules.get(rule.alert, RuleState()), now,
                                              alerts)
        refused += n
    return Evaluation(state=RulesState(rules=rules, refused=refused), alerts=alerts)


def restore_state(policy: MetricRulesPolicy, alerts: Iterable[Mapping[str, Any]]) -> RulesState:
    """The state in which the still-firing alerts of these rules (as the supervisor restored them
    from the store) are firing, so that the end of their breach resolves them after a restart."""
    by_name = {r.alert: r for r in policy.rules}
    rules: dict[str, dict[LabelKey, ActiveAlert]] = {}
    refused = 0
    for a in alerts:
        labels = {str(k): str(v) for k, v in (a.get("labels") or {}).items()}
        rule = by_name.get(labels.get("alertname", ""))
        starts = a.get("startsAt")
        if rule is None or labels.get("severity") != rule.severity or not isinstance(starts, int | float):
            continue
        active = rules.setdefault(rule.alert, {})
        if len(active) >= policy.max_series_per_rule:
            refused += 1
            continue
        key = tuple(sorted(labels.items()))
        ann = tuple(sorted((str(k), str(v)) for k, v in (a.get("annotations") or {}).items()))
        active[key] = ActiveAlert(labels=key, active_at=float(starts), fired_at=float(starts), annotations=ann)
    return RulesState(rules={n: RuleState(active=act) for n, act in rules.items()}, refused=refused)


__all__ = ["ActiveAlert", "Evaluation", "RuleState", "RulesState", "evaluate_rules", "restore_state", "series_index"]
