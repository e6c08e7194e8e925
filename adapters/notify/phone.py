"""Phone receiver: ``{numbers, message}`` POSTed to a call/SMS gateway ``url``.
``send_resolved`` defaults off (nobody wants a call saying all is well)."""

from __future__ import annotations

from adapters.notify.base import (
    Deliverer,
    DeliveryContext,
    DeliveryResult,
    post_with_retry,
    setting_url,
    timeout_of,
    title,
)
from policies.alerting.policy import Integration, Notification

__all__ = ["DELIVERER", "deliver_phone"]


async def deliver_phone(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """POST ``{numbers, message}`` to a configured call/SMS gateway ``url``."""
    url = setting_url(integ.settings, "url")
    if url is None:
        return ctx.skip_once(n.receiver, "phone", "is not configured (no gateway url)")
    body = {"numbers": list(integ.settings.get("numbers") or []),
            "message": title(n, n.for_integration(integ.send_resolved)), "groupKey": n.group_key}
    return await post_with_retry("phone", n.receiver, url, body, ctx, timeout_s=timeout_of(integ, ctx))


DELIVERER = Deliverer(deliver=deliver_phone, required=("numbers",), send_resolved=False)
