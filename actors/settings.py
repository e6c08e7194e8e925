"""What every operations actor is built from: one frozen, picklable settings object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.mqtt_config import MqttConfig


@dataclass(frozen=True, kw_only=True)
class OperateSettings:
    broker_url: str
    cluster_id: str = "local"
    store_url: str = "sqlite:///var/sfa-ops.db"
    policies_dir: str | None = None
    observers: int = 1
    namespace: str = "sfa-ops"
    services: tuple[str, ...] = ()
    """Services to monitor from the start (others are picked up on first sight)."""
    alert_webhooks: tuple[str, ...] = field(default_factory=tuple)
    # Infrastructure checks (the broker probe always runs, against broker_url).
    # DSNs/URLs may carry passwords: kept out of repr (logs).
    check_postgres: tuple[str, ...] = field(default=(), repr=False)
    check_redis: tuple[str, ...] = field(default=(), repr=False)
    emqx_api: str | None = None
    emqx_api_key: str | None = None
    emqx_api_secret: str | None = field(default=None, repr=False)
    kubernetes: bool = False
    kube_namespace: str = "default"
    kube_api: str | None = None
    """Explicit Kubernetes API host (tests, replay); None: in-cluster config, else kubeconfig."""
    # Security analysis, incident response and the audit trail (issue 6).
    security: bool = True
    audit_calls: bool = True
    """Every observed call becomes an audit event (sanitized by the audit writer)."""
    enforcement_redis: str | None = field(default=None, repr=False)

    signing_key_file: str | None = None
    """Ed25519 private key (PEM, absolute path readable on every node): system messages are signed."""

    def mqtt_config(self) -> MqttConfig:
        """How every actor's bus connects (and signs what it publishes under ``system/``)."""
        from adapters.mqtt_config import MqttConfig

        return MqttConfig.from_url(self.broker_url, signing_key_file=self.signing_key_file)

    def actor_name(self, kind: str, suffix: str = "") -> str:
        base = f"sfa-{kind}-{self.cluster_id}"
        return f"{base}-{suffix}" if suffix else base
