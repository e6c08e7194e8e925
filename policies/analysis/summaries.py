"""What the recommendation rules judge: per-service, per-topic and per-database summaries of a
window (computed from stored history by ``policies.analysis.rollup_summary``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ServiceSummary:
    """One service over a window. Rates are fractions (``error_rate=0.05`` is 5 %)."""

    service: str
    window_s: float
    calls: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    error_rate: float
    avg_concurrency: float
    peak_concurrency: float
    instances: int
    cpu_utilisation: float | None = None
    mem_utilisation: float | None = None
    payload_bytes_p95: int | None = None


@dataclass(frozen=True, kw_only=True)
class MessagePatternSummary:
    """Traffic on one topic over a window, with its busiest publisher."""

    topic: str
    window_s: float
    messages: int
    payload_bytes_p95: int | None = None
    top_publisher: str | None = None
    top_publisher_messages: int = 0


@dataclass(frozen=True, kw_only=True)
class DatabaseSummary:
    """One database (PostgreSQL, Redis) over a window; unknown figures are ``None``."""

    name: str
    kind: str
    window_s: float
    replication_lag_s: float | None = None
    connections: int | None = None
    max_connections: int | None = None
    slow_queries: int | None = None


__all__ = ["DatabaseSummary", "MessagePatternSummary", "ServiceSummary"]
