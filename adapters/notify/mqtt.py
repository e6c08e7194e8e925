"""MQTT receiver (``type: mqtt``) and the alert manager's mirror: each alert as an ``AlertMessage``
on the integration's topic (default ``system/{cluster}/alerts``)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from adapters.mqtt.bus import MqttBusClosed, MqttBusError
from adapters.notify.base import (
    DEFAULT_ALERTS_TOPIC,
    Deliverer,
    DeliveryContext,
    DeliveryResult,
    Outcome,
    with_status,
)
from policies.alerting.policy import Alert, Integration, Notification
from protocol.security import AlertMessage

__all__ = ["DELIVERER", "alert_messages", "deliver_mqtt", "publish_alerts"]


def alert_messages(
    alerts: Iterable[tuple[Alert, str]], *, cluster_id: str, receiver: str | None, group_key: str | None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """``AlertMessage`` wire dicts, one per ``(alert, status)``; a ``runbook`` annotation holding
    JSON steps moves to the message's ``runbook`` field."""
    out = []
    for alert, status in alerts:
        annotations = dict(alert.annotations)
        runbook = None
        if "runbook" in annotations:
            try:
                parsed = orjson.loads(annotations["runbook"])
            except orjson.JSONDecodeError:
                parsed = None  # a plain-text runbook (a URL, say) stays an annotation
            if isinstance(parsed, list):
                runbook = parsed
                del annotations["runbook"]
        msg = AlertMessage(
            cluster_id=cluster_id, status="resolved" if status == "resolved" else "firing",
            receiver=receiver, group_key=group_key, labels=dict(alert.labels), annotations=annotations,
            starts_at=datetime.fromtimestamp(alert.starts_at, UTC),
            # A firing alert's endsAt is only its resolve timeout: shown as none, as webhooks do.
            ends_at=datetime.fromtimestamp(alert.ends_at, UTC) if status == "resolved" and alert.ends_at is not None else None,
            fingerprint=alert.fingerprint, runbook=runbook,
            timestamp=None if now is None else datetime.fromtimestamp(now, UTC),
        )
        out.append(msg.to_wire())
    return out


def publish_alerts(
    ctx: DeliveryContext, topic: str, alerts: Iterable[tuple[Alert, str]], *, receiver: str | None,
    group_key: str | None, qos: int = 1,
) -> int:
    """Queue one message per alert on the bus (QoS 1 survives a reconnect); returns the count."""
    if ctx.bus is None:
        raise MqttBusClosed("no MQTT bus in this delivery context")
    messages = alert_messages(alerts, cluster_id=ctx.cluster_id, receiver=receiver, group_key=group_key,
                              now=time.time())
    for msg in messages:
        ctx.bus.publish_nowait(topic, msg, qos=qos)
    return len(messages)


async def deliver_mqtt(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """Publish each alert as an ``AlertMessage`` on the integration's topic (default alerts topic)."""
    topic = ctx.topic(integ.settings.get("topic"))
    try:
        qos = int(integ.settings.get("qos", 1))
        publish_alerts(ctx, topic, with_status(n, n.for_integration(integ.send_resolved)),
                       receiver=n.receiver, group_key=n.group_key, qos=qos)
    except MqttBusClosed as exc:
        return DeliveryResult(type="mqtt", outcome=Outcome.FAILED, detail=str(exc))
    except (MqttBusError, ValueError) as exc:  # a bad topic or QoS: configuration
        ctx.log.error("receiver %s: mqtt topic %r refused: %s", n.receiver, topic, exc)
        return DeliveryResult(type="mqtt", outcome=Outcome.FAILED, permanent=True, detail=str(exc))
    return DeliveryResult(type="mqtt", outcome=Outcome.SENT)


DELIVERER = Deliverer(deliver=deliver_mqtt, defaults={"topic": DEFAULT_ALERTS_TOPIC})
