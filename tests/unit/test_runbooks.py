"""Runbook selection and safe placeholder filling (policies/alerting/runbooks.py, runbooks.yaml)."""

from __future__ import annotations

import pytest

from policies.alerting.runbooks import (
    PlaceholderError,
    RunbookError,
    RunbookPolicy,
    StepStatus,
    check_value,
    load_runbooks,
    render_runbook,
    select_runbook,
)
from policies.common.config import PolicyConfigError, load_policy_text

DEFAULT = load_runbooks()

ORDER = """
runbooks:
  - {name: general, fallback: true, steps: [{title: look}]}
  - {name: db-any, components: [postgresql_cluster], steps: [{title: a}]}
  - {name: db-critical, components: [postgresql_cluster], severities: [critical], steps: [{title: b}]}
  - {name: unavailable, alert_types: [service_unavailable], steps: [{title: c}]}
  - {name: unavailable-again, alert_types: [ServiceUnavailable], steps: [{title: d}]}
"""


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (
            {"type": "service_unavailable", "component": "postgresql_cluster", "severity": "critical"},
            "unavailable",
        ),
        ({"alertname": "ServiceUnavailable"}, "unavailable"),  # spelling normalised; first in file wins
        ({"alert_type": "service-unavailable"}, "unavailable"),
        ({"type": "disk_full", "component": "postgresql_cluster", "severity": "critical"}, "db-critical"),
        ({"component": "PostgreSQL_Cluster", "severity": "Critical"}, "db-critical"),
        ({"component": "postgresql_cluster", "severity": "warning"}, "db-any"),
        ({"component": "postgresql_cluster"}, "db-any"),
        ({"component": "redis", "severity": "critical"}, "general"),
        ({}, "general"),
    ],
)
def test_selection_order(labels: dict[str, str], expected: str) -> None:
    """Type beats component+severity, which beats component alone, which beats the fallback."""
    assert select_runbook(labels, load_policy_text(RunbookPolicy, ORDER)).name == expected


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"type": "service_unavailable", "service": "UserManagement"}, "service-unavailable"),
        ({"component": "emqx_cluster", "severity": "critical"}, "emqx-cluster-critical"),
        ({"component": "mqtt_broker", "severity": "warning"}, "emqx-cluster"),
        ({"component": "postgresql_cluster", "severity": "emergency"}, "postgresql-cluster-critical"),
        ({"component": "postgresql_cluster", "severity": "warning"}, "postgresql-cluster"),
        ({"component": "redis", "severity": "critical"}, "redis"),
        ({"component": "kubernetes_cluster", "severity": "critical"}, "kubernetes-cluster"),
        ({"component": "dns"}, "general"),
    ],
)
def test_shipped_runbooks_cover_components(labels: dict[str, str], expected: str) -> None:
    """Each infrastructure component of DESIGN.md has its runbook; the rest get the general one."""
    assert select_runbook(labels, DEFAULT).name == expected


def test_no_fallback_is_an_error() -> None:
    """Selecting from runbooks without a fallback and no match raises a clear error."""
    policy = load_policy_text(RunbookPolicy, ORDER)
    with pytest.raises(RunbookError, match="fallback"):
        select_runbook({"component": "redis"}, [r for r in policy.runbooks if not r.fallback])


def test_seed_runbook_rendered() -> None:
    """The seed's service-unavailable runbook fills {SERVICE_NAME} and the namespace default."""
    steps = render_runbook(
        select_runbook({"type": "service_unavailable"}, DEFAULT), {"SERVICE_NAME": "UserManagement"}
    )
    assert [s.title for s in steps] == [
        "Check Pod Status",
        "Check Pod Logs",
        "Check Resource Usage",
        "Test Service Connectivity",
        "Restart Service if Necessary",
    ]
    assert steps[0].command == (
        "kubectl",
        "get",
        "pods",
        "-n",
        "services",
        "-l",
        "app=UserManagement",
        "-o",
        "wide",
    )
    assert steps[0].description == "Verify the current status of UserManagement pods"
    assert all(s.status is StepStatus.READY for s in steps)
    restart = steps[-1]
    assert restart.command == ("kubectl", "rollout", "restart", "deployment/UserManagement", "-n", "services")
    assert restart.requires_approval and not restart.automated and restart.timeout_s == 120.0
    assert steps[3].timeout_s == 30.0 and steps[3].automated


@pytest.mark.parametrize(
    "bad",
    [
        "a b",
        "x;rm -rf /",
        "$(id)",
        "`id`",
        "--all-namespaces",
        "-n",
        "a" * 64,
        "",
        "a/b",
        "x'y",
        'x"y',
        "a\nb",
        "{NODE}",
        "a&&b",
        "a|b",
        "*",
        ".hidden",
        "trailing-",
        "ünïcode",
        None,
        7,
    ],
)
def test_injection_values_rejected(bad: object) -> None:
    """Values that could split or add arguments, reach a shell or be overlong are refused, never filled."""
    with pytest.raises(PlaceholderError):
        check_value("SERVICE_NAME", bad)
    book = select_runbook({"type": "service_unavailable"}, DEFAULT)
    steps = render_runbook(book, {"SERVICE_NAME": bad})  # type: ignore[dict-item]
    for step, spec in zip(steps, book.steps, strict=True):
        assert step.status is StepStatus.UNSAFE_PLACEHOLDER
        assert not step.automated
        # The template comes back whole (its {NAMESPACE} default unfilled too), never half-filled.
        assert step.command == spec.command
        assert any("SERVICE_NAME" in p for p in step.problems)


@pytest.mark.parametrize("good", ["a", "UserManagement", "user-management.v2", "pg_0", "a" * 63, "10.0.0.1"])
def test_label_values_accepted_inside_one_argument(good: str) -> None:
    """A valid value fills exactly the argument that names it; the argument count never changes."""
    book = select_runbook({"component": "kubernetes_cluster"}, DEFAULT)
    steps = render_runbook(book, {"NODE": good})
    for step, spec in zip(steps, book.steps, strict=True):
        assert step.status is StepStatus.READY
        assert len(step.command) == len(spec.command or ())
    assert steps[1].command == ("kubectl", "describe", "node", good)


def test_missing_value_and_manual_steps() -> None:
    """A step lacking a value is marked missing_value; steps without commands are manual."""
    steps = render_runbook(select_runbook({}, DEFAULT), {})
    assert [s.status for s in steps] == [
        StepStatus.MANUAL,
        StepStatus.READY,
        StepStatus.READY,
        StepStatus.MANUAL,
    ]
    assert steps[0].problems == ("{COMPONENT}: no value given",)
    crit = render_runbook(select_runbook({"component": "redis"}, DEFAULT), {})
    assert all(s.status is StepStatus.MISSING_VALUE and not s.automated for s in crit)


def test_only_used_values_are_checked() -> None:
    """A bad value for a placeholder a step does not use does not spoil that step."""
    steps = render_runbook(
        select_runbook({"component": "kubernetes_cluster"}, DEFAULT), {"SERVICE_NAME": "a b"}
    )
    assert steps[0].status is StepStatus.READY and steps[0].problems == ()


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "runbooks: [{name: g, fallback: true, steps: [{title: t, command: 'kubectl get pods -n x'}]}]",
            "runbooks.0.steps.0.command",
        ),
        (
            "runbooks: [{name: g, fallback: true, steps: [{title: t, command: []}]}]",
            "runbooks.0.steps.0.command",
        ),
        (
            "runbooks: [{name: g, fallback: true, steps: [{title: t, command: [ls, '{bad name}']}]}]",
            "runbooks.0.steps.0.command",
        ),
        (
            "runbooks: [{name: g, fallback: true, defaults: {NAMESPACE: 'a b'}, steps: [{title: t}]}]",
            "runbooks.0.defaults",
        ),
        (
            "runbooks: [{name: g, fallback: true, steps: [{title: t, timeout: soon}]}]",
            "runbooks.0.steps.0.timeout",
        ),
        ("runbooks: [{name: g, fallback: true, steps: [{title: t, sudo: true}]}]", "runbooks.0.steps.0.sudo"),
        ("runbooks: [{name: g, severities: [critical], fallback: true, steps: [{title: t}]}]", "runbooks.0"),
        ("runbooks: [{name: g, steps: [{title: t}]}]", "fallback"),
        (
            "runbooks: [{name: g, fallback: true, steps: [{title: t}]}, {name: g, steps: [{title: u}]}]",
            "unique",
        ),
    ],
)
def test_bad_runbook_file(text: str, where: str) -> None:
    """Shell-string commands, bad placeholders, unsafe defaults and unknown keys fail naming the key."""
    with pytest.raises(PolicyConfigError) as err:
        load_policy_text(RunbookPolicy, text, "runbooks.yaml")
    assert where in str(err.value) and "runbooks.yaml" in str(err.value)
