"""The audit writer's trail (``AuditWriterBody`` holds one): turns what the writer receives into
sanitized audit events in the shared schema, batches them (bounded), appends them through the
buffered store, checks data access for compliance violations and purges past retention. It owns
no connection of its own; the writer's loops drive it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from actors.clock import Clock, SystemClock
from actors.security_common import (
    plain_alert,
)
from adapters.store import StoreError
from adapters.store.buffer import BufferedStore
from policies.audit.events import (
    ComplianceTracker,
    auth_event,
    authz_event,
    call_event,
    data_access_event,
    enhanced_redaction,
    loss_event,
    purge_event,
    purge_plan,
    retention_chains,
    violation_alert,
    violation_record,
)
from policies.compliance.classification import CompliancePolicy, DataAccess
from policies.compliance.data_subject import RequestMemo, record_request
from protocol import security as wire

logger = logging.getLogger("sfa_ops.audit")

VIOLATIONS = "compliance_violations"
MAX_PENDING_VIOLATIONS = 1_000
"""Violation alerts and state entries waiting for the next flush; beyond that a violation is
still audited (in the batch) but counted as ``violations_unalerted`` instead."""


class AuditTrail:
    """The in-process part: build, batch, append, purge; owns no connection of its own."""

    def __init__(self, *, store: BufferedStore, policy: CompliancePolicy, cluster: str, max_pending: int = 10_000,
                 clock: Clock | None = None) -> None:
        self.store = store
        self.policy = policy
        self.cluster = cluster
        self.clock: Clock = clock or SystemClock()
        self.tracker = ComplianceTracker(policy=policy)
        self.max_pending = max_pending
        self.pending: list[dict[str, Any]] = []
        self.counts = dict.fromkeys(("calls", "data_access", "data_subject", "auth", "authz", "violations",
                                     "appended", "lost",
                                     "purged", "malformed", "enhanced", "anchors", "anchor_failed",
                                     "violations_unalerted"), 0)
        self.enhanced: dict[str, float | None] = {}
        """Users and addresses under ``enhanced_logging``, with the action's expiry."""
        self.enhanced_policy = enhanced_redaction(policy.redaction)
        self.requests = RequestMemo()
        """Open data-subject requests: when each was received."""
        self._lost_unrecorded = 0
        self._loss_alert: dict[str, Any] | None = None
        self.alerts: list[dict[str, Any]] = []
        self.violation_entries: list[dict[str, Any]] = []

    def _enqueue(self, event: dict[str, Any]) -> None:
        if len(self.pending) >= self.max_pending:
            self.lose(1, "audit batch full")
            return
        self.pending.append(event)

    def lose(self, n: int, reason: str) -> None:
        """Count ``n`` events lost, alert, and remember to record the loss once the store is back.
        One AuditEventsLost alert (and log line) per flush interval, carrying the running total."""
        self.counts["lost"] += n
        self._lost_unrecorded += n
        alert = plain_alert("AuditEventsLost", "critical", self.cluster, self.clock.now(),
                            f"{self.counts['lost']} audit events lost so far ({reason})")
        if self._loss_alert is not None and self._loss_alert in self.alerts:
            self.alerts[self.alerts.index(self._loss_alert)] = alert
        else:
            logger.error("audit: %d event(s) lost (%s); %d in total", n, reason, self.counts["lost"])
            self.alerts.append(alert)
        self._loss_alert = alert

    def _is_enhanced(self, record: Mapping[str, Any], now: float) -> bool:
        for key in ("userId", "ipAddress"):
            v = record.get(key)
            if isinstance(v, str) and v in self.enhanced:
                until = self.enhanced[v]
                if until is None or until > now:
                    return True
        return False

    def calls(self, records: Sequence[Mapping[str, Any]]) -> None:
        now = self.clock.now()
        for r in records:
            try:
                enhanced = bool(self.enhanced) and self._is_enhanced(r, now)
                self._enqueue(call_event(r, self.policy, now, enhanced=self.enhanced_policy if enhanced else None))
                self.counts["calls"] += 1
                self.counts["enhanced"] += enhanced
            except (TypeError, ValueError, AttributeError):
                self.counts["malformed"] += 1

    def auth(self, m: wire.AuthEvent) -> None:
        self._enqueue(auth_event(user_id=m.user_id, ip_address=m.ip_address, success=m.success,
                                 timestamp=m.timestamp.timestamp(), method=m.method, user_agent=m.user_agent,
                                 reason=m.reason, policy=self.policy, now=self.clock.now()))
        self.counts["auth"] += 1

    def authz(self, m: wire.AuthzEvent) -> None:
        self._enqueue(authz_event(user_id=m.user_id, service=m.service, method=m.method, allowed=m.allowed,
                                  timestamp=m.timestamp.timestamp(), roles=m.roles, ip_address=m.ip_address,
                                  policy=self.policy, now=self.clock.now()))
        self.counts["authz"] += 1

    def data_access(self, service: str, m: wire.DataAccessEvent) -> None:
        now = self.clock.now()
        access = DataAccess(user_id=m.user_id, roles=frozenset(m.roles), service=service, collection=m.collection,
                            operation=m.operation, record_count=m.records, timestamp=m.timestamp.timestamp())
        self._enqueue(data_access_event(access, m.record_ids, self.policy, now))
        self.counts["data_access"] += 1
        for v in self.tracker.observe(access, now):
            self.counts["violations"] += 1
            record = violation_record(v, now)
            self._enqueue(record)
            if len(self.violation_entries) >= MAX_PENDING_VIOLATIONS:
                self.counts["violations_unalerted"] += 1
                continue
            self.alerts.append(violation_alert(v, self.cluster, now))
            self.violation_entries.append(record)

    def data_subject(self, service: str, m: wire.DataSubjectRequest) -> None:
        self._enqueue(record_request(
            self.requests, service=service, request_id=m.request_id, user_id=m.user_id,
            request_type=m.request_type, status=m.status, timestamp=m.timestamp.timestamp(),
            received_at=None if m.received_at is None else m.received_at.timestamp(), reason=m.reason,
            policy=self.policy, now=self.clock.now()))
        self.counts["data_subject"] += 1

    async def flush(self) -> int:
        """Append the batch (through the buffered store); returns how many were handed over."""
        batch, self.pending = self.pending, []
        entries, self.violation_entries = self.violation_entries, []
        if self._lost_unrecorded and self.store.stats().available:
            batch.append(loss_event(self._lost_unrecorded, "store unavailable or batch full", self.clock.now()))
            self._lost_unrecorded = 0
        for e in entries:
            await self.store.state_put(VIOLATIONS, f"{e['ts']:.6f}-{e['type']}-{e['userId']}", e)
        if batch:
            await self.store.audit_append(batch)
            self.counts["appended"] += len(batch)
        return len(batch)

    async def purge(self) -> list[dict[str, Any]]:
        """Purge every retention chain; each purge that deleted rows is audited."""
        now = self.clock.now()
        done: list[dict[str, Any]] = []
        for chain, before in purge_plan(retention_chains(self.policy), now):
            try:
                n = await self.store.audit_purge(before, chain)
            except StoreError as exc:
                logger.warning("audit purge of %s skipped: %s", chain, exc)
                continue
            if n:
                self.counts["purged"] += n
                done.append(purge_event(chain, before, n, now))
        if done:
            await self.store.audit_append(done)
        return done
