"""The embedded evaluation of metric rules on a fake timeline: ``for``, resolution, counter resets,
missing series, the per-rule bounds, and a restart's restored state."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.metrics.rules import load_metric_rules, metric_rules_from_text
from policies.metrics.rules_eval import RulesState, evaluate_rules, restore_state, series_index
from policies.supervision.status_view import Family, metric_families

T0 = 1_800_000_000.0

GAUGE = """
rules:
  - alert: Slow
    value: {kind: gauge, series: 'lat{service=~"A|B"}'}
    op: ">"
    threshold: 1
    for: 30s
    severity: warning
    labels: {component: service}
    summary: "{{ $labels.service }} at {{ $value | humanizeDuration }}"
"""

RATE = """
rules:
  - alert: Drops
    value: {kind: rate, series: 'seen_total{outcome="dropped"}', window: 60s}
    op: ">"
    threshold: 0
    severity: error
    summary: "{{ $value }}/s"
"""

RATIO = """
rules:
  - alert: Unanswered
    value: {kind: ratio, series: 'calls_total{code="timeout"}', over: calls_total, by: [service], window: 60s,
            min_count: 5}
    op: ">"
    threshold: 0.5
    severity: error
    summary: "{{ $labels.service }} {{ $value | humanizePercentage }}"
"""


def gauge(name: str, **values: float) -> Family:
    fam = Family(name, "gauge", "")
    for service, v in values.items():
        fam.add(v, service=service)
    return fam


def counter(name: str, samples: list[tuple[dict[str, str], float]]) -> Family:
    fam = Family(name, "counter", "")
    for labels, v in samples:
        fam.add(v, **labels)
    return fam


class Timeline:
    """Evaluates one policy every ``step`` seconds, keeping the state and every alert returned."""

    def __init__(self, text: str, step: float = 10.0) -> None:
        self.policy = metric_rules_from_text(text)
        self.state = RulesState()
        self.now = T0
        self.step = step
        self.sent: list[dict[str, object]] = []

    def tick(self, *families: Family) -> list[dict[str, object]]:
        self.now += self.step
        ev = evaluate_rules(self.policy, families, self.state, self.now)
        self.state = ev.state
        self.sent += ev.alerts
        return ev.alerts


def test_for_is_respected_then_fires_once_then_resolves() -> None:
    """A breach fires only after holding ``for``, is sent once while it holds, and is resolved once."""
    t = Timeline(GAUGE)
    assert t.tick(gauge("lat", A=2.5)) == []  # pending since this evaluation
    assert t.state.summary() == {"firing": 0, "pending": 1, "refused": 0}
    assert t.tick(gauge("lat", A=2.5)) == []  # 10 s held
    assert t.tick(gauge("lat", A=2.5)) == []  # 20 s held
    fired = t.tick(gauge("lat", A=2.5))  # 30 s held: fires
    assert fired == [{"labels": {"alertname": "Slow", "severity": "warning", "component": "service", "service": "A"},
                      "annotations": {"summary": "A at 2.5s"}, "startsAt": t.now, "endsAt": None}]
    started = t.now
    assert t.tick(gauge("lat", A=3.0)) == []  # still firing: nothing new to send
    resolved = t.tick(gauge("lat", A=0.2))
    assert len(resolved) == 1 and resolved[0]["endsAt"] == t.now and resolved[0]["startsAt"] == started
    assert resolved[0]["labels"] == fired[0]["labels"]
    assert t.tick(gauge("lat", A=0.2)) == [] and t.state.summary()["firing"] == 0


def test_a_breach_shorter_than_for_never_fires() -> None:
    """A pending breach that ends before ``for`` is forgotten: no alert, no resolution."""
    t = Timeline(GAUGE)
    for _ in range(2):
        t.tick(gauge("lat", A=5.0))
    t.tick(gauge("lat", A=0.1))
    for _ in range(5):
        t.tick(gauge("lat", A=5.0))
    assert [a["endsAt"] for a in t.sent] == [None]  # fired once, 30 s after the second breach began
    assert t.sent[0]["startsAt"] == T0 + 40 + 30


def test_matchers_select_series() -> None:
    """Only series the selector's matchers select are judged (C is not A|B)."""
    t = Timeline(GAUGE.replace("for: 30s", "for: 0s"))
    alerts = t.tick(gauge("lat", A=2, B=0.5, C=9))
    assert [a["labels"]["service"] for a in alerts] == ["A"]  # type: ignore[index]


def test_missing_series_resolves_a_firing_alert() -> None:
    """A firing alert whose series disappears (a retired service) is resolved, as in Prometheus."""
    t = Timeline(GAUGE.replace("for: 30s", "for: 0s"))
    assert len(t.tick(gauge("lat", A=2))) == 1
    gone = t.tick(gauge("lat"))
    assert len(gone) == 1 and gone[0]["endsAt"] == t.now
    assert t.tick() == []  # no family at all: nothing to judge, nothing to resend


def dropped(v: float) -> Family:
    return counter("seen", [({"outcome": "dropped"}, v), ({"outcome": "calls"}, 1000 + v)])


def test_rate_needs_two_samples_and_fires_on_increase() -> None:
    """A rate needs two samples; an increase fires (``for`` 0), a flat counter resolves."""
    t = Timeline(RATE)
    assert t.tick(dropped(5)) == []  # one sample: no rate yet
    assert t.tick(dropped(5)) == []  # flat
    fired = t.tick(dropped(25))  # 20 more over the 20 s the samples span
    assert [a["annotations"] for a in fired] == [{"summary": "1/s"}]
    assert fired[0]["labels"] == {"alertname": "Drops", "severity": "error", "outcome": "dropped"}
    for _ in range(5):  # the 60 s window still holds the increase
        assert t.tick(dropped(25)) == []
    resolved = t.tick(dropped(25))  # now only flat samples in the window
    assert len(resolved) == 1 and resolved[0]["endsAt"] == t.now and len(t.sent) == 2


def test_counter_reset_counts_the_new_value_not_a_negative_rate() -> None:
    """A counter that drops (a restart) counts from zero: 100 → 3 is an increase of 3, not -97."""
    t = Timeline(RATE.replace("threshold: 0", "threshold: 0.14"))
    assert t.tick(dropped(100)) == [] and t.tick(dropped(100)) == []
    alerts = t.tick(dropped(3))  # 3 over the 20 s the samples span
    assert [a["annotations"]["summary"] for a in alerts] == ["0.15/s"]  # type: ignore[index]
    points = next(iter(t.state.rules["Drops"].history.values()))
    assert [v for _, v in points] == [100, 100, 3]


def test_ratio_judges_only_above_min_count() -> None:
    """Unanswered / all calls per service, judged only once 5 calls were seen in the window."""
    def calls(timeouts: float, ok: float) -> Family:
        return counter("calls", [({"service": "R", "code": "timeout"}, timeouts), ({"service": "R", "code": "ok"}, ok)])

    t = Timeline(RATIO)
    assert t.tick(calls(0, 0)) == []
    assert t.tick(calls(3, 1)) == []  # 4 calls in the window: below min_count
    fired = t.tick(calls(6, 2))  # 8 calls, 6 unanswered
    assert [(a["labels"], a["annotations"]) for a in fired] == [
        ({"alertname": "Unanswered", "severity": "error", "service": "R"}, {"summary": "R 75%"})]


def test_ratio_without_numerator_series_has_no_value() -> None:
    """No timeout series for a service: no ratio (PromQL's division drops the group), no alert."""
    t = Timeline(RATIO)
    for ok in (0, 10, 20, 30):
        assert t.tick(counter("calls", [({"service": "S", "code": "ok"}, ok)])) == []


def test_label_sets_per_rule_are_capped_and_refusals_counted() -> None:
    """With max_series_per_rule 2, a third breaching service is refused and counted; the two
    already tracked keep their place."""
    t = Timeline("max_series_per_rule: 2\n" + GAUGE.replace("for: 30s", "for: 0s").replace('{service=~"A|B"}', ""))
    assert len(t.tick(gauge("lat", A=2, B=2))) == 2
    assert t.tick(gauge("lat", A=2, B=2, C=2)) == []
    assert t.state.summary() == {"firing": 2, "pending": 0, "refused": 1}
    assert sorted(dict(a.labels)["service"] for a in t.state.rules["Slow"].active.values()) == ["A", "B"]


def test_counter_series_and_points_are_capped() -> None:
    """Remembered counter series per rule and samples per series are bounded."""
    t = Timeline("max_series_per_rule: 3\nmax_points_per_series: 4\n" + RATE.replace("60s", "1h"))
    many = counter("seen", [({"outcome": "dropped", "shard": str(i)}, 1.0) for i in range(10)])
    for _ in range(10):
        t.tick(many)
    history = t.state.rules["Drops"].history
    assert len(history) == 3 and all(len(p) == 4 for p in history.values())
    assert t.state.refused == 7 * 10


def test_nan_values_never_breach() -> None:
    """A NaN gauge (no data) is not a breach."""
    t = Timeline(GAUGE.replace("for: 30s", "for: 0s"))
    assert t.tick(gauge("lat", A=math.nan)) == []


def test_restored_firing_alert_is_resolved_after_a_restart() -> None:
    """The supervisor restores firing alerts from the store; the end of the breach resolves them."""
    t = Timeline(GAUGE.replace("for: 30s", "for: 0s"))
    fired = t.tick(gauge("lat", A=2))
    other = {"labels": {"alertname": "ServiceDegraded", "severity": "warning"}, "startsAt": T0, "endsAt": None}
    t.state = restore_state(t.policy, [*fired, other])
    assert t.state.summary() == {"firing": 1, "pending": 0, "refused": 0}
    resolved = t.tick(gauge("lat", A=0.1))
    assert len(resolved) == 1 and resolved[0]["labels"] == fired[0]["labels"]
    assert resolved[0]["startsAt"] == fired[0]["startsAt"]


def test_shipped_rules_fire_on_a_status_from_status_view() -> None:
    """The shipped policy on metric_families of a real-shaped status: a service failing 40 % of
    calls fires ServiceErrorRatioHigh after its 2 minutes, one at 1 % does not."""
    policy = load_metric_rules()
    status = {"health": {"clusterId": "c1", "services": {
        "Payments": {"status": "degraded", "breaker": "closed", "errorRate": 0.4, "p95Ms": 30.0},
        "Users": {"status": "healthy", "breaker": "closed", "errorRate": 0.01, "p95Ms": 20.0}}}}
    state, sent = RulesState(), list[dict[str, Any]]()
    for i in range(9):  # 0 .. 120 s every 15 s
        ev = evaluate_rules(policy, metric_families(status, age_s=0.0), state, T0 + 15 * i)
        state, sent = ev.state, sent + ev.alerts
    assert [(a["labels"]["alertname"], a["labels"]["service"]) for a in sent] == [
        ("ServiceErrorRatioHigh", "Payments")]
    assert sent[0]["labels"]["cluster"] == "c1" and sent[0]["startsAt"] == T0 + 120


def test_series_index_names_counters_as_exposed() -> None:
    """A counter family ``x`` is the series ``x_total`` (as /metrics exposes it); gauges keep their name."""
    families = [Family("sfa_ops_observed", "counter", ""), Family("sfa_ops_calls_total", "counter", ""),
                Family("sfa_ops_up", "gauge", "")]
    for fam in families:
        fam.add(1.0, cluster="c1")
    assert sorted(series_index(families)) == ["sfa_ops_calls_total", "sfa_ops_observed_total", "sfa_ops_up"]


@pytest.mark.parametrize("bad", [
    "rules: [{alert: A, value: {kind: ratio, series: x}, op: '>', threshold: 1, severity: error, summary: s}]",
    "rules: [{alert: A, value: {kind: gauge, series: 'x{'}, op: '>', threshold: 1, severity: error, summary: s}]",
    "rules: [{alert: A, value: {kind: gauge, series: x}, op: '>', threshold: 1, severity: error, "
    "summary: '{{ .Labels.x }}'}]",
    "rules: [{alert: A, value: {kind: gauge, series: x}, op: '>', threshold: 1, severity: error, summary: s, "
    "labels: {severity: critical}}]",
    "rules: [{alert: A, value: {kind: gauge, series: x}, op: '>', threshold: 1, severity: bad, summary: s}]",
    "rules: [{alert: A, value: {kind: gauge, series: x}, op: '>', threshold: 1, severity: error, summary: s},"
    " {alert: A, value: {kind: gauge, series: y}, op: '>', threshold: 1, severity: error, summary: s}]",
])
def test_bad_rules_are_refused_at_load(bad: str) -> None:
    """A ratio without its denominator, a broken selector, an unsupported template, a reserved
    label, an unknown severity and a repeated alert name are load errors."""
    from policies.common.config import PolicyConfigError

    with pytest.raises(PolicyConfigError):
        metric_rules_from_text(bad)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from("ABCD"), st.sampled_from([0.0, 0.5, 2.0, math.nan]), max_size=4),
                max_size=30))
def test_alerts_alternate_and_respect_for_and_cap(steps: list[dict[str, float]]) -> None:
    """Any sequence of values: per label set, firing and resolved alternate (starting with
    firing), a firing comes only after the breach held ``for`` (30 s, 3 evaluations), and no more
    than the cap (3) are ever tracked."""
    t = Timeline("max_series_per_rule: 3\n" + GAUGE.replace('{service=~"A|B"}', ""))
    held: dict[str, int] = {}
    last: dict[str, str] = {}
    for values in steps:
        alerts = t.tick(gauge("lat", **values))
        for svc in "ABCD":
            v = values.get(svc)
            held[svc] = held.get(svc, 0) + 1 if v is not None and v > 1 else 0
        for a in alerts:
            svc, status = a["labels"]["service"], "firing" if a["endsAt"] is None else "resolved"
            assert last.get(svc, "resolved") != status
            last[svc] = status
            if status == "firing":
                assert held[svc] >= 4  # breaching at this and the 3 evaluations before (30 s)
        assert sum(len(r.active) for r in t.state.rules.values()) <= 3
