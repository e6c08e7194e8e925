"""Wire shapes for notifications: Alertmanager's webhook payload and API v2 postable alerts.

The webhook payload is Alertmanager's ``version: "4"`` message (notify/webhook): ``status`` is
``firing`` when any alert fires; ``commonLabels``/``commonAnnotations`` are the pairs every alert
shares; firing alerts carry Go's zero time as ``endsAt`` (Alertmanager clears it at flush);
``truncatedAlerts`` counts alerts cut by a receiver's ``max_alerts``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from policies.alerting.model import GO_ZERO_TIME, Alert, format_time
from policies.alerting.notification import Notification

__all__ = ["to_api_v2_alerts", "to_webhook_payload"]


def _common(maps: list[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first, rest = maps[0], maps[1:]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}


def _webhook_alert(alert: Alert, status: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": format_time(alert.starts_at),
        "endsAt": GO_ZERO_TIME if status == "firing" or alert.ends_at is None else format_time(alert.ends_at),
        "generatorURL": alert.generator_url,
        "fingerprint": alert.fingerprint,
    }


def to_webhook_payload(
    notification: Notification, external_url: str = "", *, max_alerts: int = 0, send_resolved: bool = True
) -> dict[str, Any]:
    """Alertmanager's webhook body for a notification (``max_alerts`` 0 = no limit).

    With ``send_resolved=False`` (the webhook's setting) resolved alerts are left out, as
    Alertmanager does before building the body.
    """
    alerts = [(a, "firing") for a in notification.firing]
    if send_resolved:
        alerts += [(a, "resolved") for a in notification.resolved]
    truncated = 0
    if max_alerts > 0 and len(alerts) > max_alerts:
        truncated = len(alerts) - max_alerts
        alerts = alerts[:max_alerts]
    every = [a for a, _ in alerts]
    return {
        "version": "4",
        "groupKey": notification.group_key,
        "truncatedAlerts": truncated,
        "status": notification.status,
        "receiver": notification.receiver,
        "groupLabels": dict(notification.group_labels),
        "commonLabels": _common([a.labels for a in every]),
        "commonAnnotations": _common([a.annotations for a in every]),
        "externalURL": external_url,
        "alerts": [_webhook_alert(a, s) for a, s in alerts],
    }


def to_api_v2_alerts(alerts: Iterable[Alert]) -> list[dict[str, Any]]:
    """Postable alerts for ``POST /api/v2/alerts`` of another Alertmanager."""
    out = []
    for a in alerts:
        item: dict[str, Any] = {
            "labels": dict(a.labels),
            "annotations": dict(a.annotations),
            "startsAt": format_time(a.starts_at),
        }
        if a.ends_at is not None:
            item["endsAt"] = format_time(a.ends_at)
        if a.generator_url:  # the schema wants a URI; an empty string would be rejected
            item["generatorURL"] = a.generator_url
        out.append(item)
    return out
