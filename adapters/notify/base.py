"""What every receiver module shares: the delivery context, the result of one delivery, the retry
policy, :class:`Deliverer` (a receiver type's declaration) and the HTTP post with retries.

Outcomes and what the dispatcher does with them:

- ``sent``: the receiver accepted it (2xx; for MQTT, queued at QoS 1 on the bus, which resends
  after a reconnect).
- ``skipped``: nothing to do — the integration has no URL (the seed's default receivers name Slack
  channels and PagerDuty keys but no endpoints), a type sfa-ops does not deliver, or no alerts for
  it (resolved only and ``send_resolved: false``). Logged once per receiver and type; settled.
- ``failed`` and ``permanent``: a 4xx (or a 3xx we do not follow, or a bad URL) is a configuration
  error: retrying cannot help, so it is logged, counted and settled — it must not loop every
  ``group_interval``. The next change of the group is tried again.
- ``failed`` and not permanent: 5xx, 408, 429, timeouts and connection errors are retried within
  the delivery with exponential backoff (:class:`RetryPolicy`: 3 tries, 0.2 s then 0.4 s); after
  that it stays undelivered and the dispatcher decides again at the group's next tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from adapters.http.client import HttpBadUrl, HttpClient, HttpUnreachable, redact_url
from adapters.mqtt.bus import MqttBus
from policies.alerting.policy import Alert, Integration, Notification
from policies.common.config import parse_duration

__all__ = [
    "DEFAULT_ALERTS_TOPIC",
    "Deliverer",
    "DeliveryContext",
    "DeliveryResult",
    "Outcome",
    "RetryPolicy",
    "post_with_retry",
    "setting_url",
    "summary_text",
    "timeout_of",
    "title",
    "with_status",
]

logger = logging.getLogger("sfa_ops.alert_delivery")

#: The alerts topic (DESIGN.md §1); the context fills in ``{cluster}``.
DEFAULT_ALERTS_TOPIC = "system/{cluster}/alerts"
_RETRY_STATUSES = frozenset({408, 429})


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


DeliverFn = Callable[[Notification, Integration, DeliveryContext], Awaitable[DeliveryResult]]


@dataclass(frozen=True, kw_only=True)
class Deliverer:
    """A receiver type as its module declares it, next to its code.

    ``deliver`` sends one notification (``None``: a type accepted so an Alertmanager file loads,
    that sfa-ops does not deliver); ``required`` lists settings of which at least one must be set
    (``KEY_file`` variants count); ``send_resolved`` is the default when the config does not say;
    ``defaults`` fill settings the config leaves out.
    """

    deliver: DeliverFn | None
    required: tuple[str, ...] = ()
    send_resolved: bool = True
    defaults: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- shared pieces


def setting_url(settings: Mapping[str, Any], *keys: str) -> str | None:
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


def timeout_of(integration: Integration, ctx: DeliveryContext) -> float:
    """The integration's ``timeout`` setting, else the retry policy's."""
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


def title(n: Notification, alerts: tuple[Alert, ...]) -> str:
    """``[FIRING:2] service=payment`` (group labels, else alert names, else the receiver)."""
    resolved = _resolved_fps(n)
    firing = sum(1 for a in alerts if a.fingerprint not in resolved)
    labels = ", ".join(f"{k}={v}" for k, v in sorted(n.group_labels.items()))
    if not labels:
        labels = ", ".join(sorted({a.labels.get("alertname", "") for a in alerts} - {""})) or n.receiver
    return f"[{n.status.upper()}:{firing}] {labels}"


def summary_text(n: Notification, alerts: tuple[Alert, ...]) -> str:
    """One line per alert: status, name, severity, where, summary."""
    lines = []
    resolved = _resolved_fps(n)
    for a in alerts:
        status = "resolved" if a.fingerprint in resolved else "firing"
        what = a.annotations.get("summary") or a.annotations.get("description") or ""
        where = a.labels.get("service") or a.labels.get("component") or ""
        lines.append(f"- [{status}] {a.labels.get('alertname', '?')} {a.labels.get('severity', '')} "
                     f"{where}: {what}".rstrip(": "))
    return "\n".join(lines)


def with_status(n: Notification, alerts: tuple[Alert, ...]) -> list[tuple[Alert, str]]:
    """Each alert with ``firing`` or ``resolved`` as this notification sees it."""
    resolved = _resolved_fps(n)
    return [(a, "resolved" if a.fingerprint in resolved else "firing") for a in alerts]
