"""What every operations actor is built from: one frozen, picklable settings object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.mqtt.config import MqttConfig


@dataclass(frozen=True, kw_only=True)
class OperateSettings:
    # URLs/DSNs may carry passwords (and webhook URLs tokens): kept out of repr (logs).
    broker_url: str = field(repr=False)
    cluster_id: str = "local"
    mqtt_session_expiry_s: int = 300
    """Every actor's bus keeps a persistent MQTT 5 session (``clean_start=False``) that the broker
    holds this long after a lost connection, queueing QoS 1 messages; 0: clean sessions."""
    store_url: str = field(default="sqlite:///var/sfa-ops.db", repr=False)
    policies_dir: str | None = None
    observers: int = 1
    namespace: str = "sfa-ops"
    services: tuple[str, ...] = ()
    """Services to monitor from the start (others are picked up on first sight)."""
    max_discovered_services: int = 64
    """Services seen only in traffic (not configured, no presence) that get a monitor; calls to
    further names are counted as ``observed.unknownServices``."""
    alert_webhooks: tuple[str, ...] = field(default_factory=tuple, repr=False)
    alertmanager_urls: tuple[str, ...] = field(default=(), repr=False)
    """Alertmanagers that get every alert through API v2, re-sent every ``alertmanager_resend_s``."""
    alertmanager_resend_s: float = 60.0
    # Infrastructure checks (the broker probe always runs, against broker_url).
    check_postgres: tuple[str, ...] = field(default=(), repr=False)
    check_redis: tuple[str, ...] = field(default=(), repr=False)
    check_mongodb: tuple[str, ...] = field(default=(), repr=False)
    expect_replicas: int = 0
    """Replicas each checked PostgreSQL primary, Redis master and MongoDB replica set must have."""
    emqx_api: str | None = None
    emqx_api_key: str | None = None
    emqx_api_secret: str | None = field(default=None, repr=False)
    kubernetes: bool = False
    kube_namespace: str = "default"
    kube_api: str | None = None
    """Explicit Kubernetes API host (tests, replay); None: in-cluster config, else kubeconfig."""
    # Security analysis, incident response and the audit trail.
    security: bool = True
    audit_calls: bool = True
    """Every observed call becomes an audit event (sanitized by the audit writer)."""
    enforcement_redis: str | None = field(default=None, repr=False)
    audit_key: str | None = field(default=None, repr=False)
    """The audit chain's HMAC key (adapters.store.audit_key); None: plain sha256 chain."""
    audit_anchor_file: str | None = None
    """JSON-lines file each audit anchor is appended to (absolute path); None: published only."""
    audit_anchor_s: float = 60.0
    """An audit anchor is published (and appended) this often, and at shutdown; 0: at shutdown only."""

    metric_rules: bool = True
    """Evaluate ``metric_rules.yaml`` on the supervisor's own series (embedded alerting rules)."""

    signing_key_file: str | None = None
    """Ed25519 private key (PEM, absolute path readable on every node): system messages are signed."""

    def mqtt_config(self, *, persistent: bool = True) -> MqttConfig:
        """How every actor's bus connects (and signs what it publishes under ``system/``): with a
        persistent session unless ``persistent=False`` or ``mqtt_session_expiry_s`` is 0 (an actor
        with a persistent session needs a client id that is the same after its restart)."""
        from adapters.mqtt.config import MqttConfig

        expiry = self.mqtt_session_expiry_s if persistent else 0
        return MqttConfig.from_url(self.broker_url, signing_key_file=self.signing_key_file,
                                   clean_start=not expiry, session_expiry_s=expiry)

    def actor_name(self, kind: str, suffix: str = "") -> str:
        base = f"sfa-{kind}-{self.cluster_id}"
        return f"{base}-{suffix}" if suffix else base
