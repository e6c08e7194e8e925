"""AuditWriter actor (seed: AuditLogger): the hash-chained audit trail and the compliance checks.

Inputs: ``calls(events)`` — compact observed-call records from the observers (``ts``, ``service``,
``method``, ``userId``, ``sessionId``, ``correlationId``, ``durationMs``, ``code``,
``ipAddress``, ``userAgent``, raw ``params``); and, subscribed here, ``audit/+/data-access``,
``security/auth/+`` and ``security/authz/+`` (what the security analyst sees, recorded so the
reports can read it); ``audit/+/data-subject`` (GDPR data-subject requests, received then
completed or rejected: ``policies.compliance.data_subject``, the time to answer measured against a bounded
memo of open requests); and ``system/{cluster}/security/actions/active`` (the responder's active set:
a call by a user or from an address under ``enhanced_logging`` keeps its full, still redacted,
parameters until the action ends). Each becomes a sanitized audit event in the shared schema
(``policies.audit.events``, ``policies.audit.schema``); each data access is also checked (``ComplianceTracker``): a violation becomes an alert (regulation named),
an audit event and a ``compliance_violations`` state entry.

Events wait in a bounded in-memory batch and are appended every ``audit_flush_s`` through a
``BufferedStore``: while the store is down they queue there (bounded too); whatever does not fit
is counted, alerted (one ``AuditEventsLost`` per flush, with the running total) and, once the
store is back, recorded as an ``audit_loss`` event. At most ``MAX_PENDING_VIOLATIONS`` violation
alerts wait for a flush (more are audited but counted as ``violations_unalerted``). Nothing else
stops. Every ``audit_purge_s`` events past their chain's retention are purged, and each purge is itself audited (``audit_purge`` in the meta chain).
Every ``audit_anchor_s`` and at shutdown an anchor (each chain's head and row count,
``policies.audit.anchors``) is published retained on ``system/{cluster}/audit/anchor`` and appended
to ``audit_anchor_file``; an anchor that cannot be taken or written is counted and logged.
Nothing from a payload is ever logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, TypeVar

import ray
from pydantic import BaseModel, ValidationError

from actors.audit_trail import AuditTrail
from actors.chassis import Chassis
from actors.clock import Clock, SystemClock
from actors.loops import run_every
from actors.security_common import (
    Outlet,
    SecurityOptions,
    active_actions_topic,
)
from actors.settings import OperateSettings
from adapters.mqtt.bus import Message, MqttBus
from adapters.store import Store, StoreError, open_store
from adapters.store.audit_anchor_file import append_anchor
from adapters.store.buffer import BufferedStore
from policies.audit.anchors import build_anchor
from policies.compliance.classification import load_compliance_policy
from policies.response.monitoring_watch import active_targets
from protocol import parse_model, topics
from protocol import security as wire
from protocol.system import AuditChainAnchor

logger = logging.getLogger("sfa_ops.audit")
_M = TypeVar("_M", bound=BaseModel)

__all__ = ["AuditWriter", "AuditWriterBody"]


class AuditWriterBody(Chassis):
    """The actor's body (also usable in-process); ``AuditWriter`` is the Ray actor. ``store``
    (wrapped in a ``BufferedStore``) and ``bus`` default to the real ones."""

    what = "audit writer"

    def __init__(self, settings: OperateSettings, options: SecurityOptions | None = None, *,
                 supervisor: Any = None, clock: Clock | None = None, store: Store | None = None,
                 bus: MqttBus | None = None) -> None:
        logging.basicConfig(level=logging.INFO)
        self.settings = settings
        self.options = options or SecurityOptions()
        self.cluster = settings.cluster_id
        self.clock: Clock = clock or SystemClock()
        key = settings.audit_key.encode() if settings.audit_key else None
        self.store = BufferedStore(inner=store or open_store(settings.store_url, audit_key=key),
                                   max_queued=self.options.store_max_queued, on_drop=self._dropped)
        self.trail = AuditTrail(store=self.store, policy=load_compliance_policy(settings.policies_dir),
                                cluster=self.cluster, max_pending=self.options.audit_max_pending, clock=self.clock)
        self.bus = bus or MqttBus(config=settings.mqtt_config(), client_id=f"audit-{self.cluster}",
                                  incoming_queue_size=self.options.incoming_queue_size)
        self.outlet = Outlet(cluster=self.cluster, store=self.store, bus=self.bus, supervisor=supervisor)
        self._loops: list[asyncio.Task[None]] = []
        self._last_anchored: list[AuditChainAnchor] | None = None

    def _dropped(self, kind: str, n: int) -> None:
        if kind == "audit":
            self.trail.lose(n, "store unavailable and its queue full")

    async def start(self) -> dict[str, Any]:
        """Idempotent: open the store, subscribe, start the flush, purge and anchor loops."""
        await self.ensure_started()
        return await self.stats()

    async def _start(self) -> None:
        await self.store.open()
        q = self.options.subscribe_qos
        await self.bus.subscribe(topics.DATA_ACCESS_FILTER, self._on_data_access, qos=q)
        await self.bus.subscribe(topics.DATA_SUBJECT_FILTER, self._on_data_subject, qos=q)
        await self.bus.subscribe(topics.AUTH_FILTER, self._on_auth, qos=q)
        await self.bus.subscribe(topics.AUTHZ_FILTER, self._on_authz, qos=q)
        await self.bus.subscribe(active_actions_topic(self.cluster), self._on_active_actions, qos=q)
        await self.bus.start()
        await self.bus.wait_connected(30)
        o = self.options
        self._loops = [
            asyncio.create_task(run_every(o.audit_flush_s, self.flush, name="audit-flush", logger=logger)),
            asyncio.create_task(run_every(o.audit_purge_s, self._purge_step, name="audit-purge", logger=logger)),
        ]
        if self.settings.audit_anchor_s > 0:
            self._loops.append(asyncio.create_task(run_every(
                self.settings.audit_anchor_s, self._anchor_step, name="audit-anchor", logger=logger)))

    async def stop(self) -> None:
        for t in self._loops:
            t.cancel()
        await self.flush()
        if self.started:
            await self.store.drain(2.0)
            await self.anchor(wait=2.0)
        await self.outlet.flush(2.0)
        await self.bus.stop()
        await self.store.close()

    def _service_event(self, msg: Message, model: type[_M]) -> tuple[str, _M] | None:
        """The service of ``audit/{Service}/…`` and the parsed event; None (counted) if malformed."""
        parsed = topics.parse(msg.topic)
        try:
            m = parse_model(model, msg.payload)
        except (ValidationError, ValueError):
            m = None
        if parsed is None or m is None:
            self.trail.counts["malformed"] += 1
            return None
        return parsed["service"], m

    def _on_data_access(self, msg: Message) -> None:
        if (got := self._service_event(msg, wire.DataAccessEvent)) is not None:
            self.trail.data_access(*got)

    def _on_data_subject(self, msg: Message) -> None:
        if (got := self._service_event(msg, wire.DataSubjectRequest)) is not None:
            self.trail.data_subject(*got)

    def _on_active_actions(self, msg: Message) -> None:
        """The responder's active set: whose calls to record in full (``enhanced_logging``)."""
        try:
            m = parse_model(wire.ActiveActions, msg.payload)
        except (ValidationError, ValueError):
            self.trail.counts["malformed"] += 1
            return
        self.trail.enhanced = active_targets(m.actions, "enhanced_logging", self.clock.now())

    def _on_auth(self, msg: Message) -> None:
        try:
            m = parse_model(wire.AuthEvent, msg.payload)
        except (ValidationError, ValueError):
            self.trail.counts["malformed"] += 1
            return
        self.trail.auth(m)

    def _on_authz(self, msg: Message) -> None:
        try:
            m = parse_model(wire.AuthzEvent, msg.payload)
        except (ValidationError, ValueError):
            self.trail.counts["malformed"] += 1
            return
        self.trail.authz(m)

    async def calls(self, events: list[dict[str, Any]]) -> None:
        """Observed calls from the observers (see the module docstring for the fields)."""
        self.trail.calls(events)

    async def flush(self) -> None:
        try:
            await self.trail.flush()
        except StoreError as exc:  # a refused batch (not an outage: that is buffered)
            logger.error("audit batch refused by the store: %s", exc)
        alerts, self.trail.alerts = self.trail.alerts, []
        await self.outlet.alert(alerts)

    async def _purge_step(self) -> None:
        started = time.monotonic()
        done = await self.trail.purge()
        if done:
            logger.info("audit retention purge: %d rows in %.2fs", sum(d["deleted"] for d in done),
                        time.monotonic() - started)

    async def purge(self) -> list[dict[str, Any]]:
        """Run the retention purge now; the purge events written."""
        await self.start()
        await self.flush()
        return await self.trail.purge()

    async def _anchor_step(self) -> None:
        await self.anchor()

    async def anchor(self, wait: float = 0.0) -> dict[str, Any] | None:
        """Take an anchor of the chains, append it to the anchor file and publish it (retained);
        ``wait``: seconds to wait for the broker's ack. The anchor published, or None."""
        try:
            msg = build_anchor(await self.store.audit_heads(), self.cluster, self.clock.now())
        except (StoreError, ValueError) as exc:  # store down; a head the model refuses
            self.trail.counts["anchor_failed"] += 1
            logger.warning("audit anchor skipped: %s", exc)
            return None
        if self.settings.audit_anchor_file and msg.chains != self._last_anchored:  # unchanged: not again
            try:
                await asyncio.to_thread(append_anchor, self.settings.audit_anchor_file, msg)
                self._last_anchored = msg.chains
            except OSError as exc:
                self.trail.counts["anchor_failed"] += 1
                logger.error("audit anchor not written to %s: %s", self.settings.audit_anchor_file, exc.strerror)
        delivery = self.bus.publish_nowait(topics.audit_anchor(self.cluster), msg.to_wire(), qos=1, retain=True)
        if wait:
            await delivery.wait(wait)
        self.trail.counts["anchors"] += 1
        return msg.to_wire()

    async def stats(self) -> dict[str, Any]:
        s = self.store.stats()
        return {"counts": dict(self.trail.counts), "pending": len(self.trail.pending),
                "store": {"available": s.available, "queued": s.queued, "dropped": s.dropped},
                "violationsSuppressed": self.trail.tracker.repeats,
                "dataSubjectRequests": {**self.trail.requests.counts, "open": len(self.trail.requests)}}


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class AuditWriter:
    """The Ray actor: an :class:`AuditWriterBody`, whole again after Ray restarted it."""

    def __init__(self, settings: OperateSettings, options: SecurityOptions | None = None, *,
                 supervisor: Any = None) -> None:
        self.body = AuditWriterBody(settings, options, supervisor=supervisor)
        self.body.start_when_restarted()

    async def ensure_started(self) -> None:
        await self.body.ensure_started()

    async def start(self) -> dict[str, Any]:
        return await self.body.start()

    async def stop(self) -> None:
        await self.body.stop()

    async def calls(self, events: list[dict[str, Any]]) -> None:
        await self.body.calls(events)

    async def flush(self) -> None:
        await self.body.flush()

    async def purge(self) -> list[dict[str, Any]]:
        return await self.body.purge()

    async def anchor(self, wait: float = 0.0) -> dict[str, Any] | None:
        return await self.body.anchor(wait)

    async def stats(self) -> dict[str, Any]:
        return await self.body.stats()
