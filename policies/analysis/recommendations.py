"""Performance recommendations: the seed's ``PerformanceAnalyzer`` as pure rules over summaries.

``recommend(summaries, patterns, databases, config)`` looks at per-service, per-topic and
per-database summaries of a window (computed elsewhere, e.g. by the ``recommend`` driver over the
store) and returns ``Recommendation``s sorted by impact: priority first, then how far the observed
value exceeds its threshold. Thresholds live in ``recommendations.yaml``.

Rules (seed values in brackets): p95 latency [> 5 s] → performance/high; error rate [> 5 %] →
reliability/critical; average concurrency [> instances × 10] → scaling/medium with an optimal
instance count; CPU/memory high → scale up, low → scale down; hot topics, chatty clients and
oversized payloads; database replication lag, connections near the maximum, slow queries.
Latency and error-rate rules need a minimum number of calls, so a handful of calls cannot raise them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from policies.analysis.recommendation_settings import RecommendationPolicy, ResourceRules, ServiceRules
from policies.analysis.summaries import DatabaseSummary, MessagePatternSummary, ServiceSummary


class Category(StrEnum):
    """What kind of improvement a recommendation is (the seed's ``Type``)."""

    PERFORMANCE = "performance"
    RELIABILITY = "reliability"
    SCALING = "scaling"
    COST = "cost"


class Priority(StrEnum):
    """How urgent a recommendation is."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Priority.LOW: 1, Priority.MEDIUM: 2, Priority.HIGH: 3, Priority.CRITICAL: 4}


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    """One suggested improvement, with the numbers that triggered it."""

    rule: str
    category: Category
    priority: Priority
    target: str
    title: str
    description: str
    evidence: Mapping[str, Any]
    suggestions: tuple[str, ...]
    impact: float
    optimal_instances: int | None = None

    def to_wire(self) -> dict[str, Any]:
        """camelCase, as reports and the store carry it."""
        out: dict[str, Any] = {
            "rule": self.rule,
            "type": self.category.value,
            "priority": self.priority.value,
            "target": self.target,
            "title": self.title,
            "description": self.description,
            "evidence": dict(self.evidence),
            "suggestions": list(self.suggestions),
            "impact": self.impact,
        }
        if self.optimal_instances is not None:
            out["optimalInstances"] = self.optimal_instances
        return out


def impact_score(priority: Priority, excess: float) -> float:
    """Priority rank plus a fraction in [0, 1) growing with the relative excess over the threshold,
    so any higher priority outranks any lower one and, within one, the larger excess comes first."""
    # Capped so the rounded fraction stays below 1; NaN (no meaningful excess) counts as none.
    e = 0.0 if math.isnan(excess) else max(0.0, min(excess, _MAX_EXCESS))
    return round(_RANK[priority] + e / (1.0 + e), 6)


_MAX_EXCESS = 1e5


def _excess(observed: float, threshold: float) -> float:
    return observed / threshold - 1.0 if threshold > 0 else _MAX_EXCESS


@dataclass(frozen=True)
class _Rule:
    category: Category
    priority: Priority
    title: str
    suggestions: tuple[str, ...]


# What each rule recommends; the seed's texts where it has them.
_RULES = {
    "high_latency": _Rule(Category.PERFORMANCE, Priority.HIGH, "High response time", (
        "Review business logic for optimization opportunities", "Check database query performance",
        "Consider caching frequently accessed data", "Evaluate if function can be split into smaller operations",
    )),
    "high_error_rate": _Rule(Category.RELIABILITY, Priority.CRITICAL, "High error rate", (
        "Investigate error logs for common failure patterns", "Improve input validation to prevent errors",
        "Add retry logic for transient failures", "Review error handling in business logic",
    )),
    "high_concurrency": _Rule(Category.SCALING, Priority.MEDIUM, "High concurrency", (
        "Implement horizontal pod autoscaling", "Review resource requests and limits",
        "Monitor CPU and memory usage during peak loads",
    )),
    "high_utilisation": _Rule(Category.SCALING, Priority.HIGH, "Scale up: resources saturated", (
        "Raise resource requests/limits if pods are throttled", "Profile the hottest functions",
    )),
    "low_utilisation": _Rule(Category.COST, Priority.LOW, "Scale down: resources idle", ("Lower resource requests",)),
    "oversized_payloads": _Rule(Category.PERFORMANCE, Priority.MEDIUM, "Oversized payloads", (
        "Page large results", "Send references (object storage URLs) instead of blobs",
        "Compress payloads or trim unused fields",
    )),
    "hot_topic": _Rule(Category.SCALING, Priority.MEDIUM, "Hot topic", (
        "Spread subscribers with shared subscriptions ($share/group/topic)",
        "Split the topic by key so load spreads", "Batch small messages",
    )),
    "chatty_client": _Rule(Category.PERFORMANCE, Priority.MEDIUM, "Chatty client", (
        "Batch or debounce updates in the client", "Apply a per-client rate limit",
        "Check for a retry loop or a polling client",
    )),
    "oversized_messages": _Rule(Category.PERFORMANCE, Priority.MEDIUM, "Oversized messages", (
        "Send references instead of blobs", "Compress payloads", "Split large updates",
    )),
    "replication_lag": _Rule(Category.RELIABILITY, Priority.HIGH, "Replication lag", (
        "Check replica I/O and network", "Look for long transactions on the primary",
        "Avoid reading fresh writes from replicas",
    )),
    "connections_near_max": _Rule(Category.RELIABILITY, Priority.HIGH, "Connections near maximum", (
        "Put a connection pooler (PgBouncer) in front", "Lower per-instance pool sizes",
        "Find idle-in-transaction sessions",
    )),
    "slow_queries": _Rule(Category.PERFORMANCE, Priority.MEDIUM, "Slow queries", (
        "Review the slowest statements with EXPLAIN ANALYZE", "Add missing indexes", "Cache hot reads",
    )),
}  # fmt: skip


def _rec(
    rule: str,
    target: str,
    description: str,
    evidence: Mapping[str, Any],
    excess: float,
    optimal: int | None = None,
) -> Recommendation:
    meta = _RULES[rule]
    first = () if optimal is None else (f"Scale to {optimal} instances",)
    return Recommendation(
        rule=rule,
        category=meta.category,
        priority=meta.priority,
        target=target,
        title=meta.title,
        description=description,
        evidence=evidence,
        suggestions=first + meta.suggestions,
        impact=impact_score(meta.priority, excess),
        optimal_instances=optimal,
    )


def optimal_instances(peak_concurrency: float, rules: ServiceRules) -> int:
    """Instances for the peak with headroom: ceil(peak × (1 + headroom) / per-instance concurrency)."""
    peak = peak_concurrency * (1 + rules.scaling_headroom / 100)
    return max(1, math.ceil(peak / rules.concurrency_per_instance))


def service_rules(s: ServiceSummary, cfg: RecommendationPolicy) -> list[Recommendation]:
    """Latency, error rate, concurrency, utilisation and payload rules for one service."""
    r = cfg.service
    out: list[Recommendation] = []
    evidence: dict[str, Any]
    enough = s.calls >= r.min_calls
    limit_ms = r.latency_p95 * 1000
    if enough and s.p95_ms > limit_ms:
        text = f"Service {s.service} has P95 response time of {s.p95_ms / 1000:.2f}s (threshold {r.latency_p95:g}s)"
        evidence = {
            "p50Ms": s.p50_ms,
            "p95Ms": s.p95_ms,
            "p99Ms": s.p99_ms,
            "thresholdMs": limit_ms,
            "calls": s.calls,
        }
        out.append(_rec("high_latency", s.service, text, evidence, _excess(s.p95_ms, limit_ms)))
    if enough and s.error_rate * 100 > r.error_rate:
        text = f"Service {s.service} has {s.error_rate:.2%} error rate (threshold {r.error_rate:g}%)"
        evidence = {"errorRate": s.error_rate, "thresholdPercent": r.error_rate, "calls": s.calls}
        out.append(
            _rec("high_error_rate", s.service, text, evidence, _excess(s.error_rate * 100, r.error_rate))
        )
    capacity = max(s.instances, 1) * r.concurrency_per_instance
    concurrency_high = s.avg_concurrency > capacity
    if concurrency_high:
        want = max(s.instances + 1, optimal_instances(s.peak_concurrency, r))
        text = (
            f"Service {s.service} averaging {s.avg_concurrency:g} concurrent executions with "
            f"{s.instances} instances (capacity {capacity:g})"
        )
        evidence = {
            "avgConcurrency": s.avg_concurrency,
            "peakConcurrency": s.peak_concurrency,
            "instances": s.instances,
            "perInstance": r.concurrency_per_instance,
        }
        out.append(
            _rec("high_concurrency", s.service, text, evidence, _excess(s.avg_concurrency, capacity), want)
        )
    out += _resource_rules(s, cfg.resources, concurrency_high)
    if s.payload_bytes_p95 is not None and s.payload_bytes_p95 > r.oversized_payload_bytes:
        text = f"Service {s.service} exchanges payloads of {s.payload_bytes_p95} bytes at P95"
        evidence = {"payloadBytesP95": s.payload_bytes_p95, "thresholdBytes": r.oversized_payload_bytes}
        excess = _excess(s.payload_bytes_p95, r.oversized_payload_bytes)
        out.append(_rec("oversized_payloads", s.service, text, evidence, excess))
    return out


def _resource_rules(s: ServiceSummary, res: ResourceRules, concurrency_high: bool) -> list[Recommendation]:
    cpu = None if s.cpu_utilisation is None else s.cpu_utilisation * 100
    mem = None if s.mem_utilisation is None else s.mem_utilisation * 100
    target = res.target_utilisation
    evidence = {"cpuPercent": cpu, "memPercent": mem, "instances": s.instances, "targetPercent": target}
    levels = ((cpu, res.cpu_high, "CPU"), (mem, res.mem_high, "memory"))
    over = [(v / t, v, name) for v, t, name in levels if v is not None and v > t]
    if over:
        ratio, value, name = max(over)
        want = max(s.instances + 1, math.ceil(s.instances * value / target))
        text = f"Service {s.service} runs at {value:.0f}% {name} across {s.instances} instances"
        return [_rec("high_utilisation", s.service, text, evidence, ratio - 1.0, want)]
    # An I/O-bound service can be busy (high concurrency) at low CPU: never tell it to shrink.
    if cpu is None or concurrency_high or s.instances <= res.min_instances:
        return []
    if cpu < res.cpu_low and (mem is None or mem < res.mem_low):
        want = max(res.min_instances, math.ceil(s.instances * max(cpu, mem or 0.0) / target))
        if want < s.instances:
            text = f"Service {s.service} uses {cpu:.0f}% CPU across {s.instances} instances"
            return [
                _rec("low_utilisation", s.service, text, evidence, _excess(res.cpu_low, max(cpu, 0.1)), want)
            ]
    return []


def message_rules(m: MessagePatternSummary, cfg: RecommendationPolicy) -> list[Recommendation]:
    """Hot topics, chatty clients and oversized payloads on one topic."""
    r = cfg.messages
    out: list[Recommendation] = []
    evidence: dict[str, Any]
    if m.window_s > 0:
        rate = m.messages / m.window_s
        if rate > r.hot_topic_rate:
            text = f"Topic {m.topic} carries {rate:.0f} msg/s (threshold {r.hot_topic_rate:g})"
            evidence = {"messagesPerSecond": rate, "messages": m.messages, "windowS": m.window_s}
            out.append(_rec("hot_topic", m.topic, text, evidence, _excess(rate, r.hot_topic_rate)))
        client_rate = m.top_publisher_messages / m.window_s
        if m.top_publisher and client_rate > r.chatty_client_rate:
            text = f"Client {m.top_publisher} publishes {client_rate:.0f} msg/s to {m.topic}"
            evidence = {"messagesPerSecond": client_rate, "topic": m.topic, "threshold": r.chatty_client_rate}
            excess = _excess(client_rate, r.chatty_client_rate)
            out.append(_rec("chatty_client", m.top_publisher, text, evidence, excess))
    if m.payload_bytes_p95 is not None and m.payload_bytes_p95 > r.oversized_payload_bytes:
        text = f"Messages on {m.topic} are {m.payload_bytes_p95} bytes at P95"
        evidence = {"payloadBytesP95": m.payload_bytes_p95, "thresholdBytes": r.oversized_payload_bytes}
        excess = _excess(m.payload_bytes_p95, r.oversized_payload_bytes)
        out.append(_rec("oversized_messages", m.topic, text, evidence, excess))
    return out


def database_rules(d: DatabaseSummary, cfg: RecommendationPolicy) -> list[Recommendation]:
    """Replication lag, connections near the maximum and slow queries on one database."""
    r = cfg.database
    out: list[Recommendation] = []
    evidence: dict[str, Any]
    if d.replication_lag_s is not None and d.replication_lag_s > r.replication_lag:
        text = f"{d.kind} {d.name} replicas lag {d.replication_lag_s:.1f}s (threshold {r.replication_lag:g}s)"
        evidence = {"replicationLagS": d.replication_lag_s, "thresholdS": r.replication_lag}
        out.append(
            _rec("replication_lag", d.name, text, evidence, _excess(d.replication_lag_s, r.replication_lag))
        )
    if d.connections is not None and d.max_connections:
        used = d.connections / d.max_connections * 100
        if used > r.connections_high:
            text = f"{d.kind} {d.name} uses {d.connections} of {d.max_connections} connections ({used:.0f}%)"
            evidence = {
                "connections": d.connections,
                "maxConnections": d.max_connections,
                "usedPercent": used,
            }
            out.append(
                _rec("connections_near_max", d.name, text, evidence, _excess(used, r.connections_high))
            )
    if d.slow_queries is not None and d.window_s > 0:
        per_min = d.slow_queries / (d.window_s / 60)
        if per_min > r.slow_queries_per_minute:
            text = f"{d.kind} {d.name} logs {per_min:.1f} slow queries per minute"
            evidence = {"slowQueriesPerMinute": per_min, "slowQueries": d.slow_queries, "windowS": d.window_s}
            out.append(
                _rec("slow_queries", d.name, text, evidence, _excess(per_min, r.slow_queries_per_minute))
            )
    return out


def recommend(
    summaries: Iterable[ServiceSummary],
    patterns: Iterable[MessagePatternSummary],
    databases: Iterable[DatabaseSummary],
    config: RecommendationPolicy,
) -> list[Recommendation]:
    """All recommendations, highest impact first (ties: target, then rule, for a stable order)."""
    out: list[Recommendation] = []
    for s in summaries:
        out += service_rules(s, config)
    for m in patterns:
        out += message_rules(m, config)
    for d in databases:
        out += database_rules(d, config)
    out.sort(key=lambda r: (-r.impact, r.target, r.rule))
    return out


__all__ = [
    "Category",
    "Priority",
    "Recommendation",
    "database_rules",
    "impact_score",
    "message_rules",
    "optimal_instances",
    "recommend",
    "service_rules",
]
