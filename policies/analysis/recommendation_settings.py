"""The recommendation rules' thresholds: ``policies/recommendations.yaml`` (seed values as defaults)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from policies.common.config import Duration, Percent, PolicyModel, load_policy

POLICY_FILE = "recommendations.yaml"


class ServiceRules(PolicyModel):
    """Thresholds for service-function summaries."""

    latency_p95: Duration = 5.0
    error_rate: Percent = 5.0
    min_calls: int = Field(default=100, ge=0, description="latency/error rules need this many calls")
    concurrency_per_instance: float = Field(default=10.0, gt=0)
    scaling_headroom: Percent = 20.0
    oversized_payload_bytes: int = Field(default=262_144, gt=0)


class ResourceRules(PolicyModel):
    """CPU/memory utilisation thresholds (percent of requests/limits)."""

    cpu_high: Percent = 80.0
    mem_high: Percent = 85.0
    cpu_low: Percent = 20.0
    mem_low: Percent = 30.0
    target_utilisation: Percent = Field(default=60.0, gt=0)
    min_instances: int = Field(default=1, ge=1)


class MessageRules(PolicyModel):
    """Thresholds for topic and client traffic."""

    hot_topic_rate: float = Field(default=1000.0, gt=0, description="messages per second on one topic")
    chatty_client_rate: float = Field(default=50.0, gt=0, description="messages per second from one client")
    oversized_payload_bytes: int = Field(default=262_144, gt=0)


class DatabaseRules(PolicyModel):
    """Thresholds for database summaries."""

    replication_lag: Duration = 10.0
    connections_high: Percent = 80.0
    slow_queries_per_minute: float = Field(default=10.0, gt=0)


class RecommendationPolicy(PolicyModel):
    """The whole of ``recommendations.yaml``."""

    service: ServiceRules = ServiceRules()
    resources: ResourceRules = ResourceRules()
    messages: MessageRules = MessageRules()
    database: DatabaseRules = DatabaseRules()


def load_recommendation_policy(overrides_dir: Path | str | None = None) -> RecommendationPolicy:
    """Load ``policies/recommendations.yaml`` with the optional override directory merged over it."""
    return load_policy(RecommendationPolicy, POLICY_FILE, overrides_dir)


__all__ = [
    "DatabaseRules",
    "MessageRules",
    "RecommendationPolicy",
    "ResourceRules",
    "ServiceRules",
    "load_recommendation_policy",
]
