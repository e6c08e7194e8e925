"""Delivering one notification to its receiver's integrations through the registry. The
AlertManager actor calls :func:`deliver_notification` and marks a notification delivered in the
dispatcher only when every integration *settled* (STYLE.md 6; outcomes in ``adapters.notify.base``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from adapters.notify.base import DeliveryContext, DeliveryResult, Outcome
from adapters.notify.registry import DELIVERERS
from policies.alerting.policy import Integration, Notification

__all__ = ["deliver", "deliver_notification"]


async def deliver(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """Deliver to one integration; a bug in a deliverer is a (retryable) failure, never a crash."""
    if not n.for_integration(integ.send_resolved):
        return DeliveryResult(type=integ.type, outcome=Outcome.SKIPPED, attempts=0, detail="no alerts for it")
    kind = DELIVERERS.get(integ.type)
    if kind is None or kind.deliver is None:
        return ctx.skip_once(n.receiver, integ.type, "is a type sfa-ops does not deliver")
    try:
        return await kind.deliver(n, integ, ctx)
    except Exception as exc:
        ctx.log.exception("receiver %s: %s delivery crashed", n.receiver, integ.type)
        return DeliveryResult(type=integ.type, outcome=Outcome.FAILED, detail=f"{type(exc).__name__}: {exc}")


async def deliver_notification(
    n: Notification, integrations: Iterable[Integration], ctx: DeliveryContext, *, done: frozenset[int] = frozenset(),
) -> dict[int, DeliveryResult]:
    """Deliver to every integration (concurrently) whose index is not in ``done``; results by index."""
    todo = [(i, integ) for i, integ in enumerate(integrations) if i not in done]
    results = await asyncio.gather(*(deliver(n, integ, ctx) for _, integ in todo))
    return {i: r for (i, _), r in zip(todo, results, strict=True)}
