"""deploy/prometheus/rules.yml is rendered from policies/metric_rules.yaml and current, and operate's
embedded evaluator, replaying the input series of rules_test.yml, raises exactly the alerts promtool
is told to expect there (``tests/integration/test_promtool_rules.py`` runs promtool on both files)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers.prometheus_rules import RULES_FILE, is_stale, main, render
from policies.metrics.rules import (
    Selector,
    humanize,
    humanize_duration,
    humanize_percentage,
    load_metric_rules,
    metric_rules_from_text,
    promql,
)
from policies.metrics.rules_eval import RulesState, evaluate_rules
from policies.supervision.status_view import Family

TESTS_FILE = RULES_FILE.with_name("rules_test.yml")


def test_committed_rules_file_is_current() -> None:
    """rules.yml equals what the shipped policy renders; regenerate with ``python -m drivers.prometheus_rules``."""
    assert not is_stale(), "deploy/prometheus/rules.yml is out of date: run python -m drivers.prometheus_rules"


def test_check_mode_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--check`` exits 1 on a file that differs from the policy, 0 on a fresh one."""
    stale = tmp_path / "rules.yml"
    stale.write_text(render(load_metric_rules()).replace("> 0.1", "> 0.2"))
    assert main(["--check", "-o", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["-o", str(stale)]) == 0 and main(["--check", "-o", str(stale)]) == 0


def test_every_rule_has_a_firing_and_a_quiet_case_in_the_tests_file() -> None:
    """rules_test.yml shows every shipped rule firing at one eval_time and silent at another."""
    doc = yaml.safe_load(TESTS_FILE.read_text())
    cases = [c for t in doc["tests"] for c in t["alert_rule_test"]]
    for rule in load_metric_rules().rules:
        mine = [c for c in cases if c["alertname"] == rule.alert]
        assert any(c["exp_alerts"] for c in mine), f"{rule.alert}: no firing case"
        assert any(not c["exp_alerts"] for c in mine), f"{rule.alert}: no quiet case"


@pytest.mark.parametrize(("fn", "value", "text"), [
    # Outputs of Prometheus 2.42's template functions for the same values.
    (humanize_percentage, 0.2, "20%"), (humanize_percentage, 0.07, "7%"), (humanize_percentage, 0.123456, "12.35%"),
    (humanize, 0.08, "80m"), (humanize, 1234567.0, "1.235M"), (humanize, 0.0, "0"),
    (humanize_duration, 6.5, "6.5s"), (humanize_duration, 0.25, "250ms"), (humanize_duration, 3725.0, "1h 2m 5s"),
    (humanize_duration, 90061.0, "1d 1h 1m 1s"), (humanize_duration, 0.0, "0s"),
])
def test_template_functions_render_as_prometheus(fn: Any, value: float, text: str) -> None:
    """humanize, humanizePercentage and humanizeDuration give Prometheus' text."""
    assert fn(value) == text


def test_promql_of_each_value_kind() -> None:
    """gauge, gauge by, rate, and ratio with min_count render as the PromQL Prometheus evaluates."""
    policy = metric_rules_from_text("""
rules:
  - {alert: G, value: {kind: gauge, series: 'g{a="1"}', by: [cluster]}, op: "<", threshold: 1, severity: error,
     summary: s}
  - {alert: R, value: {kind: rate, series: c_total, window: 5m}, op: ">", threshold: 0.5, severity: error, summary: s}
  - {alert: Q, value: {kind: ratio, series: 'c_total{code="timeout"}', over: c_total, by: [cluster, service],
     window: 2m, min_count: 5}, op: ">=", threshold: 0.25, severity: error, summary: s}
""")
    assert [promql(r) for r in policy.rules] == [
        'max by (cluster) (g{a="1"}) < 1',
        "rate(c_total[5m]) > 0.5",
        '(sum by (cluster, service) (rate(c_total{code="timeout"}[2m])) / sum by (cluster, service) '
        '(rate(c_total[2m]))) >= 0.25 and sum by (cluster, service) (increase(c_total[2m])) >= 5',
    ]


# -- the embedded evaluator on promtool's input series ---------------------------------------------

_EXPAND = re.compile(r"^(-?\d+(?:\.\d+)?)(?:([+-])(\d+(?:\.\d+)?))?x(\d+)$")


def expand(values: str) -> list[float | None]:
    """promtool's series notation: ``a``, ``axn``, ``a+bxn`` / ``a-bxn`` (n+1 values), ``_`` (no sample)."""
    out: list[float | None] = []
    for token in values.split():
        if token == "_":
            out.append(None)
            continue
        m = _EXPAND.match(token)
        if m is None:
            out.append(float(token))
            continue
        start, sign, step, n = float(m[1]), m[2], float(m[3] or 0), int(m[4])
        step = -step if sign == "-" else step
        out.extend(start + i * step for i in range(n + 1))
    return out


def families_at(series: list[tuple[Selector, list[float | None]]], index: int) -> list[Family]:
    fams: dict[str, Family] = {}
    for sel, values in series:
        if index < len(values) and values[index] is not None:
            fam = fams.setdefault(sel.name, Family(sel.name, "counter" if sel.name.endswith("_total") else "gauge", ""))
            fam.add(float(values[index] or 0.0), **{m.name: m.value for m in sel.matchers})
    return list(fams.values())


def _seconds(text: str) -> float:
    return float(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]


@pytest.mark.parametrize("group", range(len(yaml.safe_load(TESTS_FILE.read_text())["tests"])))
def test_embedded_evaluation_agrees_with_promtool_cases(group: int) -> None:
    """Replaying each promtool test's input series (one sample per evaluation) through
    ``evaluate_rules``: at every eval_time the firing alerts, labels and annotations, are exactly
    the ``exp_alerts`` promtool checks Prometheus against."""
    doc = yaml.safe_load(TESTS_FILE.read_text())
    test = doc["tests"][group]
    step = _seconds(doc["evaluation_interval"])
    assert _seconds(test["interval"]) == step  # one sample per evaluation, as replayed here
    series = [(Selector(s["series"]), expand(s["values"])) for s in test["input_series"]]
    policy = load_metric_rules()
    checks: dict[int, list[dict[str, Any]]] = {}
    for case in test["alert_rule_test"]:
        checks.setdefault(round(_seconds(case["eval_time"]) / step), []).append(case)
    state = RulesState()
    for i in range(max(checks) + 1):
        state = evaluate_rules(policy, families_at(series, i), state, 1_800_000_000.0 + i * step).state
        for case in checks.get(i, []):
            firing = sorted(
                (({k: v for k, v in a.labels if k != "alertname"}, dict(a.annotations))
                 for a in state.rules[case["alertname"]].active.values() if a.fired_at is not None), key=lambda x: sorted(x[0].items()))
            expected = sorted((({str(k): str(v) for k, v in e["exp_labels"].items()}, e.get("exp_annotations", {}))
                               for e in case["exp_alerts"]), key=lambda x: sorted(x[0].items()))
            assert firing == expected, f"{case['alertname']} at {case['eval_time']}"
