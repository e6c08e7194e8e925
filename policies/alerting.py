"""Alert routing policy of sfa-ops: one import for the AlertManager actor and the drivers.

The pieces (each its own module):

- ``alert_config``: the policy file (Alertmanager's format plus the seed's) → :class:`AlertingPolicy`;
- ``alert_matchers``, ``time_intervals``: matchers and time intervals, as Alertmanager defines them;
- ``alert_routing``: the immutable tree (``Route.match``) and inhibition;
- ``alert_receivers``: receivers in sfa-ops', the seed's and Alertmanager's forms;
- ``alert_groups``: the :class:`Dispatcher` state machine (groups, silences, notification log);
- ``alert_nflog``: when a group is told again; ``alert_payloads``: webhook and API v2 shapes.

Errors: configuration problems raise ``policies.config.PolicyConfigError`` (a ``ValueError``);
malformed alerts, silences and matchers raise ``ValueError`` (``MatcherSyntaxError`` for matchers).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from policies.alert_config import alerting_policy_from_text, load_alerting_policy
from policies.alert_groups import Dispatcher, DispatchStatus, IngestResult, Notification
from policies.alert_matchers import MatcherSyntaxError, parse_matchers
from policies.alert_model import (
    SEVERITIES,
    Alert,
    Silence,
    clear_fingerprint_cache,
    fingerprint,
    format_time,
    parse_time,
)
from policies.alert_nflog import NotifyReason
from policies.alert_payloads import to_api_v2_alerts, to_webhook_payload
from policies.alert_receivers import Integration, Receiver
from policies.alert_routing import AlertingPolicy, Route

__all__ = [
    "SEVERITIES",
    "Alert",
    "AlertingPolicy",
    "DispatchStatus",
    "Dispatcher",
    "IngestResult",
    "Integration",
    "MatcherSyntaxError",
    "Notification",
    "NotifyReason",
    "Receiver",
    "Route",
    "Silence",
    "alerting_policy_from_text",
    "fingerprint",
    "format_time",
    "load_alerting_policy",
    "parse_matchers",
    "parse_time",
    "routing_throughput",
    "to_api_v2_alerts",
    "to_webhook_payload",
]

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
