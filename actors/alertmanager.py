"""AlertManager actor: a shell around ``policies.alerting.policy.Dispatcher`` that delivers what it decides.

- ``ingest`` converts alert dicts, enriches their annotations (``runbook``: the selected runbook's
  rendered steps as JSON; ``recentEvents``: the last 5 related events as JSON), routes them,
  persists the alerts and the dispatcher state, and only then answers.
- A loop (every ``tick_s``) takes the due notifications and delivers them through
  ``adapters.notify.delivery``; a notification is marked delivered only when every integration
  settled (sent, skipped, or a permanent 4xx), then the state is saved. So a restart neither loses
  an ingested alert nor repeats a confirmed notification (at least once: a crash between a POST and
  the save can repeat that one).
- Mirror (on by default): every notification's alerts also go to ``system/{cluster}/alerts`` (the
  DESIGN's alerts topic), and so do alerts no route takes (``receiver`` null) on each change of
  their status (the shipped tree has a root receiver; an override may not).
- Forwarding (``--alertmanager URL``, and ``alertmanager`` integrations of the tree): a second loop
  posts active alerts to Alertmanager API v2 on Alertmanager's client schedule — every resend
  interval, ``endsAt`` 4 intervals ahead, the resolution with ``endsAt`` when it ended — decided by
  ``policies.alerting.forwarding``, independent of the groups' timers. The schedule is not saved: after
  a restart every known alert is posted again at once (Alertmanager merges duplicates), and a
  resolution the dispatcher had already forgotten ends in Alertmanager at the last ``endsAt`` sent.

Decisions are pure (``policies.alerting.enrichment``: runbook and recent events, status changes;
``policies.alerting.delivery_plan``: mirror integration, partial deliveries, when a notification
counts as delivered, when to save; ``policies.alerting.policy``: routing and the notification log); the
body (:class:`AlertManagerBody`, an ``actors.chassis.Chassis``) carries them out.

Ray restarts the actor (``max_restarts=-1``) by calling ``__init__`` again, which queues
``ensure_started()`` on itself (``Chassis.start_when_restarted``); every public method also first
awaits ``ensure_started()``, which restores the state from the store (namespace ``alertmanager``,
key ``dispatcher``) and starts the loops once. So pending notifications resume as soon as the
restarted actor is up, without waiting for a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict
from typing import Any

import ray

from actors.chassis import Chassis
from actors.clock import Clock, SystemClock
from actors.loops import run_every
from actors.settings import OperateSettings
from adapters.http.client import HttpClient, redact_url
from adapters.mqtt.bus import MqttBus, MqttBusError
from adapters.notify.alertmanager import forward_alerts
from adapters.notify.base import DEFAULT_ALERTS_TOPIC, DeliveryContext, DeliveryResult, Outcome, RetryPolicy
from adapters.notify.delivery import deliver_notification
from adapters.notify.mqtt import publish_alerts
from adapters.notify.registry import load_checked_alerting_policy
from adapters.store import AlertRecord, Store, StoreError, open_store
from adapters.store.buffer import BufferedStore
from policies.alerting.delivery_plan import MIRROR_KEY, PartialDeliveries, save_due, with_mirror
from policies.alerting.enrichment import RecentEvents, StatusChanges, enrich, event_of
from policies.alerting.forwarding import Forwarding, ForwardSettings, forward_targets, receivers_of
from policies.alerting.policy import (
    Alert,
    Dispatcher,
    Integration,
    Notification,
    Silence,
)
from policies.alerting.runbooks import RunbookPolicy, load_runbooks
from policies.common.config import PolicyConfigError

logger = logging.getLogger("sfa_ops.alertmanager")

STATE_NAMESPACE = "alertmanager"
STATE_KEY = "dispatcher"


class AlertManagerBody(Chassis):
    """See the module docstring. Options: ``mirror`` (publish every notification on the alerts
    topic), ``retry`` (attempts within one delivery), ``tick_s``, ``save_every_s``; ``clock``,
    ``store`` and ``bus`` default to the real ones."""

    what = "alert manager"

    def __init__(
        self, settings: OperateSettings, *, mirror: bool = True, retry: RetryPolicy | None = None,
        tick_s: float = 0.25, save_every_s: float = 10.0, clock: Clock | None = None,
        max_concurrent: int = 16, store: Store | None = None, bus: MqttBus | None = None,
    ) -> None:
        s = self.settings = settings
        self.mirror, self.retry, self.tick_s, self.save_every_s = mirror, retry or RetryPolicy(), tick_s, save_every_s
        self.clock: Clock = clock or SystemClock()
        self.max_concurrent = max_concurrent
        self.store = BufferedStore(inner=store or open_store(s.store_url))
        self.bus = bus or MqttBus(config=s.mqtt_config(), client_id=f"alertmanager-{s.cluster_id}")
        self._loops: list[asyncio.Task[None]] = []
        self._counters: dict[str, dict[str, int]] = {}
        self._rejected = 0
        self._recent = RecentEvents()
        self._changes = StatusChanges()
        self._partial = PartialDeliveries()
        self._saved_at = 0.0
        self._started_at = 0.0

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Same as :meth:`ensure_started` (the supervisor calls it once after creating the actor)."""
        await self.ensure_started()

    async def _start(self) -> None:
        s = self.settings
        # Receivers checked against the registry (known type, required settings) before any alert.
        self.policy = load_checked_alerting_policy(s.policies_dir)
        self.runbooks: RunbookPolicy | None = None
        try:
            self.runbooks = load_runbooks(s.policies_dir)
        except PolicyConfigError:
            logger.exception("alertmanager %s: runbooks not loaded; alerts go without runbook steps", s.cluster_id)
        await self.store.open()
        self.dispatcher = await self._restore()
        await self.bus.start()
        self.poster = HttpClient(timeout_s=self.retry.timeout_s, user_agent="sfa-ops-alertmanager")
        self.ctx = DeliveryContext(cluster_id=s.cluster_id, poster=self.poster, bus=self.bus, retry=self.retry,
                                   log=logging.getLogger("sfa_ops.alert_delivery"))
        self._sem = asyncio.Semaphore(self.max_concurrent)
        self._mirror_integration = Integration(type="mqtt", settings={"topic": DEFAULT_ALERTS_TOPIC},
                                               send_resolved=True) if self.mirror else None
        self.forwarding = Forwarding(targets=forward_targets(
            self.policy, s.alertmanager_urls, ForwardSettings(resend_interval=s.alertmanager_resend_s)))
        self.forwarding.observe(self.dispatcher.alerts(), self._receivers_of, self.clock.now())
        self._saved_at = self.clock.now()
        loops = [("forward", self._forward)] if self.forwarding else []
        for name, step in [*loops, ("loop", self._tick)]:
            self._loops.append(asyncio.create_task(
                run_every(self.tick_s, step, name=f"alertmanager-{name}-{s.cluster_id}", logger=logger,
                          slow_after_s=max(2.0, self.tick_s)),
                name=f"alertmanager-{name}-{s.cluster_id}"))
        self._started_at = self.clock.now()
        logger.info("alertmanager %s started (%d group(s) restored)", s.cluster_id,
                    self.dispatcher.status(self.clock.now()).groups)

    async def _restore(self) -> Dispatcher:
        # A store that is briefly away gets a few tries: starting empty and then saving would
        # overwrite the notification log and repeat every notification.
        for attempt in range(3):
            try:
                state = await self.store.state_get(STATE_NAMESPACE, STATE_KEY)
            except StoreError as exc:
                logger.warning("alertmanager: cannot read saved state (try %d): %s", attempt + 1, exc)
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            if state is None:
                return Dispatcher(policy=self.policy)
            try:
                return Dispatcher.from_dict(state, policy=self.policy)
            except (ValueError, KeyError, TypeError):
                logger.exception("alertmanager: saved state unusable; starting empty")
                return Dispatcher(policy=self.policy)
        logger.error("alertmanager: store unavailable; starting with empty state")
        return Dispatcher(policy=self.policy)

    async def stop(self) -> None:
        """Stop the loops, save the state, close MQTT, HTTP and the store."""
        if not self.started:
            return
        self._starting = None
        loops, self._loops = self._loops, []
        for task in loops:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._save()
        await self.bus.stop()
        await self.poster.close()
        await self.store.close()

    # ---------------------------------------------------------------- input

    async def ingest(self, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        """Route alert dicts (``labels``, ``annotations``, ``startsAt``, ``endsAt``, ``generatorURL``);
        returns the ingest counts plus ``rejected`` (malformed alerts, logged and dropped)."""
        await self.ensure_started()
        now = self.clock.now()
        parsed: list[Alert] = []
        rejected = 0
        for raw in alerts:
            try:
                # Stamped with the resolve timeout here, so the forwarder sees what the dispatcher holds.
                alert = enrich(Alert.from_dict(raw, now=now), runbooks=self.runbooks, recent=self._recent)
                parsed.append(self.policy.timed(alert, now))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                rejected += 1
                logger.warning("alertmanager: malformed alert dropped: %s", exc)
        self._rejected += rejected
        result = self.dispatcher.ingest(parsed, now)
        self.forwarding.observe(parsed, self._receivers_of, now)
        changed = [a for a in parsed if self._changes.changed(a, now)]
        for alert in changed:
            self._recent.note(event_of(alert, alert.status(now)))
        if self.mirror:
            self._mirror_unrouted([a for a in changed if not self._receivers_of(a)], now)
        for a in parsed:
            await self.store.alert_upsert(AlertRecord(
                fingerprint=a.fingerprint, labels=dict(a.labels), annotations=dict(a.annotations),
                status=a.status(now), starts_at=a.starts_at, ends_at=a.ends_at if a.resolved(now) else None))
        await self._save()  # before answering: an acknowledged alert survives a restart
        return {**asdict(result), "rejected": rejected}

    async def note_event(self, event: dict[str, Any]) -> None:
        """Remember an event (with ``service`` or ``component``) for later alerts' ``recentEvents``."""
        await self.ensure_started()
        self._recent.note(event)

    async def add_silence(self, silence: dict[str, Any]) -> str:
        """Add a silence (Alertmanager API v2 shape, matchers as dicts or strings); returns its id."""
        await self.ensure_started()
        added = self.dispatcher.add_silence(Silence.from_dict(silence))
        await self._save()
        return added.id

    async def status(self) -> dict[str, Any]:
        """Dispatcher counts, delivery counters per receiver (sent/failed/retried/skipped), the
        mirror's counters under ``mirror``, rejected alerts, MQTT and store buffer stats, and when
        this incarnation started (``startedAt``; a restart by Ray moves it)."""
        await self.ensure_started()
        return {
            "startedAt": self._started_at,
            "dispatcher": asdict(self.dispatcher.status(self.clock.now())),
            "delivery": {k: dict(v) for k, v in self._counters.items()},
            "rejected": self._rejected,
            "forwarding": [{**asdict(f), "url": redact_url(f.url)} for f in self.forwarding.status(self.clock.now())],
            "mqtt": self.bus.stats(),
            "store": asdict(self.store.stats()),
        }

    # ---------------------------------------------------------------- mirror and delivery

    def _receivers_of(self, alert: Alert) -> frozenset[str]:
        return receivers_of(self.policy, alert)

    def _mirror_unrouted(self, alerts: list[Alert], now: float) -> None:
        if not alerts:
            return
        try:
            publish_alerts(self.ctx, self.ctx.topic(None), [(a, a.status(now)) for a in alerts],
                           receiver=None, group_key=None)
            self._count(MIRROR_KEY, DeliveryResult(type="mqtt", outcome=Outcome.SENT))
        except MqttBusError as exc:
            logger.warning("alertmanager: unrouted alerts not mirrored: %s", exc)

    async def _tick(self) -> None:
        now = self.clock.now()
        notifications = self.dispatcher.due(now)
        if not save_due(saved_at=self._saved_at, now=now, every_s=self.save_every_s, attempted=notifications):
            return
        outcomes = await asyncio.gather(*(self._deliver(n) for n in notifications))
        done_at = self.clock.now()
        for n, (delivered, _) in zip(notifications, outcomes, strict=True):
            if delivered:
                self.dispatcher.mark_delivered(n, done_at)
        await self._save()
        # Counted after the save, so a caller that sees a count also sees it persisted.
        for _, results in outcomes:
            for key, r in results:
                self._count(key, r)

    async def _deliver(self, n: Notification) -> tuple[bool, list[tuple[str, DeliveryResult]]]:
        integrations = with_mirror(self.policy.receivers[n.receiver].integrations, self._mirror_integration,
                                   self.ctx.topic)
        async with self._sem:
            results = await deliver_notification(n, integrations, self.ctx, done=self._partial.done(n))
        outcome = self._partial.settle(n, len(integrations), (i for i, r in results.items() if r.settled))
        named = [(MIRROR_KEY if integrations[i] is self._mirror_integration else n.receiver, r)
                 for i, r in results.items()]
        return outcome.delivered, named

    async def _forward(self) -> None:
        # A permanent refusal (Alertmanager answers 400 for an invalid alert but keeps the valid
        # ones of the batch) settles like a success: retrying every few seconds would not help.
        for batch in self.forwarding.due(self.clock.now()):
            result = await forward_alerts(batch.url, batch.alerts, self.ctx)
            self.forwarding.settle(batch, ok=result.settled, now=self.clock.now())
            self._count("alertmanager-forward", result)

    def _count(self, key: str, r: DeliveryResult) -> None:
        # One count per integration delivery (a notification, or one batch of unrouted alerts).
        c = self._counters.setdefault(key, {"sent": 0, "failed": 0, "retried": 0, "skipped": 0})
        c[str(r.outcome)] += 1
        c["retried"] += r.retried

    async def _save(self) -> None:
        try:
            await self.store.state_put(STATE_NAMESPACE, STATE_KEY, self.dispatcher.to_dict())
            self._saved_at = self.clock.now()
        except StoreError:
            logger.exception("alertmanager: could not save dispatcher state")


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class AlertManager:
    """The Ray actor around :class:`AlertManagerBody` (options as there). Ray restarts it by
    running this constructor again, which starts the body at once: pending notifications resume
    without waiting for a call."""

    def __init__(self, settings: OperateSettings, **options: Any) -> None:
        self.body = AlertManagerBody(settings, **options)
        self.body.start_when_restarted()

    async def ensure_started(self) -> None:
        await self.body.ensure_started()

    async def start(self) -> None:
        await self.body.ensure_started()

    async def stop(self) -> None:
        await self.body.stop()

    async def ingest(self, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.body.ingest(alerts)

    async def note_event(self, event: dict[str, Any]) -> None:
        await self.body.note_event(event)

    async def add_silence(self, silence: dict[str, Any]) -> str:
        return await self.body.add_silence(silence)

    async def status(self) -> dict[str, Any]:
        return await self.body.status()


def alertmanager_actor(settings: OperateSettings, **options: Any) -> Any:
    """The cluster's AlertManager (named ``sfa-alertmanager-{cluster}`` in ``settings.namespace``),
    created if it does not exist yet; ``options`` go to the constructor."""
    return AlertManager.options(  # type: ignore[attr-defined]
        name=settings.actor_name("alertmanager"), namespace=settings.namespace, get_if_exists=True,
    ).remote(settings, **options)
