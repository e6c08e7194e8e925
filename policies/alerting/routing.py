"""The routing tree and inhibition rules: who should hear about an alert, pure and immutable.

Semantics follow Alertmanager's ``dispatch/route.go`` (STYLE.md 6):

- a node matches when all its matchers hold; matching is depth-first, left to right;
- among a node's children the first match wins, unless that child has ``continue: true``, in which
  case the search goes on to its next siblings;
- if no child matches, the node itself handles the alert;
- children inherit ``receiver``, ``group_by``, ``group_wait``, ``group_interval`` and
  ``repeat_interval`` when they do not set them; ``mute_time_intervals`` and
  ``active_time_intervals`` are *not* inherited (Alertmanager assigns them per node);
- a node's key is its parent's key, ``/``, and its sorted matchers (``{}/{severity="info"}``);
  a group's key is ``route key:group labels`` (``{}/{severity="info"}:{alertname="X"}``).

Inhibition (Alertmanager ``inhibit.go``): a firing *source* alert mutes every *target* alert whose
``equal`` labels have the same values (a label missing on both counts as equal). An alert that
matches both sides is never muted by itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from policies.alerting.matchers import Matcher, format_label_set, matches_all
from policies.alerting.model import Alert
from policies.alerting.receivers import Receiver
from policies.alerting.time_intervals import NamedTimeInterval, any_active

__all__ = [
    "AlertingPolicy",
    "InhibitRule",
    "Inhibitor",
    "Route",
    "RouteOpts",
]

#: Alertmanager's defaults for the root route.
DEFAULT_GROUP_WAIT = 30.0
DEFAULT_GROUP_INTERVAL = 300.0
DEFAULT_REPEAT_INTERVAL = 4 * 3600.0


@dataclass(frozen=True, kw_only=True)
class RouteOpts:
    """The options a route applies to the alerts it handles (after inheritance)."""

    receiver: str | None
    group_by: frozenset[str] = frozenset()
    group_by_all: bool = False
    group_wait: float = DEFAULT_GROUP_WAIT
    group_interval: float = DEFAULT_GROUP_INTERVAL
    repeat_interval: float = DEFAULT_REPEAT_INTERVAL
    mute_time_intervals: tuple[str, ...] = ()
    active_time_intervals: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Route:
    """A compiled routing node. ``id`` is its config path (``route.routes[1]``), unique and stable."""

    id: str
    key: str
    matchers: tuple[Matcher, ...]
    continue_: bool
    opts: RouteOpts
    routes: tuple[Route, ...] = ()

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The nodes that handle an alert with these labels (empty if this node does not match)."""
        if not matches_all(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            hits = child.match(labels)
            found.extend(hits)
            if hits and not child.continue_:
                break
        return found or [self]

    def walk(self) -> Iterator[Route]:
        """This node and all below it, depth first."""
        yield self
        for child in self.routes:
            yield from child.walk()

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The labels that pick the alert's group on this route (only those the alert has)."""
        if self.opts.group_by_all:
            return dict(labels)
        return {k: v for k, v in labels.items() if k in self.opts.group_by}

    def group_key(self, group_labels: Mapping[str, str]) -> str:
        """Alertmanager's group key: ``{route key}:{group labels}``."""
        return f"{self.key}:{format_label_set(group_labels)}"

    def time_muted(self, intervals: Mapping[str, NamedTimeInterval], now: float) -> bool:
        """Whether this route's notifications are held at ``now`` by its time intervals."""
        if self.opts.mute_time_intervals and any_active(self.opts.mute_time_intervals, intervals, now):
            return True
        return bool(self.opts.active_time_intervals) and not any_active(
            self.opts.active_time_intervals, intervals, now
        )


@dataclass(frozen=True, kw_only=True)
class InhibitRule:
    """Firing alerts matching ``source`` mute alerts matching ``target`` with equal ``equal`` labels."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()


@dataclass
class Inhibitor:
    """Inhibition answers for one instant, indexed once over the current firing alerts."""

    rules: tuple[InhibitRule, ...]
    _sources: list[dict[tuple[str, ...], set[str]]] = field(default_factory=list)

    @classmethod
    def build(cls, rules: Iterable[InhibitRule], alerts: Iterable[Alert], now: float) -> Inhibitor:
        """Index the alerts firing at ``now`` that can act as sources, per rule and equal values."""
        inh = cls(rules=tuple(rules))
        firing = [a for a in alerts if not a.resolved(now)]
        for rule in inh.rules:
            index: dict[tuple[str, ...], set[str]] = {}
            for a in firing:
                if matches_all(rule.source, a.labels):
                    key = tuple(a.labels.get(n, "") for n in rule.equal)
                    index.setdefault(key, set()).add(a.fingerprint)
            inh._sources.append(index)
        return inh

    def inhibited(self, alert: Alert) -> bool:
        """Whether any rule mutes this alert."""
        for rule, index in zip(self.rules, self._sources, strict=True):
            if not index or not matches_all(rule.target, alert.labels):
                continue
            sources = index.get(tuple(alert.labels.get(n, "") for n in rule.equal))
            if not sources:
                continue
            if matches_all(rule.source, alert.labels):
                if sources - {alert.fingerprint}:
                    return True
            else:
                return True
        return False


#: sfa-ops' own producers re-send the conditions they hold this often (policies/alerting/rules.py), so
#: a resolve timeout must span a few of these or held alerts would flap.
HELD_ALERT_REFRESH_S = 60.0
MIN_RESOLVE_TIMEOUT = 3 * HELD_ALERT_REFRESH_S
DEFAULT_RESOLVE_TIMEOUT = 3600.0


@dataclass(frozen=True, kw_only=True)
class AlertingPolicy:
    """A validated alerting configuration: the tree, receivers, inhibition and time intervals."""

    root: Route
    receivers: Mapping[str, Receiver]
    inhibit_rules: tuple[InhibitRule, ...] = ()
    time_intervals: Mapping[str, NamedTimeInterval] = field(default_factory=dict)
    source: str = "<string>"
    resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT
    """An alert that arrives without ``endsAt`` ends this long after it was last received
    (Alertmanager's ``global.resolve_timeout``): nothing stays firing because nobody resolved it."""

    def timed(self, alert: Alert, now: float) -> Alert:
        """The alert with ``endsAt`` = ``now`` + resolve timeout if it came without one."""
        return alert if alert.ends_at is not None else replace(alert, ends_at=now + self.resolve_timeout)

    def routes_by_id(self) -> dict[str, Route]:
        """Every node of the tree by its id."""
        return {r.id: r for r in self.root.walk()}
