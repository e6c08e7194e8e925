"""Delivering notifications: one async function per receiver type, each ``(notification, integration,
context) -> DeliveryResult``. The AlertManager actor calls :func:`deliver_notification` and marks a
notification delivered in the dispatcher only when every integration *settled* (STYLE.md 6).

Outcomes and what the dispatcher does with them:

- ``sent``: the receiver accepted it (2xx; for MQTT, queued at QoS 1 on the bus, which resends
  after a reconnect).
- ``skipped``: nothing to do — the integration has no URL (the seed's default receivers name Slack
  channels and PagerDuty keys but no endpoints), an unknown type, or no alerts for it (resolved
  only and ``send_resolved: false``). Logged once per receiver and type; settled.
- ``failed`` and ``permanent``: a 4xx (or a 3xx we do not follow, or a bad URL) is a configuration
  error: retrying cannot help, so it is logged, counted and settled — it must not loop every
  ``group_interval``. The next change of the group is tried again.
- ``failed`` and not permanent: 5xx, 408, 429, timeouts and connection errors are retried within
  the delivery with exponential backoff (:class:`RetryPolicy`: 3 tries, 0.2 s then 0.4 s); after
  that it stays undelivered and the dispatcher decides again at the group's next tick.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from adapters.http.client import HttpBadUrl, HttpClient, HttpUnreachable, redact_url
from adapters.mqtt.bus import MqttBus, MqttBusClosed, MqttBusError
from policies.alerting.policy import Alert, Integration, Notification, to_api_v2_alerts, to_webhook_payload
from policies.common.config import parse_duration
from protocol.security import AlertMessage

__all__ = [
    "DEFAULT_ALERTS_TOPIC",
    "DELIVERERS",
    "DeliveryContext",
    "DeliveryResult",
    "Outcome",
    "RetryPolicy",
    "alert_messages",
    "deliver",
    "deliver_notification",
    "forward_alerts",
    "publish_alerts",
]

logger = logging.getLogger("sfa_ops.alert_delivery")

DEFAULT_ALERTS_TOPIC = "system/{cluster}/alerts"
_RETRY_STATUSES = frozenset({408, 429})
#: PagerDuty Events API v2 (Alertmanager's default ``pagerduty_configs.url``).
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
# PagerDuty Events API v2 severities; sfa-ops' `emergency` has no equivalent above critical.
_PD_SEVERITY = {"emergency": "critical", "critical": "critical", "error": "error", "warning": "warning"}


class Outcome(StrEnum):
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Attempts within one delivery: ``attempts`` tries, waiting ``backoff_s * factor**i`` between."""

    attempts: int = 3
    backoff_s: float = 0.2
    factor: float = 2.0
    timeout_s: float = 5.0

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        return self.backoff_s * self.factor ** (attempt - 1)


@dataclass(frozen=True, kw_only=True)
class DeliveryResult:
    """How one integration's delivery ended."""

    type: str
    outcome: Outcome
    attempts: int = 1
    permanent: bool = False
    detail: str = ""

    @property
    def retried(self) -> int:
        return max(0, self.attempts - 1)

    @property
    def settled(self) -> bool:
        """Nothing left to retry: sent, skipped, or a permanent failure."""
        return self.outcome is not Outcome.FAILED or self.permanent


@dataclass(kw_only=True)
class DeliveryContext:
    """What deliveries need: the cluster id, the HTTP poster, the MQTT bus, the retry policy."""

    cluster_id: str
    poster: HttpClient
    bus: MqttBus | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    external_url: str = ""
    log: logging.Logger = logger
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _told: set[tuple[str, str]] = field(default_factory=set)

    def topic(self, template: str | None) -> str:
        return (template or DEFAULT_ALERTS_TOPIC).replace("{cluster}", self.cluster_id)

    def skip_once(self, receiver: str, kind: str, why: str) -> DeliveryResult:
        """A ``skipped`` result, logged the first time for this receiver and type."""
        if (receiver, kind) not in self._told:
            self._told.add((receiver, kind))
            self.log.info("receiver %s: %s %s; skipping its notifications", receiver, kind, why)
        return DeliveryResult(type=kind, outcome=Outcome.SKIPPED, attempts=0, detail=why)


Deliverer = Callable[[Notification, Integration, DeliveryContext], Awaitable[DeliveryResult]]


# ---------------------------------------------------------------- shared pieces


def _setting_url(settings: Mapping[str, Any], *keys: str) -> str | None:
    """The first non-empty URL among ``keys``; ``KEY_file`` settings are read from the file."""
    for key in keys:
        value = settings.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        path = settings.get(f"{key}_file")
        if isinstance(path, str) and path:
            try:
                return Path(path).read_text().strip() or None
            except OSError as exc:
                logger.error("cannot read %s_file %s: %s", key, path, exc.strerror)
    return None


def _timeout(integration: Integration, ctx: DeliveryContext) -> float:
    raw = integration.settings.get("timeout")
    try:
        return parse_duration(raw) if raw else ctx.retry.timeout_s
    except ValueError:
        return ctx.retry.timeout_s


async def post_with_retry(
    kind: str, receiver: str, url: str, body: Any, ctx: DeliveryContext, *, timeout_s: float | None = None,
) -> DeliveryResult:
    """POST with the context's retry policy; see the module docstring for what is retried."""
    where = redact_url(url)
    detail = ""
    for attempt in range(1, ctx.retry.attempts + 1):
        try:
            res = await ctx.poster.post_json(url, body, timeout_s=timeout_s or ctx.retry.timeout_s)
        except HttpBadUrl as exc:
            ctx.log.error("receiver %s: %s: %s (not retried)", receiver, kind, exc)
            return DeliveryResult(type=kind, outcome=Outcome.FAILED, attempts=attempt, permanent=True,
                                  detail=str(exc))
        except HttpUnreachable as exc:
            detail = str(exc)
        else:
            if res.ok:
                return DeliveryResult(type=kind, outcome=Outcome.SENT, attempts=attempt, detail=str(res.status))
            text = res.body[:200].decode(errors="replace")
            detail = f"HTTP {res.status} from {where}: {text}"
            if res.status < 500 and res.status not in _RETRY_STATUSES:
                ctx.log.error("receiver %s: %s refused the notification (%s); a configuration error, "
                              "not retried", receiver, kind, detail)
                return DeliveryResult(type=kind, outcome=Outcome.FAILED, attempts=attempt, permanent=True,
                                      detail=detail)
        if attempt < ctx.retry.attempts:
            await ctx.sleep(ctx.retry.delay(attempt))
    ctx.log.warning("receiver %s: %s failed after %d attempt(s): %s; retried at the next group tick",
                    receiver, kind, ctx.retry.attempts, detail)
    return DeliveryResult(type=kind, outcome=Outcome.FAILED, attempts=ctx.retry.attempts, detail=detail)


def _resolved_fps(n: Notification) -> frozenset[str]:
    return frozenset(a.fingerprint for a in n.resolved)


def _title(n: Notification, alerts: tuple[Alert, ...]) -> str:
    resolved = _resolved_fps(n)
    firing = sum(1 for a in alerts if a.fingerprint not in resolved)
    labels = ", ".join(f"{k}={v}" for k, v in sorted(n.group_labels.items()))
    if not labels:
        labels = ", ".join(sorted({a.labels.get("alertname", "") for a in alerts} - {""})) or n.receiver
    return f"[{n.status.upper()}:{firing}] {labels}"


def _text(n: Notification, alerts: tuple[Alert, ...]) -> str:
    lines = []
    resolved = _resolved_fps(n)
    for a in alerts:
        status = "resolved" if a.fingerprint in resolved else "firing"
        what = a.annotations.get("summary") or a.annotations.get("description") or ""
        where = a.labels.get("service") or a.labels.get("component") or ""
        lines.append(f"- [{status}] {a.labels.get('alertname', '?')} {a.labels.get('severity', '')} "
                     f"{where}: {what}".rstrip(": "))
    return "\n".join(lines)


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


def _with_status(n: Notification, alerts: tuple[Alert, ...]) -> list[tuple[Alert, str]]:
    resolved = _resolved_fps(n)
    return [(a, "resolved" if a.fingerprint in resolved else "firing") for a in alerts]


# ---------------------------------------------------------------- one function per type


async def deliver_mqtt(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """Publish each alert as an ``AlertMessage`` on the integration's topic (default alerts topic)."""
    topic = ctx.topic(integ.settings.get("topic"))
    try:
        qos = int(integ.settings.get("qos", 1))
        publish_alerts(ctx, topic, _with_status(n, n.for_integration(integ.send_resolved)),
                       receiver=n.receiver, group_key=n.group_key, qos=qos)
    except MqttBusClosed as exc:
        return DeliveryResult(type="mqtt", outcome=Outcome.FAILED, detail=str(exc))
    except (MqttBusError, ValueError) as exc:  # a bad topic or QoS: configuration
        ctx.log.error("receiver %s: mqtt topic %r refused: %s", n.receiver, topic, exc)
        return DeliveryResult(type="mqtt", outcome=Outcome.FAILED, permanent=True, detail=str(exc))
    return DeliveryResult(type="mqtt", outcome=Outcome.SENT)


async def deliver_webhook(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """POST Alertmanager's webhook payload (version 4)."""
    url = _setting_url(integ.settings, "url")
    if url is None:
        return ctx.skip_once(n.receiver, "webhook", "has no url")
    body = to_webhook_payload(n, ctx.external_url, max_alerts=int(integ.settings.get("max_alerts") or 0),
                              send_resolved=integ.send_resolved)
    return await post_with_retry("webhook", n.receiver, url, body, ctx, timeout_s=_timeout(integ, ctx))


async def deliver_alertmanager(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """Nothing per notification: Alertmanager must hear about each active alert every resend
    interval, whatever the group's timers, so the AlertManager actor's forwarder posts the alerts
    routed here to ``/api/v2/alerts`` on that schedule (policies/alerting/forwarding.py)."""
    return ctx.skip_once(n.receiver, "alertmanager", "is fed by the Alertmanager forwarder on its resend schedule")


async def forward_alerts(url: str, alerts: tuple[Alert, ...], ctx: DeliveryContext) -> DeliveryResult:
    """POST postable alerts (``endsAt`` already set) to an Alertmanager's ``/api/v2/alerts``."""
    return await post_with_retry("alertmanager", "forwarder", f"{url.rstrip('/')}/api/v2/alerts",
                                 to_api_v2_alerts(alerts), ctx)


async def deliver_slack(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """POST a Slack incoming-webhook message (``api_url``, ``webhook_url`` or ``url``)."""
    url = _setting_url(integ.settings, "api_url", "webhook_url", "url")
    if url is None:
        return ctx.skip_once(n.receiver, "slack", "is not configured (no api_url)")
    alerts = n.for_integration(integ.send_resolved)
    body = {
        "channel": integ.settings.get("channel"),
        "username": integ.settings.get("username") or "sfa-ops",
        "text": _title(n, alerts),
        "attachments": [{"color": "danger" if n.firing else "good", "text": _text(n, alerts)}],
    }
    return await post_with_retry("slack", n.receiver, url, body, ctx, timeout_s=_timeout(integ, ctx))


async def deliver_pagerduty(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """POST a PagerDuty Events API v2 event: trigger while anything fires, resolve afterwards
    (to ``url``, by default PagerDuty's own endpoint)."""
    url = _setting_url(integ.settings, "url") or PAGERDUTY_EVENTS_URL
    key = _setting_url(integ.settings, "routing_key", "service_key")
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
            "summary": _title(n, alerts)[:1024],
            "severity": worst,
            "source": integ.settings.get("source") or ctx.cluster_id,
            "custom_details": {"firing": _text(n, n.firing), "resolved": _text(n, n.resolved),
                               "num_firing": len(n.firing), "num_resolved": len(n.resolved)},
        },
        "client": "sfa-ops",
    }
    return await post_with_retry("pagerduty", n.receiver, url, body, ctx, timeout_s=_timeout(integ, ctx))


async def deliver_email(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """POST ``{to, from, subject, text}`` to an HTTP mail relay (``url``/``relay_url``); no SMTP here."""
    url = _setting_url(integ.settings, "url", "relay_url")
    if url is None:
        return ctx.skip_once(n.receiver, "email", "is not configured (no relay url)")
    to = integ.settings.get("to")
    alerts = n.for_integration(integ.send_resolved)
    body = {"to": [to] if isinstance(to, str) else list(to or []), "from": integ.settings.get("from"),
            "subject": _title(n, alerts), "text": _text(n, alerts), "groupKey": n.group_key}
    return await post_with_retry("email", n.receiver, url, body, ctx, timeout_s=_timeout(integ, ctx))


async def deliver_phone(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """POST ``{numbers, message}`` to a configured call/SMS gateway ``url``."""
    url = _setting_url(integ.settings, "url")
    if url is None:
        return ctx.skip_once(n.receiver, "phone", "is not configured (no gateway url)")
    body = {"numbers": list(integ.settings.get("numbers") or []),
            "message": _title(n, n.for_integration(integ.send_resolved)), "groupKey": n.group_key}
    return await post_with_retry("phone", n.receiver, url, body, ctx, timeout_s=_timeout(integ, ctx))


async def deliver_log(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """Write the notification to the log (``sfa_ops.alert_delivery``)."""
    alerts = n.for_integration(integ.send_resolved)
    ctx.log.info("alert notification for %s: %s\n%s", n.receiver, _title(n, alerts), _text(n, alerts))
    return DeliveryResult(type="log", outcome=Outcome.SENT)


DELIVERERS: dict[str, Deliverer] = {
    "mqtt": deliver_mqtt,
    "webhook": deliver_webhook,
    "alertmanager": deliver_alertmanager,
    "slack": deliver_slack,
    "pagerduty": deliver_pagerduty,
    "email": deliver_email,
    "phone": deliver_phone,
    "log": deliver_log,
}


async def deliver(n: Notification, integ: Integration, ctx: DeliveryContext) -> DeliveryResult:
    """Deliver to one integration; a bug in a deliverer is a (retryable) failure, never a crash."""
    if not n.for_integration(integ.send_resolved):
        return DeliveryResult(type=integ.type, outcome=Outcome.SKIPPED, attempts=0, detail="no alerts for it")
    fn = DELIVERERS.get(integ.type)
    if fn is None:
        return ctx.skip_once(n.receiver, integ.type, "is a type sfa-ops does not deliver")
    try:
        return await fn(n, integ, ctx)
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
