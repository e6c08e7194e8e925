"""Log receiver: the notification written to the ``sfa_ops.alert_delivery`` log."""

from __future__ import annotations

from adapters.notify.base import Deliverer, DeliveryContext, DeliveryResult, Outcome, summary_text, title
from policies.alerting.policy import Integration, Notification

__all__ = ["DELIVERER", "deliver_log"]


async def deliver_log(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """Write the notification to the log (``sfa_ops.alert_delivery``)."""
    alerts = n.for_integration(integ.send_resolved)
    ctx.log.info("alert notification for %s: %s\n%s", n.receiver, title(n, alerts), summary_text(n, alerts))
    return DeliveryResult(type="log", outcome=Outcome.SENT)


DELIVERER = Deliverer(deliver=deliver_log)
