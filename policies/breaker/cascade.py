"""Cascading-failure prevention: the dependency graph and the plan of preemptive breaker opens.

Edges point from caller to callee: ``dependencies: {OrderManagement: [UserManagement]}`` means
OrderManagement depends on UserManagement, so when UserManagement fails OrderManagement's breaker
is opened preemptively (seed: ``DependencyCircuitBreakerManager``). Configured edges are merged
with learned ones (the observer sees a call to B made while a call to A with the same
correlationId is pending: A depends on B); a learned edge counts after ``min_observations`` and
is forgotten after ``learned_ttl`` without a sighting.

``plan_cascade`` is Envoy's max-ejection guard applied to breakers: it never lets more than
``max_preemptive_open_percent`` of the known services be open at once, and reports what it held
back. Given ``real_services`` (configured, or announced by an instance), the guard's base counts
only those and the services the dependency policy names: names that appear only in traffic cost
nothing to invent and must not raise the limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from policies.common.config import Duration, Percent, PolicyModel, load_policy
from protocol.base import rfc3339_from_epoch


class DependencyPolicy(PolicyModel):
    """``policies/dependencies.yaml``."""

    dependencies: dict[str, list[str]] = Field(default_factory=dict)
    learn_edges: bool = True
    min_observations: int = Field(default=3, ge=1)
    learned_ttl: Duration = 3600.0
    max_learned_edges: int = Field(default=10_000, ge=1)
    cascade_depth: int = Field(default=2, ge=1)
    max_preemptive_open_percent: Percent = 50.0


def load_dependency_policy(overrides_dir: Path | str | None = None) -> DependencyPolicy:
    """Load ``dependencies.yaml`` (defaults, then the override directory's copy)."""
    return load_policy(DependencyPolicy, "dependencies.yaml", overrides_dir)


class _Learned:
    __slots__ = ("count", "first_seen", "last_seen")

    def __init__(self, now: float) -> None:
        self.count = 0
        self.first_seen = now
        self.last_seen = now


class DependencyGraph:
    """Configured plus learned caller → callee edges. Pure: ``now`` is passed in; memory is bounded
    by ``max_learned_edges`` (overflow drops the least recently seen edge and is counted)."""

    __slots__ = ("_configured", "_learned", "config", "dropped_edges")

    def __init__(self, *, config: DependencyPolicy) -> None:
        self.config = config
        self._configured: dict[str, frozenset[str]] = {
            caller: frozenset(c for c in callees if c != caller)
            for caller, callees in config.dependencies.items()
        }
        self._learned: dict[tuple[str, str], _Learned] = {}
        self.dropped_edges = 0

    def observe_edge(self, caller: str, callee: str, now: float, n: int = 1) -> None:
        """``caller`` was seen calling ``callee`` ``n`` times (learned dependency)."""
        if not self.config.learn_edges or caller == callee or n <= 0:
            return
        key = (caller, callee)
        edge = self._learned.get(key)
        if edge is not None and now - edge.last_seen > self.config.learned_ttl:
            edge = None  # expired: start counting again
        if edge is None:
            if key not in self._learned and len(self._learned) >= self.config.max_learned_edges:
                self._make_room(now)
            edge = self._learned[key] = _Learned(now)
        edge.count += n
        edge.last_seen = max(edge.last_seen, now)

    def observe_edges(self, edges: Mapping[tuple[str, str], int], now: float) -> None:
        """A tick's learned edges from the observer (``policies.observation.correlation`` drains them)."""
        for (caller, callee), n in edges.items():
            self.observe_edge(caller, callee, now, n)

    def _make_room(self, now: float) -> None:
        if self.prune(now):
            return
        oldest = min(self._learned, key=lambda k: self._learned[k].last_seen)
        del self._learned[oldest]
        self.dropped_edges += 1

    def prune(self, now: float) -> int:
        """Forget expired learned edges; returns how many went."""
        ttl = self.config.learned_ttl
        dead = [k for k, e in self._learned.items() if now - e.last_seen > ttl]
        for k in dead:
            del self._learned[k]
        return len(dead)

    def _live_learned(self, now: float) -> list[tuple[str, str]]:
        c = self.config
        return [
            k
            for k, e in self._learned.items()
            if e.count >= c.min_observations and now - e.last_seen <= c.learned_ttl
        ]

    def edges(self, now: float) -> dict[str, frozenset[str]]:
        """Effective dependencies: caller → callees it depends on."""
        out: dict[str, set[str]] = {caller: set(callees) for caller, callees in self._configured.items()}
        for caller, callee in self._live_learned(now):
            out.setdefault(caller, set()).add(callee)
        return {k: frozenset(v) for k, v in out.items() if v}

    def dependencies_of(self, service: str, now: float) -> frozenset[str]:
        """The services ``service`` depends on directly."""
        return self.edges(now).get(service, frozenset())

    def dependents_with_paths(self, service: str, depth: int, now: float) -> list[tuple[str, int, str]]:
        """``(dependent, distance, via)`` for services that depend on ``service`` within ``depth``
        hops, nearest first (ties by name); ``via`` is the service it depends on along the path."""
        reverse: dict[str, set[str]] = {}
        for caller, callees in self.edges(now).items():
            for callee in callees:
                reverse.setdefault(callee, set()).add(caller)
        seen = {service}
        out: list[tuple[str, int, str]] = []
        frontier: deque[tuple[str, int]] = deque([(service, 0)])
        while frontier:
            node, dist = frontier.popleft()
            if dist >= depth:
                continue
            for dep in sorted(reverse.get(node, ())):
                if dep not in seen:
                    seen.add(dep)
                    out.append((dep, dist + 1, node))
                    frontier.append((dep, dist + 1))
        return sorted(out, key=lambda t: (t[1], t[0]))

    def dependents_of(self, service: str, depth: int, now: float) -> tuple[str, ...]:
        """Services that depend on ``service`` directly or transitively within ``depth`` hops."""
        return tuple(name for name, _, _ in self.dependents_with_paths(service, depth, now))


@dataclass(frozen=True, slots=True)
class PreemptiveOpen:
    """One breaker to open ahead of failures, with the reason its event will carry."""

    service: str
    reason: str
    distance: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CascadePlan:
    """What to do when ``origin`` fails: breakers to open, those the guard held back, the message."""

    origin: str
    preemptive_opens: tuple[PreemptiveOpen, ...]
    held_back: tuple[str, ...]
    message: dict[str, Any] | None
    """The ``cascading_failure_prevented`` message for ``system/{cluster}/errors``; None if no dependents."""


def plan_cascade(
    graph: DependencyGraph,
    failed_service: str,
    known_services: Collection[str],
    open_breakers: Collection[str],
    now: float,
    config: DependencyPolicy,
    *,
    cluster_id: str | None = None,
    real_services: Collection[str] | None = None,
) -> CascadePlan:
    """Which dependents of ``failed_service`` to open preemptively, nearest first, within the guard."""
    known = set(known_services)
    already_open = known & set(open_breakers)
    if real_services is None:
        base = known
    else:  # services named in the dependency policy are configured too
        named = set(config.dependencies).union(*config.dependencies.values())
        base = known & (set(real_services) | named)
    limit = int(len(base) * config.max_preemptive_open_percent / 100.0)
    budget = max(0, limit - len(already_open & base))
    opens: list[PreemptiveOpen] = []
    held: list[str] = []
    for name, distance, via in graph.dependents_with_paths(failed_service, config.cascade_depth, now):
        if name not in known or name in already_open:
            continue  # no breaker to open, or it is open already
        if len(opens) >= budget:
            held.append(name)
            continue
        reason = f"Dependency {failed_service} is unavailable"
        if via != failed_service:
            reason += f" (via {via})"
        opens.append(PreemptiveOpen(service=name, reason=reason, distance=distance))
    message: dict[str, Any] | None = None
    if opens or held:
        message = {"type": "cascading_failure_prevented"}
        if cluster_id is not None:
            message["clusterId"] = cluster_id
        message |= {
            "originService": failed_service,
            "affectedServices": [o.service for o in opens],
            "action": "circuits_opened_preemptively",
            "heldBack": held,
            "timestamp": rfc3339_from_epoch(now),
        }
    return CascadePlan(
        origin=failed_service, preemptive_opens=tuple(opens), held_back=tuple(held), message=message
    )


__all__ = [
    "CascadePlan",
    "DependencyGraph",
    "DependencyPolicy",
    "PreemptiveOpen",
    "load_dependency_policy",
    "plan_cascade",
]
