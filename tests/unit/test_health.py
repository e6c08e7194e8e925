"""Service health: the seed's classification rules, flap damping and recovery estimates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.common.config import PolicyConfigError, load_policy_text
from policies.health.status import (
    HealthInputs,
    HealthPolicy,
    HealthState,
    HealthStatus,
    classify,
    evaluate,
    load_health_policy,
)

H, DG, DN = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.DOWN
CFG = load_health_policy()
PODS_OK = {"pods_running": 3, "pods_ready": 3, "pods_total": 3}


@pytest.mark.parametrize(
    ("inputs", "status", "reasons"),
    [
        ({}, H, ()),
        ({"instances_online": 0, "instances_total": 2}, DN, ("no_running_pods",)),
        ({"instances_online": 1, "instances_total": 2}, H, ()),
        ({"pods_running": 0, "pods_ready": 0, "pods_total": 3}, DN, ("no_running_pods",)),
        (
            {
                "pods_running": 0,
                "pods_ready": 0,
                "pods_total": 3,
                "pod_failure_reason": "container_oom_killed",
            },
            DN,
            ("no_running_pods", "container_oom_killed"),
        ),
        ({"pods_running": 2, "pods_ready": 0, "pods_total": 3}, DN, ("pods_not_ready",)),
        ({"pods_running": 3, "pods_ready": 1, "pods_total": 3}, DG, ("pods_not_ready",)),
        ({"pods_running": 4, "pods_ready": 2, "pods_total": 4}, H, ()),  # exactly 50 % ready is enough
        ({**PODS_OK, "calls": 100, "responses": 100, "server_errors": 11}, DG, ("high_error_rate",)),
        ({**PODS_OK, "calls": 100, "responses": 100, "server_errors": 10}, H, ()),  # > 10 %, not >=
        ({**PODS_OK, "p95_s": 5.01}, DG, ("high_latency",)),
        ({**PODS_OK, "p95_s": 5.0}, H, ()),
        ({**PODS_OK, "calls": 10, "responses": 4}, DG, ("low_response_rate",)),
        ({**PODS_OK, "calls": 10, "responses": 1}, DG, ("poor_response_rate",)),
        ({**PODS_OK, "calls": 4, "responses": 0}, H, ()),  # fewer than 5 calls: no verdict
        ({**PODS_OK, "calls": 10, "responses": 5}, H, ()),
        (
            {
                "pods_running": 3,
                "pods_ready": 1,
                "pods_total": 3,
                "pod_failure_reason": "pod_restart_loop",
                "p95_s": 9.0,
            },
            DG,
            ("pods_not_ready", "high_latency", "pod_restart_loop"),
        ),
        ({"calls": 20, "responses": 0, "server_errors": 0}, DG, ("poor_response_rate",)),  # no pod source
    ],
)
def test_classify(inputs: dict[str, object], status: HealthStatus, reasons: tuple[str, ...]) -> None:
    """Each seed rule yields its status and reason code."""
    got = classify(HealthInputs(now=0.0, **inputs), CFG)  # type: ignore[arg-type]
    assert got == (status, reasons)


def run(seq: list[dict[str, object]], state: HealthState | None = None) -> list[tuple[HealthStatus, bool]]:
    state = state or HealthState()
    out = []
    for t, inputs in enumerate(seq):
        decision, state = evaluate(HealthInputs(now=float(t * 10), **inputs), state, CFG)  # type: ignore[arg-type]
        out.append((decision.status, decision.changed))
    return out


DOWN_IN = {"instances_online": 0, "instances_total": 1}
SLOW_IN = {"p95_s": 8.0}
OK_IN: dict[str, object] = {}


@pytest.mark.parametrize(
    ("seq", "expected"),
    [
        ([DOWN_IN], [(DN, True)]),  # down is announced at once
        ([SLOW_IN, SLOW_IN], [(H, False), (DG, True)]),  # degraded after two evaluations
        ([SLOW_IN, OK_IN, SLOW_IN, OK_IN], [(H, False)] * 4),  # flapping never announces
        ([DOWN_IN, OK_IN, OK_IN], [(DN, True), (DN, False), (H, True)]),  # recovery after two
        (
            [DOWN_IN, OK_IN, DOWN_IN, OK_IN, OK_IN],
            [(DN, True), (DN, False), (DN, False), (DN, False), (H, True)],
        ),
        ([SLOW_IN, DOWN_IN], [(H, False), (DN, True)]),
    ],
)
def test_damping(seq: list[dict[str, object]], expected: list[tuple[HealthStatus, bool]]) -> None:
    """A new status is announced only after it held for its configured number of evaluations."""
    assert run(seq) == expected


def test_damping_by_time() -> None:
    """With ``hold`` set, a status that persisted long enough is announced without more evaluations."""
    cfg = load_policy_text(HealthPolicy, "damping:\n  degraded: {evaluations: 99, hold: 30s}\n")
    state = HealthState()
    seen = []
    for now in (0.0, 10.0, 29.0, 30.0):
        d, state = evaluate(HealthInputs(now=now, p95_s=9.0), state, cfg)
        seen.append(d.changed)
    assert seen == [False, False, False, True]


def test_decision_carries_recovery_estimate() -> None:
    """A down service gets the seed's "2-5 minutes" estimate and a retryAfter; healthy gets none."""
    d, state = evaluate(HealthInputs(now=0.0, pods_running=0, pods_ready=0, pods_total=3), HealthState(), CFG)
    assert (d.status, d.changed, d.previous) == (DN, True, H)
    assert (d.estimated_recovery, d.retry_after_s) == ("2-5 minutes", 120.0)
    d, _ = evaluate(HealthInputs(now=10.0, **PODS_OK), state, CFG)  # type: ignore[arg-type]
    assert d.status is DN and d.observed is H and d.reasons == ("no_running_pods",)


def test_rates_in_decision() -> None:
    """The decision reports response and error rates as percentages, None without calls."""
    d, _ = evaluate(HealthInputs(now=0.0, calls=8, responses=6, server_errors=2), HealthState(), CFG)
    assert (d.response_rate, d.error_rate) == (75.0, 25.0)
    d, _ = evaluate(HealthInputs(now=0.0), HealthState(), CFG)
    assert (d.response_rate, d.error_rate) == (None, None)


@settings(max_examples=80, deadline=None)
@given(
    steps=st.lists(
        st.fixed_dictionaries(
            {
                "pods_running": st.integers(0, 3),
                "pods_ready": st.integers(0, 3),
                "calls": st.integers(0, 20),
                "responses": st.integers(0, 20),
                "p95_s": st.none() | st.floats(0, 10),
            }
        ),
        min_size=1,
        max_size=20,
    )
)
def test_announcements_follow_damping(steps: list[dict[str, object]]) -> None:
    """Whatever the inputs, an announced status was observed in the evaluations that required it."""
    state = HealthState()
    observed: list[HealthStatus] = []
    for t, s in enumerate(steps):
        inputs = HealthInputs(now=float(t), pods_total=3, **s)  # type: ignore[arg-type]
        d, state = evaluate(inputs, state, CFG)
        observed.append(d.observed)
        if d.changed:
            need = CFG.damping_for(d.status).evaluations
            assert observed[-need:] == [d.status] * need
        assert d.status is state.announced


def test_bad_health_file_names_key(tmp_path: Path) -> None:
    """Unknown reasons and bad durations are rejected with the key and value named."""
    (tmp_path / "health.yaml").write_text("recovery:\n  no_pods: {estimate: soon, retry_after: 1m}\n")
    with pytest.raises(PolicyConfigError, match=r"recovery.*'no_pods'"):
        load_health_policy(tmp_path)
    with pytest.raises(PolicyConfigError, match=r"degraded\.p95_above = 'fast'"):
        load_policy_text(HealthPolicy, "degraded:\n  p95_above: fast\n")
