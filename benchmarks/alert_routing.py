"""Alert routing throughput: alerts per second through fingerprinting, routing and grouping of
the shipped tree (``policies/alerting.yaml``). Reported by ``python -m benchmarks.breaker``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from policies.alerting.model import clear_fingerprint_cache
from policies.alerting.policy import SEVERITIES, Alert, Dispatcher, load_alerting_policy

_COMPONENTS = ("service", "mqtt_broker", "postgresql_cluster", "mongodb_cluster", "redis", "kubernetes_cluster")


def routing_throughput(n_alerts: int, *, clock: Callable[[], float] = time.perf_counter) -> float:
    """Alerts per second through fingerprinting, routing and grouping on the shipped tree.

    A measurement helper for benchmarks (the clock is injected; nothing here decides anything).
    Alerts are distinct (one instance label each) across all severities and components, hashed
    cold (fingerprint memo cleared), and one flush runs at the end so grouping work is included.
    """
    if n_alerts <= 0:
        raise ValueError("n_alerts must be positive")
    policy = load_alerting_policy()
    # Caps as large as the run: this measures routing and grouping, not refusals or overflow.
    dispatcher = Dispatcher(policy=policy, max_alerts=n_alerts, max_groups=n_alerts)
    alerts = [
        Alert(
            labels={
                "alertname": f"Alert{i % 40}",
                "severity": SEVERITIES[i % len(SEVERITIES)],
                "component": _COMPONENTS[i % len(_COMPONENTS)],
                "service": f"svc{i % 25}",
                "instance": f"pod-{i}",
            },
            starts_at=1_700_000_000.0,
        )
        for i in range(n_alerts)
    ]
    clear_fingerprint_cache()
    start = clock()
    dispatcher.ingest(alerts, 1_700_000_000.0)
    dispatcher.due(1_700_000_000.0 + 3600.0)
    elapsed = clock() - start
    return n_alerts / elapsed if elapsed > 0 else float("inf")
