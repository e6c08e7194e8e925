"""Cascades: the dependency graph (configured and learned edges) and the preemptive-open plan."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.breaker.cascade import (
    DependencyGraph,
    DependencyPolicy,
    load_dependency_policy,
    plan_cascade,
)
from policies.common.config import PolicyConfigError, load_policy_text
from policies.observation.config import load_observation_policy

T0 = 1_734_258_600.0

# Orders → Users; Payments → Orders; Shipping → Orders; Reports → Payments; Auth is a leaf.
SHOP = """
dependencies:
  OrderManagement: [UserManagement]
  Payments: [OrderManagement]
  Shipping: [OrderManagement]
  Reports: [Payments]
learn_edges: true
min_observations: 3
learned_ttl: 10m
cascade_depth: 2
max_preemptive_open_percent: 50
"""
SERVICES = [
    "UserManagement",
    "OrderManagement",
    "Payments",
    "Shipping",
    "Reports",
    "Auth",
    "Search",
    "Inventory",
]


def policy(text: str = SHOP, **over: object) -> DependencyPolicy:
    base = load_policy_text(DependencyPolicy, text)
    return base.model_copy(update=over)


@pytest.mark.parametrize(
    ("service", "depth", "expected"),
    [
        ("UserManagement", 1, ("OrderManagement",)),
        ("UserManagement", 2, ("OrderManagement", "Payments", "Shipping")),
        ("UserManagement", 3, ("OrderManagement", "Payments", "Shipping", "Reports")),
        ("Payments", 5, ("Reports",)),
        ("Auth", 3, ()),
    ],
)
def test_dependents_transitive(service: str, depth: int, expected: tuple[str, ...]) -> None:
    """Dependents are found transitively up to the depth, nearest first, then by name."""
    assert DependencyGraph(config=policy()).dependents_of(service, depth, T0) == expected


def test_learned_edge_needs_observations_and_expires() -> None:
    """A learned edge counts after min_observations sightings and is forgotten after learned_ttl."""
    g = DependencyGraph(config=policy())
    g.observe_edge("Search", "Inventory", T0)
    g.observe_edge("Search", "Inventory", T0 + 1)
    assert g.dependents_of("Inventory", 1, T0 + 1) == ()
    g.observe_edges({("Search", "Inventory"): 1}, T0 + 2)
    assert g.dependents_of("Inventory", 1, T0 + 2) == ("Search",)
    assert g.dependents_of("Inventory", 1, T0 + 2 + 600) == ("Search",)
    assert g.dependents_of("Inventory", 1, T0 + 2 + 601) == ()
    g.observe_edge("Search", "Inventory", T0 + 700)  # after expiry counting starts again
    assert g.dependents_of("Inventory", 1, T0 + 700) == ()


def test_learned_edges_merge_with_configured() -> None:
    """Learned edges add to the configured graph; self-calls are ignored."""
    g = DependencyGraph(config=policy())
    g.observe_edge("Auth", "UserManagement", T0, n=5)
    g.observe_edge("Auth", "Auth", T0, n=5)
    assert g.dependencies_of("Auth", T0) == frozenset({"UserManagement"})
    assert g.dependents_of("UserManagement", 1, T0) == ("Auth", "OrderManagement")


def test_learning_disabled() -> None:
    """With learn_edges off only configured edges exist."""
    g = DependencyGraph(config=policy(learn_edges=False))
    g.observe_edge("Auth", "UserManagement", T0, n=50)
    assert g.dependents_of("UserManagement", 1, T0) == ("OrderManagement",)


def test_learned_edges_are_bounded() -> None:
    """Past max_learned_edges the least recently seen edge is dropped and counted."""
    g = DependencyGraph(config=policy(max_learned_edges=2, min_observations=1))
    g.observe_edge("A", "X", T0)
    g.observe_edge("B", "X", T0 + 1)
    g.observe_edge("C", "X", T0 + 2)
    assert g.dependents_of("X", 1, T0 + 2) == ("B", "C")
    assert g.dropped_edges == 1


def test_plan_opens_dependents_with_seed_message() -> None:
    """A failure opens its dependents' breakers and builds the cascading_failure_prevented message."""
    cfg = policy(cascade_depth=1)
    plan = plan_cascade(
        DependencyGraph(config=cfg),
        "UserManagement",
        SERVICES,
        {"UserManagement"},
        T0,
        cfg,
        cluster_id="production-us-east",
    )
    assert [(o.service, o.reason) for o in plan.preemptive_opens] == [
        ("OrderManagement", "Dependency UserManagement is unavailable")
    ]
    assert plan.message == {
        "type": "cascading_failure_prevented",
        "clusterId": "production-us-east",
        "originService": "UserManagement",
        "affectedServices": ["OrderManagement"],
        "action": "circuits_opened_preemptively",
        "heldBack": [],
        "timestamp": "2024-12-15T10:30:00Z",
    }


def test_plan_transitive_reason_names_path() -> None:
    """A second-hop dependent's reason says which dependency it goes through."""
    cfg = policy()
    plan = plan_cascade(DependencyGraph(config=cfg), "UserManagement", SERVICES, set(), T0, cfg)
    reasons = {o.service: o.reason for o in plan.preemptive_opens}
    assert reasons["Payments"] == "Dependency UserManagement is unavailable (via OrderManagement)"


@pytest.mark.parametrize(
    ("percent", "open_now", "opened", "held"),
    [
        (50, {"UserManagement"}, ["OrderManagement", "Payments", "Shipping"], []),  # 8 known: 4 may be open
        (50, {"UserManagement", "Auth"}, ["OrderManagement", "Payments"], ["Shipping"]),
        (25, {"UserManagement"}, ["OrderManagement"], ["Payments", "Shipping"]),
        (10, set(), [], ["OrderManagement", "Payments", "Shipping"]),
        (50, {"UserManagement", "OrderManagement"}, ["Payments", "Shipping"], []),  # open ones are skipped
    ],
)
def test_guard_holds_back(percent: float, open_now: set[str], opened: list[str], held: list[str]) -> None:
    """No more than max_preemptive_open_percent of known services end up open; the rest is reported."""
    cfg = policy(max_preemptive_open_percent=percent)
    plan = plan_cascade(DependencyGraph(config=cfg), "UserManagement", SERVICES, open_now, T0, cfg)
    assert [o.service for o in plan.preemptive_opens] == opened
    assert list(plan.held_back) == held
    assert plan.message is not None and plan.message["heldBack"] == held


def test_plan_without_dependents_has_no_message() -> None:
    """A leaf service's failure produces an empty plan and no message."""
    cfg = policy()
    plan = plan_cascade(DependencyGraph(config=cfg), "Auth", SERVICES, {"Auth"}, T0, cfg)
    assert (plan.preemptive_opens, plan.held_back, plan.message) == ((), (), None)


def test_unknown_dependents_are_skipped() -> None:
    """A configured dependent that is not a known service has no breaker and is not planned."""
    cfg = policy()
    plan = plan_cascade(
        DependencyGraph(config=cfg), "UserManagement", ["UserManagement", "OrderManagement"], set(), T0, cfg
    )
    assert [o.service for o in plan.preemptive_opens] == ["OrderManagement"]


@settings(max_examples=80, deadline=None)
@given(
    edges=st.lists(st.tuples(st.sampled_from(SERVICES), st.sampled_from(SERVICES)), max_size=25),
    open_now=st.sets(st.sampled_from(SERVICES)),
    percent=st.integers(0, 100),
    failed=st.sampled_from(SERVICES),
)
def test_guard_never_exceeded(
    edges: list[tuple[str, str]], open_now: set[str], percent: int, failed: str
) -> None:
    """Whatever the graph, opens never push the open share past the limit, and none is lost."""
    deps: dict[str, list[str]] = {}
    for a, b in edges:
        deps.setdefault(a, []).append(b)
    cfg = DependencyPolicy(dependencies=deps, cascade_depth=3, max_preemptive_open_percent=percent)
    g = DependencyGraph(config=cfg)
    plan = plan_cascade(g, failed, SERVICES, open_now, T0, cfg)
    opened = {o.service for o in plan.preemptive_opens}
    assert not opened & open_now and failed not in opened
    limit = int(len(SERVICES) * percent / 100)
    assert len(opened) <= max(0, limit - len(open_now))
    candidates = set(g.dependents_of(failed, 3, T0)) - open_now
    assert opened | set(plan.held_back) == candidates


def test_default_files_load(tmp_path: Path) -> None:
    """Shipped dependencies.yaml and observation.yaml load; a per-service call timeout overrides."""
    d = load_dependency_policy()
    assert (d.min_observations, d.max_preemptive_open_percent, d.cascade_depth) == (3, 50.0, 2)
    (tmp_path / "observation.yaml").write_text("services:\n  Reports:\n    call_timeout: 2m\n")
    o = load_observation_policy(tmp_path)
    assert (o.call_timeout_for("Reports"), o.call_timeout_for("Auth"), o.tick) == (120.0, 30.0, 0.25)
    assert (o.pending_cap, o.max_payload_bytes) == (100_000, 262_144)


def test_bad_dependencies_file() -> None:
    """A list where a mapping belongs is reported with its key."""
    with pytest.raises(PolicyConfigError, match=r"dependencies\.Orders"):
        load_policy_text(DependencyPolicy, "dependencies:\n  Orders: Users\n")
