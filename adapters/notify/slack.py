"""Slack receiver: an incoming-webhook message (``api_url``, ``webhook_url`` or ``url``).
``send_resolved`` defaults off, as in Alertmanager."""

from __future__ import annotations

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

__all__ = ["DELIVERER", "deliver_slack"]


async def deliver_slack(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """POST a Slack incoming-webhook message (``api_url``, ``webhook_url`` or ``url``)."""
    url = setting_url(integ.settings, "api_url", "webhook_url", "url")
    if url is None:
        return ctx.skip_once(n.receiver, "slack", "is not configured (no api_url)")
    alerts = n.for_integration(integ.send_resolved)
    body = {
        "channel": integ.settings.get("channel"),
        "username": integ.settings.get("username") or "sfa-ops",
        "text": title(n, alerts),
        "attachments": [{"color": "danger" if n.firing else "good", "text": summary_text(n, alerts)}],
    }
    return await post_with_retry("slack", n.receiver, url, body, ctx, timeout_s=timeout_of(integ, ctx))


DELIVERER = Deliverer(deliver=deliver_slack, send_resolved=False)
