"""PagerDuty receiver: Events API v2 (trigger while anything fires, resolve afterwards)."""

from __future__ import annotations

import hashlib

from adapters.notify.base import (
    Deliverer,
    DeliveryContext,
    DeliveryResult,
    post_with_retry,
    setting_url,
    summary_text,
    timeout_of,
    title,
)
from policies.alerting.policy import Integration, Notification

__all__ = ["DELIVERER", "PAGERDUTY_EVENTS_URL", "deliver_pagerduty"]

#: PagerDuty Events API v2 (Alertmanager's default ``pagerduty_configs.url``).
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
# PagerDuty Events API v2 severities; sfa-ops' `emergency` has no equivalent above critical.
_PD_SEVERITY = {"emergency": "critical", "critical": "critical", "error": "error", "warning": "warning"}


async def deliver_pagerduty(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """POST a PagerDuty Events API v2 event: trigger while anything fires, resolve afterwards
    (to ``url``, by default PagerDuty's own endpoint)."""
    url = setting_url(integ.settings, "url") or PAGERDUTY_EVENTS_URL
    key = setting_url(integ.settings, "routing_key", "service_key")
    if key is None or "{{" in key:  # the seed's keys are unexpanded templates
        return ctx.skip_once(n.receiver, "pagerduty", "is not configured (no routing key)")
    alerts = n.for_integration(integ.send_resolved)
    severities = [a.labels.get("severity", "") for a in n.firing]
    worst = next((_PD_SEVERITY[s] for s in _PD_SEVERITY if s in severities), "info")
    body = {
        "routing_key": key,
        "event_action": "trigger" if n.firing else "resolve",
        # PagerDuty caps dedup_key at 255 characters; Alertmanager sends the group key's SHA-256.
        "dedup_key": hashlib.sha256(n.group_key.encode()).hexdigest(),
        "payload": {
            "summary": title(n, alerts)[:1024],
            "severity": worst,
            "source": integ.settings.get("source") or ctx.cluster_id,
            "custom_details": {"firing": summary_text(n, n.firing), "resolved": summary_text(n, n.resolved),
                               "num_firing": len(n.firing), "num_resolved": len(n.resolved)},
        },
        "client": "sfa-ops",
    }
    return await post_with_retry("pagerduty", n.receiver, url, body, ctx, timeout_s=timeout_of(integ, ctx))


DELIVERER = Deliverer(deliver=deliver_pagerduty,
                      required=("routing_key", "service_key", "routing_key_file", "service_key_file"))
