"""Forwarding alerts to Alertmanager as its clients must (pure: ``now`` is passed in, no I/O).

Alertmanager's API v2 contract for clients (what Prometheus' notifier does): an alert is *active*
only while a client keeps posting it. Every post carries ``endsAt``; an alert posted without one
is given ``now + resolve_timeout`` (5 m by default) and resolves then. So a client re-sends every
active alert every ``resend_interval`` with ``endsAt`` a few intervals ahead (Prometheus: 4 x the
resend interval), and posts ``endsAt`` = the time it ended once the alert is over. This is
independent of any grouping or notification timers: sfa-ops' own groups may repeat every 4 h,
while Alertmanager must hear about each active alert every minute.

Use from an actor::

    fwd = Forwarding(targets=[ForwardTarget(url="http://am:9093")])
    fwd.observe(alerts, routes_of, now)       # every ingested alert (routes_of: its receivers)
    for batch in fwd.due(now):                # what to POST now, to which Alertmanager
        ok = post(batch.url, to_api_v2_alerts(batch.alerts))
        fwd.settle(batch, ok=ok, now=later)   # success schedules the next resend; failure a retry

A target either takes every alert (``--alertmanager URL``) or only the alerts routed to the
receivers that name it (an ``alertmanager`` integration in the routing tree). Silences and
inhibition are Alertmanager's business there: every active alert is forwarded. Each target holds
at most ``max_alerts`` alerts (active, or resolved and not yet told); a new alert beyond that is
refused and counted (``refused``). A resolution, once posted, is forgotten.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from policies.alerting.model import Alert
from policies.alerting.routing import AlertingPolicy
from policies.common.config import parse_duration

__all__ = [
    "DEFAULT_RESEND_INTERVAL",
    "VALID_FOR_INTERVALS",
    "ForwardBatch",
    "ForwardSettings",
    "ForwardStatus",
    "ForwardTarget",
    "Forwarder",
    "Forwarding",
    "forward_targets",
    "receivers_of",
]

#: Prometheus' ``--rules.alert.resend-delay`` default.
DEFAULT_RESEND_INTERVAL = 60.0
#: Prometheus sets ``endsAt`` to now + 4 x max(resend delay, evaluation interval).
VALID_FOR_INTERVALS = 4.0


@dataclass(frozen=True, kw_only=True)
class ForwardSettings:
    """How often and how much is forwarded to one Alertmanager."""

    resend_interval: float = DEFAULT_RESEND_INTERVAL
    valid_for_intervals: float = VALID_FOR_INTERVALS
    retry_interval: float = 5.0  # after a failed post (never later than the next resend)
    batch_size: int = 64  # alerts per POST (Prometheus' notifier default)
    max_alerts: int = 10_000

    def __post_init__(self) -> None:
        if not self.resend_interval > 0 or not math.isfinite(self.resend_interval):
            raise ValueError(f"resend_interval must be a positive number of seconds, got {self.resend_interval!r}")
        if self.valid_for_intervals < 2:
            raise ValueError("valid_for_intervals must be at least 2 (one lost post must not resolve an alert)")
        if self.retry_interval <= 0 or self.batch_size < 1 or self.max_alerts < 1:
            raise ValueError("retry_interval, batch_size and max_alerts must be positive")

    @property
    def valid_for(self) -> float:
        """How far ahead a firing alert's ``endsAt`` is set."""
        return self.valid_for_intervals * self.resend_interval


@dataclass(frozen=True, kw_only=True)
class ForwardTarget:
    """One Alertmanager: its base URL, and the receivers whose alerts it takes (None: all)."""

    url: str
    receivers: frozenset[str] | None = None
    settings: ForwardSettings = field(default_factory=ForwardSettings)

    def wants(self, receivers: frozenset[str]) -> bool:
        """Whether an alert routed to ``receivers`` goes to this Alertmanager."""
        return self.receivers is None or not self.receivers.isdisjoint(receivers)


@dataclass(frozen=True, kw_only=True)
class ForwardBatch:
    """Alerts to POST to ``url`` now, ``ends_at`` already set as Alertmanager must see it."""

    url: str
    alerts: tuple[Alert, ...]
    versions: tuple[tuple[str, int], ...]  # (fingerprint, version) each alert was taken at


@dataclass(frozen=True, kw_only=True)
class ForwardStatus:
    """Counts for one target (status pages, tests)."""

    url: str
    active: int
    resolved_pending: int
    refused: int
    posts_ok: int
    posts_failed: int


@dataclass
class _Entry:
    alert: Alert
    next_at: float
    version: int = 0


class Forwarder:
    """The resend schedule of one Alertmanager target (see the module docstring)."""

    def __init__(self, target: ForwardTarget) -> None:
        self.target = target
        self.s = target.settings
        self._entries: dict[str, _Entry] = {}
        self.refused = self.posts_ok = self.posts_failed = 0

    def observe(self, alert: Alert, now: float) -> bool:
        """Take the newest version of an alert; False if refused because the table is full."""
        fp = alert.fingerprint
        entry = self._entries.get(fp)
        if entry is None:
            if len(self._entries) >= self.s.max_alerts:
                self.refused += 1
                return False
            self._entries[fp] = _Entry(alert=alert, next_at=now)
            return True
        old = entry.alert
        was_active = not old.resolved(now)
        if was_active and old.starts_at < alert.starts_at and not old.resolved(alert.starts_at):
            alert = replace(alert, starts_at=old.starts_at)  # the same incident (Alertmanager Merge)
        entry.alert, entry.version = alert, entry.version + 1
        if alert.resolved(now) == was_active:
            entry.next_at = now  # a status change (resolved, or fired again) is told at once
        return True

    def due(self, now: float) -> list[ForwardBatch]:
        """The posts to make now: alerts whose resend (or first send, or resolution) is due."""
        ready = sorted(
            ((fp, e) for fp, e in self._entries.items() if e.next_at <= now),
            key=lambda item: (item[1].next_at, item[0]),
        )
        out = []
        for i in range(0, len(ready), self.s.batch_size):
            chunk = ready[i : i + self.s.batch_size]
            out.append(ForwardBatch(
                url=self.target.url,
                alerts=tuple(self._postable(e.alert, now) for _, e in chunk),
                versions=tuple((fp, e.version) for fp, e in chunk),
            ))
        return out

    def _postable(self, alert: Alert, now: float) -> Alert:
        if alert.resolved(now):
            return alert  # endsAt: when sfa-ops resolved it (or its own resolve timeout passed)
        horizon = now + self.s.valid_for
        ends = horizon if alert.ends_at is None else min(alert.ends_at, horizon)
        return replace(alert, ends_at=ends)

    def settle(self, batch: ForwardBatch, *, ok: bool, now: float) -> None:
        """Record a post's outcome; alerts that changed meanwhile keep their own (earlier) schedule."""
        if ok:
            self.posts_ok += 1
        else:
            self.posts_failed += 1
        for (fp, version), posted in zip(batch.versions, batch.alerts, strict=True):
            entry = self._entries.get(fp)
            if entry is None or entry.version != version:
                continue
            if not ok:
                entry.next_at = now + min(self.s.retry_interval, self.s.resend_interval)
            elif posted.resolved(now) and entry.alert.resolved(now):
                del self._entries[fp]  # told: Alertmanager keeps it resolved from here
            else:
                entry.next_at = now + self.s.resend_interval

    def status(self, now: float) -> ForwardStatus:
        """Active alerts held, resolutions not yet told, refusals and post outcomes."""
        active = sum(1 for e in self._entries.values() if not e.alert.resolved(now))
        pending = sum(1 for e in self._entries.values() if e.alert.resolved(now))
        return ForwardStatus(url=self.target.url, active=active, resolved_pending=pending, refused=self.refused,
                             posts_ok=self.posts_ok, posts_failed=self.posts_failed)


class Forwarding:
    """All Alertmanager targets; ``observe`` hands each alert to the targets that want it."""

    def __init__(self, *, targets: Iterable[ForwardTarget]) -> None:
        self.forwarders = {t.url: Forwarder(t) for t in targets}

    def __bool__(self) -> bool:
        return bool(self.forwarders)

    def observe(self, alerts: Iterable[Alert], receivers_of: Callable[[Alert], frozenset[str]], now: float) -> int:
        """Take each alert for the targets that want it; returns how many were refused (full)."""
        refused = 0
        for alert in alerts:
            receivers: frozenset[str] | None = None
            for f in self.forwarders.values():
                if f.target.receivers is not None and receivers is None:
                    receivers = receivers_of(alert)
                if f.target.wants(receivers or frozenset()) and not f.observe(alert, now):
                    refused += 1
        return refused

    def due(self, now: float) -> list[ForwardBatch]:
        """Every target's due posts."""
        return [b for f in self.forwarders.values() for b in f.due(now)]

    def settle(self, batch: ForwardBatch, *, ok: bool, now: float) -> None:
        self.forwarders[batch.url].settle(batch, ok=ok, now=now)

    def status(self, now: float) -> list[ForwardStatus]:
        return [f.status(now) for f in self.forwarders.values()]


def receivers_of(policy: AlertingPolicy, alert: Alert) -> frozenset[str]:
    """The receivers the routing tree sends an alert to."""
    return frozenset(r.opts.receiver for r in policy.root.match(alert.labels) if r.opts.receiver is not None)


def forward_targets(
    policy: AlertingPolicy, urls: Iterable[str], settings: ForwardSettings | None = None
) -> list[ForwardTarget]:
    """One target per Alertmanager: each URL in ``urls`` takes every alert; each ``alertmanager``
    integration of the tree takes its receivers' alerts (``resend_interval`` may be set on it)."""
    base = settings or ForwardSettings()
    everything = {u.rstrip("/") for u in urls}
    by_url: dict[str, tuple[set[str], ForwardSettings]] = {}
    for receiver in policy.receivers.values():
        for integ in receiver.integrations:
            url = integ.settings.get("url")
            if integ.type != "alertmanager" or not isinstance(url, str) or not url.strip():
                continue
            url = url.strip().rstrip("/")
            own = base
            if integ.settings.get("resend_interval") is not None:
                try:
                    own = replace(base, resend_interval=parse_duration(integ.settings["resend_interval"]))
                except ValueError as exc:
                    raise ValueError(f"receiver {receiver.name}: alertmanager resend_interval: {exc}") from exc
            by_url.setdefault(url, (set(), own))[0].add(receiver.name)
    targets = [ForwardTarget(url=u, settings=by_url[u][1] if u in by_url else base) for u in sorted(everything)]
    targets += [ForwardTarget(url=u, receivers=frozenset(names), settings=own)
                for u, (names, own) in sorted(by_url.items()) if u not in everything]
    return targets
