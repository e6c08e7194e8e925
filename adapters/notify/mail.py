"""Email receiver: ``{to, from, subject, text}`` POSTed to an HTTP mail relay (``url``/``relay_url``);
no SMTP here. ``send_resolved`` defaults off, as in Alertmanager."""

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

__all__ = ["DELIVERER", "deliver_email"]


async def deliver_email(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """POST ``{to, from, subject, text}`` to an HTTP mail relay (``url``/``relay_url``); no SMTP here."""
    url = setting_url(integ.settings, "url", "relay_url")
    if url is None:
        return ctx.skip_once(n.receiver, "email", "is not configured (no relay url)")
    to = integ.settings.get("to")
    alerts = n.for_integration(integ.send_resolved)
    body = {"to": [to] if isinstance(to, str) else list(to or []), "from": integ.settings.get("from"),
            "subject": title(n, alerts), "text": summary_text(n, alerts), "groupKey": n.group_key}
    return await post_with_retry("email", n.receiver, url, body, ctx, timeout_s=timeout_of(integ, ctx))


DELIVERER = Deliverer(deliver=deliver_email, required=("to",), send_resolved=False)
