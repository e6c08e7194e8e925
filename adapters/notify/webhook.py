"""Webhook receiver: POSTs Alertmanager's webhook payload (version 4) to ``url``."""

from __future__ import annotations

from adapters.notify.base import (
    Deliverer,
    DeliveryContext,
    DeliveryResult,
    post_with_retry,
    setting_url,
    timeout_of,
)
from policies.alerting.policy import Integration, Notification, to_webhook_payload

__all__ = ["DELIVERER", "deliver_webhook"]


async def deliver_webhook(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """POST Alertmanager's webhook payload (version 4)."""
    url = setting_url(integ.settings, "url")
    if url is None:
        return ctx.skip_once(n.receiver, "webhook", "has no url")
    body = to_webhook_payload(n, ctx.external_url, max_alerts=int(integ.settings.get("max_alerts") or 0),
                              send_resolved=integ.send_resolved)
    return await post_with_retry("webhook", n.receiver, url, body, ctx, timeout_s=timeout_of(integ, ctx))


DELIVERER = Deliverer(deliver=deliver_webhook, required=("url", "url_file"))
