"""The ``thresholds`` section of ``policies/infrastructure.yaml``: one model per component whose
probe reads numbers from it. A component without a field here (a newly registered probe) keeps
its section as a mapping, read with ``InfrastructurePolicy.thresholds_for`` and validated by the
probe itself."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from policies.common.config import Duration, Percent, PolicyModel


class BrokerThresholds(PolicyModel):
    round_trip_p95: Duration = 0.1
    latency_window: int = Field(default=50, ge=1)
    dropped_per_check: int = Field(default=1, ge=1)


class EmqxThresholds(PolicyModel):
    node_memory: Percent = 90.0
    dropped_per_check: int = Field(default=1000, ge=1)


class PostgresThresholds(PolicyModel):
    replication_lag: Duration = 30.0
    connections: Percent = 80.0
    long_transaction: Duration = 300.0


class MongoThresholds(PolicyModel):
    replication_lag: Duration = 30.0
    connections: Percent = 80.0
    max_members: int = Field(default=50, ge=1)


class RedisThresholds(PolicyModel):
    memory: Percent = 90.0
    blocked_clients: int = Field(default=10, ge=1)


class KubernetesThresholds(PolicyModel):
    restarts: int = Field(default=5, ge=1)
    pod_cpu: Percent = 80.0  # seed runbook: "CPU should be <80%, Memory should be <90%" of the limits
    pod_memory: Percent = 90.0


class Thresholds(PolicyModel):
    """Per component (module doc)."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    mqtt_broker: BrokerThresholds = Field(default_factory=BrokerThresholds)
    emqx_cluster: EmqxThresholds = Field(default_factory=EmqxThresholds)
    postgresql_cluster: PostgresThresholds = Field(default_factory=PostgresThresholds)
    mongodb_cluster: MongoThresholds = Field(default_factory=MongoThresholds)
    redis: RedisThresholds = Field(default_factory=RedisThresholds)
    kubernetes_cluster: KubernetesThresholds = Field(default_factory=KubernetesThresholds)
