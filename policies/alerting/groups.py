"""The dispatcher: alerts in, notifications out, as a deterministic state machine (no clock, no I/O).

Use from an actor::

    d = Dispatcher(policy=load_alerting_policy())
    d.ingest(alerts, now)                   # route, group, merge
    for n in d.due(now):                    # groups whose tick has come and need a notification
        if deliver(n): d.mark_delivered(n, now)   # only a confirmed delivery is logged
    state = d.to_dict()                     # persist; Dispatcher.from_dict(state, policy=…) restores

Timing is Alertmanager's aggregation group (dispatch/group.go): a new group waits ``group_wait``
(flushes at once when its alert started more than ``group_wait`` ago and the group never flushed),
then ticks every ``group_interval``; at each tick the notification log decides (alert_nflog).
Resolved alerts leave a group once a flush about them succeeded; an undelivered notification
is simply decided again at the next tick (Alertmanager ``flush``; STYLE.md 6). Call ``due`` again
only after the previous batch was delivered or failed, or a slow delivery is sent twice.

Muting at a tick: silences and inhibition remove single alerts from what a receiver sees; a
route's mute/active time intervals hold its whole group. Deliberate difference: while a group is
held by a time interval its resolved alerts are kept, so the resolution is still sent when the
interval ends (Alertmanager drops them, leaving e.g. a PagerDuty incident open).

Bounds (hostile input must not grow memory without limit): an alert that arrives without
``endsAt`` ends ``policy.resolve_timeout`` after it was last received; at most ``max_alerts``
alerts are held (a new one beyond that is refused and counted); at most ``max_groups`` groups
exist — an alert that would open another goes to its route's one *overflow group* (group labels
``{overflow="groups"}``), so it is still notified, and is counted.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from policies.alerting.model import Alert, Silence
from policies.alerting.nflog import LogEntry, needs_update
from policies.alerting.notification import DispatchStatus, IngestResult, Notification
from policies.alerting.routing import AlertingPolicy, Inhibitor, Route

__all__ = ["Dispatcher"]

STATE_VERSION = 1
#: How long a log entry outlives its group (Alertmanager's default ``--data.retention``).
DEFAULT_LOG_RETENTION = 120 * 3600.0
DEFAULT_MAX_ALERTS = 10_000
DEFAULT_MAX_GROUPS = 1_000
OVERFLOW_LABELS = {"overflow": "groups"}


def _sorted(alerts: Iterable[Alert]) -> tuple[Alert, ...]:
    return tuple(sorted(alerts, key=lambda a: sorted(a.labels.items())))


@dataclass
class _Group:
    route: Route
    labels: dict[str, str]
    key: str
    next_at: float
    flushed: bool = False
    alerts: dict[str, Alert] = field(default_factory=dict)


class Dispatcher:
    """Routing, grouping, muting and the notification log for one alerting policy."""

    def __init__(
        self, *, policy: AlertingPolicy, log_retention: float = DEFAULT_LOG_RETENTION,
        max_alerts: int = DEFAULT_MAX_ALERTS, max_groups: int = DEFAULT_MAX_GROUPS,
    ) -> None:
        self.policy = policy
        self.log_retention = log_retention
        self.max_alerts, self.max_groups = max_alerts, max_groups
        self.alerts_refused = self.groups_overflowed = 0
        self._routes = policy.routes_by_id()
        self._groups: dict[tuple[str, str], _Group] = {}
        self._alerts: dict[str, Alert] = {}  # latest version of every known alert (inhibition sources)
        self._unrouted: set[str] = set()
        self._log: dict[tuple[str, str], LogEntry] = {}
        self._silences: dict[str, Silence] = {}
        self._last_now = 0.0

    # -- input -------------------------------------------------------------------------------------

    def ingest(self, alerts: Iterable[Alert], now: float) -> IngestResult:
        """Merge alerts into the store and their groups (same fingerprint = same alert)."""
        self._last_now = max(self._last_now, now)
        accepted = unrouted = new_groups = refused = 0
        overflowed_before = self.groups_overflowed
        for alert in alerts:
            alert = self.policy.timed(alert, now)
            fp = alert.fingerprint
            old = self._alerts.get(fp)
            if old is None and len(self._alerts) >= self.max_alerts:
                refused += 1
                continue
            accepted += 1
            # Overlapping activity is the same incident: keep when it began (Alertmanager Merge).
            if old is not None and not old.resolved(alert.starts_at) and old.starts_at < alert.starts_at:
                alert = replace(alert, starts_at=old.starts_at)
            self._alerts[fp] = alert
            routes = [r for r in self.policy.root.match(alert.labels) if r.opts.receiver is not None]
            if not routes:
                unrouted += 1
                self._unrouted.add(fp)
                continue
            self._unrouted.discard(fp)
            for route in routes:
                new_groups += self._insert(route, alert, now)
        self.alerts_refused += refused
        return IngestResult(accepted=accepted, unrouted=unrouted, new_groups=new_groups, refused=refused,
                            overflowed=self.groups_overflowed - overflowed_before)

    def _insert(self, route: Route, alert: Alert, now: float) -> int:
        labels = route.group_labels(alert.labels)
        key = route.group_key(labels)
        group = self._groups.get((route.id, key))
        if group is None and len(self._groups) >= self.max_groups:
            self.groups_overflowed += 1
            labels = dict(OVERFLOW_LABELS)
            key = route.group_key(labels)
            group = self._groups.get((route.id, key))
        created = group is None
        if group is None:
            group = _Group(route=route, labels=labels, key=key, next_at=now + route.opts.group_wait)
            self._groups[(route.id, key)] = group
        group.alerts[alert.fingerprint] = alert
        if not group.flushed and alert.starts_at + route.opts.group_wait < now:
            group.next_at = min(group.next_at, now)  # waited long enough already
        return int(created)

    def add_silence(self, silence: Silence) -> Silence:
        """Add or replace a silence; one without an id gets a stable id derived from its content."""
        if not silence.id:
            digest = hashlib.sha256(repr(silence).encode()).hexdigest()[:16]
            silence = replace(silence, id=digest)
        self._silences[silence.id] = silence
        return silence

    def expire_silence(self, silence_id: str, now: float) -> bool:
        """End a silence at ``now``; False if it is unknown."""
        s = self._silences.get(silence_id)
        if s is None:
            return False
        self._silences[silence_id] = replace(s, ends_at=min(s.ends_at, max(now, s.starts_at)))
        return True

    def alerts(self) -> tuple[Alert, ...]:
        """The latest version of every alert known (firing, and resolved ones not yet collected)."""
        return tuple(self._alerts.values())

    @property
    def silences(self) -> tuple[Silence, ...]:
        """All silences, active or not, in id order."""
        return tuple(self._silences[k] for k in sorted(self._silences))

    # -- ticks -------------------------------------------------------------------------------------

    def next_due(self) -> float | None:
        """The earliest tick of any group (so a loop can sleep until then), or None."""
        return min((g.next_at for g in self._groups.values()), default=None)

    def due(self, now: float) -> list[Notification]:
        """Flush every group whose tick has come; return the notifications to deliver now."""
        self._last_now = max(self._last_now, now)
        due = [g for g in self._groups.values() if g.next_at <= now]
        out: list[Notification] = []
        if due:
            inhibitor = Inhibitor.build(self.policy.inhibit_rules, self._alerts.values(), now)
            for group in sorted(due, key=lambda g: (g.next_at, g.key, g.route.id)):
                n = self._flush(group, now, inhibitor)
                if n is not None:
                    out.append(n)
        self._collect(now)
        return out

    def _flush(self, group: _Group, now: float, inhibitor: Inhibitor) -> Notification | None:
        route, interval = group.route, group.route.opts.group_interval
        # A caller that missed ticks catches up to the latest tick of the group's grid, so the
        # logged send time (and with it the repeat schedule) is never earlier than reality.
        tick = group.next_at + interval * math.floor((now - group.next_at) / interval)
        group.next_at = tick + interval
        group.flushed = True
        if route.time_muted(self.policy.time_intervals, now):
            return None
        firing: list[Alert] = []
        resolved: list[Alert] = []
        muted = 0
        for a in group.alerts.values():
            if self._muted_by_silence(a, now) or inhibitor.inhibited(a):
                muted += 1
            elif a.resolved(now):
                resolved.append(a)
            else:
                firing.append(a)
        assert route.opts.receiver is not None
        receiver = self.policy.receivers[route.opts.receiver]
        log_key = (group.key, receiver.name)
        reason = needs_update(
            self._log.get(log_key),
            {a.fingerprint for a in firing},
            {a.fingerprint for a in resolved},
            send_resolved=receiver.send_resolved,
            repeat_interval=route.opts.repeat_interval,
            tick=tick,
        )
        if reason is not None and (firing or receiver.send_resolved) and receiver.integrations:
            return Notification(
                receiver=receiver.name,
                group_key=group.key,
                route_id=route.id,
                group_labels=dict(group.labels),
                firing=_sorted(firing),
                resolved=_sorted(resolved),
                due_at=tick,
                flushed_at=now,
                reason=reason,
                muted=muted,
            )
        if reason is not None:
            # Nobody can be shown this (only resolved alerts and no send_resolved, or a receiver
            # without integrations): record it as Alertmanager does so the entry stays truthful.
            self._log[log_key] = LogEntry(
                firing=frozenset(a.fingerprint for a in firing),
                resolved=frozenset(a.fingerprint for a in resolved),
                sent_at=tick,
                delivered_at=now,
            )
        self._drop_resolved(group, now)
        return None

    def mark_delivered(self, notification: Notification, now: float) -> None:
        """Record a confirmed delivery; only then do its resolved alerts leave the group."""
        self._last_now = max(self._last_now, now)
        log_key = (notification.group_key, notification.receiver)
        old = self._log.get(log_key)
        if old is not None and old.sent_at > notification.due_at:
            return  # a later notification of this group was already confirmed
        self._log[log_key] = LogEntry(
            firing=frozenset(a.fingerprint for a in notification.firing),
            resolved=frozenset(a.fingerprint for a in notification.resolved),
            sent_at=notification.due_at,
            delivered_at=now,
        )
        group = self._groups.get((notification.route_id, notification.group_key))
        if group is not None:
            self._drop_resolved(group, notification.flushed_at)

    def _drop_resolved(self, group: _Group, at: float) -> None:
        # An alert that fired again since `at` was replaced by a newer version and is kept.
        for fp in [fp for fp, a in group.alerts.items() if a.resolved(at)]:
            del group.alerts[fp]
        if not group.alerts:
            self._groups.pop((group.route.id, group.key), None)

    def _collect(self, now: float) -> None:
        live = {g.key for g in self._groups.values()}
        for key in [k for k, e in self._log.items() if k[0] not in live]:
            if now - self._log[key].sent_at > self.log_retention:
                del self._log[key]
        for fp in [fp for fp, a in self._alerts.items() if a.resolved(now)]:
            del self._alerts[fp]
            self._unrouted.discard(fp)
        for sid in [sid for sid, s in self._silences.items() if now - s.ends_at > self.log_retention]:
            del self._silences[sid]

    # -- muting and status -------------------------------------------------------------------------

    def _muted_by_silence(self, alert: Alert, now: float) -> bool:
        return any(s.mutes(alert.labels, now) for s in self._silences.values())

    def status(self, now: float) -> DispatchStatus:
        """Current counts: firing alerts, how many are muted by silences/inhibition, held groups."""
        firing = [a for a in self._alerts.values() if not a.resolved(now)]
        inhibitor = Inhibitor.build(self.policy.inhibit_rules, firing, now)
        silenced = sum(1 for a in firing if self._muted_by_silence(a, now))
        inhibited = sum(1 for a in firing if not self._muted_by_silence(a, now) and inhibitor.inhibited(a))
        held = sum(1 for g in self._groups.values() if g.route.time_muted(self.policy.time_intervals, now))
        return DispatchStatus(
            groups=len(self._groups),
            firing=len(firing),
            unrouted=sum(
                1 for fp in self._unrouted if fp in self._alerts and not self._alerts[fp].resolved(now)
            ),
            silenced=silenced,
            inhibited=inhibited,
            time_muted_groups=held,
            log_entries=len(self._log),
            silences_active=sum(1 for s in self._silences.values() if s.active(now)),
            alerts_refused=self.alerts_refused,
            groups_overflowed=self.groups_overflowed,
        )

    # -- persistence -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe state: groups, notification log, alerts and silences."""
        return {
            "version": STATE_VERSION,
            "savedAt": self._last_now,
            "alerts": [a.to_dict() for a in self._alerts.values()],
            "unrouted": sorted(self._unrouted),
            "groups": [
                {
                    "routeId": g.route.id,
                    "groupKey": g.key,
                    "labels": dict(g.labels),
                    "nextAt": g.next_at,
                    "flushed": g.flushed,
                    "alerts": [a.to_dict() for a in g.alerts.values()],
                }
                for g in self._groups.values()
            ],
            "log": [{"groupKey": k[0], "receiver": k[1], **e.to_dict()} for k, e in self._log.items()],
            "silences": [
                {**s.to_dict(), "startsAt": s.starts_at, "endsAt": s.ends_at} for s in self.silences
            ],
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, policy: AlertingPolicy, log_retention: float = DEFAULT_LOG_RETENTION,
        max_alerts: int = DEFAULT_MAX_ALERTS, max_groups: int = DEFAULT_MAX_GROUPS,
    ) -> Dispatcher:
        """Restore state saved by :meth:`to_dict`, under a possibly changed policy.

        Groups whose route still exists keep their timing; alerts of groups whose route is gone
        are routed afresh (as if received when the state was saved).
        """
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"dispatcher state version {data.get('version')!r}, expected {STATE_VERSION}")
        d = cls(policy=policy, log_retention=log_retention, max_alerts=max_alerts, max_groups=max_groups)
        saved_at = float(data.get("savedAt", 0.0))
        d._last_now = saved_at
        d._alerts = {a.fingerprint: a for a in (Alert.from_dict(raw) for raw in data.get("alerts", []))}
        d._unrouted = set(data.get("unrouted", []))
        orphans: list[Alert] = []
        for raw in data.get("groups", []):
            alerts = [Alert.from_dict(a) for a in raw.get("alerts", [])]
            route = d._routes.get(raw["routeId"])
            labels = {str(k): str(v) for k, v in raw.get("labels", {}).items()}
            if route is None or route.opts.receiver is None or route.group_key(labels) != raw["groupKey"]:
                orphans.extend(alerts)
                continue
            g = _Group(route=route, labels=labels, key=raw["groupKey"], next_at=float(raw["nextAt"]))
            g.flushed = bool(raw.get("flushed"))
            g.alerts = {a.fingerprint: a for a in alerts}
            d._groups[(route.id, g.key)] = g
        for raw in data.get("log", []):
            d._log[(raw["groupKey"], raw["receiver"])] = LogEntry.from_dict(raw)
        for raw in data.get("silences", []):
            s = Silence.from_dict(raw)
            d._silences[s.id] = s
        for alert in orphans:
            for route in (r for r in policy.root.match(alert.labels) if r.opts.receiver is not None):
                d._insert(route, alert, saved_at)
        return d
