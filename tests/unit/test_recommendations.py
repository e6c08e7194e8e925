"""Performance recommendations (policies/analysis/recommendations.py over policies/analysis/summaries.py,
thresholds in recommendation_settings.py and recommendations.yaml)."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from typing import Any

import pytest

from policies.analysis.recommendation_settings import RecommendationPolicy, load_recommendation_policy
from policies.analysis.recommendations import Category, Priority, impact_score, optimal_instances, recommend
from policies.analysis.summaries import DatabaseSummary, MessagePatternSummary, ServiceSummary
from policies.common.config import PolicyConfigError, load_policy_text

CFG = load_recommendation_policy()

HEALTHY = ServiceSummary(
    service="Orders",
    window_s=3600,
    calls=10_000,
    p50_ms=40,
    p95_ms=200,
    p99_ms=400,
    error_rate=0.001,
    avg_concurrency=5,
    peak_concurrency=12,
    instances=2,
    cpu_utilisation=0.5,
    mem_utilisation=0.5,
    payload_bytes_p95=2048,
)


def rules_for(**changes: Any) -> list[tuple[str, Category, Priority]]:
    recs = recommend([replace(HEALTHY, **changes)], [], [], CFG)
    return [(r.rule, r.category, r.priority) for r in recs]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, []),
        ({"p95_ms": 5000}, []),  # at the threshold: not above it
        ({"p95_ms": 5001}, [("high_latency", Category.PERFORMANCE, Priority.HIGH)]),
        ({"p95_ms": 9000, "calls": 99}, []),  # too few calls to judge
        ({"error_rate": 0.05}, []),
        ({"error_rate": 0.051}, [("high_error_rate", Category.RELIABILITY, Priority.CRITICAL)]),
        ({"avg_concurrency": 20}, []),  # 2 instances x 10
        (
            {"avg_concurrency": 21, "peak_concurrency": 40},
            [("high_concurrency", Category.SCALING, Priority.MEDIUM)],
        ),
        ({"cpu_utilisation": 0.81}, [("high_utilisation", Category.SCALING, Priority.HIGH)]),
        ({"mem_utilisation": 0.9}, [("high_utilisation", Category.SCALING, Priority.HIGH)]),
        (
            {"cpu_utilisation": 0.1, "mem_utilisation": 0.1, "instances": 4},
            [("low_utilisation", Category.COST, Priority.LOW)],
        ),
        ({"cpu_utilisation": 0.1, "mem_utilisation": 0.5, "instances": 4}, []),  # memory still used
        ({"cpu_utilisation": 0.1, "mem_utilisation": 0.1, "instances": 1}, []),  # already at the minimum
        (
            {"cpu_utilisation": 0.05, "mem_utilisation": 0.1, "avg_concurrency": 30, "peak_concurrency": 30},
            [("high_concurrency", Category.SCALING, Priority.MEDIUM)],
        ),  # I/O bound: no scale-down advice
        ({"cpu_utilisation": None, "mem_utilisation": None}, []),
        ({"payload_bytes_p95": 300_000}, [("oversized_payloads", Category.PERFORMANCE, Priority.MEDIUM)]),
    ],
)
def test_service_rules(changes: dict[str, Any], expected: list[tuple[str, Category, Priority]]) -> None:
    """Each seed rule fires strictly above its threshold, with the seed's category and priority."""
    assert rules_for(**changes) == expected


@pytest.mark.parametrize(
    ("peak", "instances", "expected"),
    [(25, 2, 3), (41, 2, 5), (100, 3, 12), (0, 1, 2)],
)
def test_optimal_instance_count(peak: float, instances: int, expected: int) -> None:
    """Optimal instances = ceil(peak x 1.2 / 10), and always more than there are now."""
    recs = recommend(
        [replace(HEALTHY, avg_concurrency=instances * 10 + 1, peak_concurrency=peak, instances=instances)],
        [],
        [],
        CFG,
    )
    [rec] = [r for r in recs if r.rule == "high_concurrency"]
    assert rec.optimal_instances == expected
    assert rec.suggestions[0] == f"Scale to {expected} instances"


def test_optimal_instances_formula() -> None:
    """The bare formula follows the configured headroom and per-instance concurrency."""
    assert optimal_instances(100, CFG.service) == 12
    assert (
        optimal_instances(
            100,
            load_policy_text(
                RecommendationPolicy, "service: {scaling_headroom: 0, concurrency_per_instance: 25}"
            ).service,
        )
        == 4
    )


def test_scale_up_and_down_counts() -> None:
    """Utilisation rules suggest the count that brings the busiest resource to the target (60 %)."""
    [up] = recommend([replace(HEALTHY, cpu_utilisation=0.9, instances=4)], [], [], CFG)
    assert up.optimal_instances == 6 and up.evidence["cpuPercent"] == 90
    [down] = recommend(
        [replace(HEALTHY, cpu_utilisation=0.1, mem_utilisation=0.15, instances=8)], [], [], CFG
    )
    assert down.optimal_instances == 2


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (MessagePatternSummary(topic="ui/change/x", window_s=60, messages=60_000), []),
        (MessagePatternSummary(topic="ui/change/x", window_s=60, messages=60_001), ["hot_topic"]),
        (
            MessagePatternSummary(
                topic="service/Orders",
                window_s=60,
                messages=3001,
                top_publisher="client-7",
                top_publisher_messages=3001,
            ),
            ["chatty_client"],
        ),
        (
            MessagePatternSummary(
                topic="service/Orders", window_s=60, messages=10, payload_bytes_p95=1_000_000
            ),
            ["oversized_messages"],
        ),
        (
            MessagePatternSummary(
                topic="t", window_s=0, messages=10**9, top_publisher="c", top_publisher_messages=10**9
            ),
            [],
        ),
    ],
)
def test_message_rules(pattern: MessagePatternSummary, expected: list[str]) -> None:
    """Hot topics, chatty clients and oversized messages are flagged above their thresholds only."""
    assert [r.rule for r in recommend([], [pattern], [], CFG)] == expected


def test_chatty_client_targets_the_client() -> None:
    """A chatty-client recommendation names the client and keeps the topic as evidence."""
    [rec] = recommend(
        [],
        [
            MessagePatternSummary(
                topic="service/Orders",
                window_s=10,
                messages=600,
                top_publisher="client-7",
                top_publisher_messages=600,
            )
        ],
        [],
        CFG,
    )
    assert rec.target == "client-7" and rec.evidence["topic"] == "service/Orders"
    assert rec.evidence["messagesPerSecond"] == 60


@pytest.mark.parametrize(
    ("db", "expected"),
    [
        (
            DatabaseSummary(
                name="pg",
                kind="postgresql",
                window_s=600,
                replication_lag_s=2,
                connections=50,
                max_connections=100,
                slow_queries=5,
            ),
            [],
        ),
        (
            DatabaseSummary(name="pg", kind="postgresql", window_s=600, replication_lag_s=30),
            ["replication_lag"],
        ),
        (
            DatabaseSummary(name="pg", kind="postgresql", window_s=600, connections=81, max_connections=100),
            ["connections_near_max"],
        ),
        (DatabaseSummary(name="pg", kind="postgresql", window_s=600, connections=81, max_connections=0), []),
        (DatabaseSummary(name="pg", kind="postgresql", window_s=600, slow_queries=101), ["slow_queries"]),
        (DatabaseSummary(name="redis", kind="redis", window_s=60), []),
    ],
)
def test_database_rules(db: DatabaseSummary, expected: list[str]) -> None:
    """Replication lag, connections near the maximum and slow queries are flagged; unknowns are skipped."""
    assert [r.rule for r in recommend([], [], [db], CFG)] == expected


def test_ordering_priority_then_excess() -> None:
    """Critical before high before medium before low; within a priority the larger excess first."""
    services = [
        replace(HEALTHY, service="SlowA", p95_ms=6000),
        replace(HEALTHY, service="SlowB", p95_ms=20000),
        replace(HEALTHY, service="Errors", error_rate=0.06),
        replace(HEALTHY, service="Idle", cpu_utilisation=0.05, mem_utilisation=0.05, instances=5),
        replace(HEALTHY, service="Busy", avg_concurrency=100, peak_concurrency=100),
    ]
    dbs = [DatabaseSummary(name="pg", kind="postgresql", window_s=60, replication_lag_s=11)]
    recs = recommend(services, [], dbs, CFG)
    assert [(r.target, r.rule) for r in recs] == [
        ("Errors", "high_error_rate"),
        ("SlowB", "high_latency"),
        ("SlowA", "high_latency"),
        ("pg", "replication_lag"),
        ("Busy", "high_concurrency"),
        ("Idle", "low_utilisation"),
    ]
    assert all(a.impact >= b.impact for a, b in pairwise(recs))


@pytest.mark.parametrize("excess", [0.0, 0.5, 10.0, 1e12, float("inf"), float("nan")])
def test_impact_stays_within_priority_band(excess: float) -> None:
    """Any excess keeps the score inside its priority band, so priority always dominates."""
    for p in Priority:
        assert p.rank <= impact_score(p, excess) < p.rank + 1


def test_wire_form() -> None:
    """Recommendations serialize with camelCase evidence and the seed's type field."""
    [rec] = recommend([replace(HEALTHY, avg_concurrency=25, peak_concurrency=25)], [], [], CFG)
    wire = rec.to_wire()
    assert wire["type"] == "scaling" and wire["priority"] == "medium" and wire["optimalInstances"] == 3
    assert wire["evidence"]["avgConcurrency"] == 25


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("service: {latency_p95: fast}", "service.latency_p95"),
        ("service: {error_rate: 150}", "service.error_rate"),
        ("resources: {cpu_hi: 80}", "resources.cpu_hi"),
        ("database: {slow_queries_per_minute: 0}", "database.slow_queries_per_minute"),
    ],
)
def test_bad_file_names_key(text: str, where: str) -> None:
    """A bad threshold is reported with its key path."""
    with pytest.raises(PolicyConfigError) as err:
        load_policy_text(RecommendationPolicy, text, "recommendations.yaml")
    assert where in str(err.value)
