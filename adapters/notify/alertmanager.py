"""Alertmanager receiver: the alerts routed here are posted to ``/api/v2/alerts`` by the alert
manager's forwarder on Alertmanager's resend schedule, not per notification."""

from __future__ import annotations

from adapters.notify.base import Deliverer, DeliveryContext, DeliveryResult, post_with_retry
from policies.alerting.policy import Alert, Integration, Notification, to_api_v2_alerts

__all__ = ["DELIVERER", "deliver_alertmanager", "forward_alerts"]


async def deliver_alertmanager(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """Nothing per notification: Alertmanager must hear about each active alert every resend
    interval, whatever the group's timers, so the AlertManager actor's forwarder posts the alerts
    routed here to ``/api/v2/alerts`` on that schedule (policies/alerting/forwarding.py)."""
    return ctx.skip_once(n.receiver, "alertmanager", "is fed by the Alertmanager forwarder on its resend schedule")


async def forward_alerts(url: str, alerts: tuple[Alert, ...], ctx: DeliveryContext) -> DeliveryResult:
    """POST postable alerts (``endsAt`` already set) to an Alertmanager's ``/api/v2/alerts``."""
    return await post_with_retry("alertmanager", "forwarder", f"{url.rstrip('/')}/api/v2/alerts",
                                 to_api_v2_alerts(alerts), ctx)


DELIVERER = Deliverer(deliver=deliver_alertmanager, required=("url",))
