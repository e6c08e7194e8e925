"""Heightened monitoring (the ``increase_monitoring`` response action): while such an action is
active on an entity (an IP or a user id), the security analyst's detection thresholds for that
entity are multiplied by the action's ``factor`` (``params.factor``, default 0.5, kept within
[0.1, 1]); they return to normal when the action expires or is lifted.

Pure: ``watches`` turns the responder's active set (``ActiveActions``, as published) into the
watch list at ``now``; ``lowered`` scales one threshold. ``active_targets`` (who is under an
action now, until when) also serves the audit writer's ``enhanced_logging``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from protocol.security import EnforcementAction

ACTION = "increase_monitoring"
DEFAULT_FACTOR = 0.5
MIN_FACTOR = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class Watch:
    """Thresholds for one entity are multiplied by ``factor`` until ``until`` (None: untimed)."""

    factor: float
    until: float | None = None

    def active(self, now: float) -> bool:
        return self.until is None or self.until > now


def _factor(params: Mapping[str, object]) -> float:
    raw = params.get("factor", DEFAULT_FACTOR)
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return DEFAULT_FACTOR
    return DEFAULT_FACTOR if math.isnan(value) else min(max(value, MIN_FACTOR), 1.0)


def watches(actions: Iterable[EnforcementAction], now: float) -> dict[str, Watch]:
    """The entities under heightened monitoring at ``now``: one ``Watch`` per target of an
    active ``increase_monitoring`` (the strongest factor and latest expiry when several)."""
    out: dict[str, Watch] = {}
    for a in actions:
        if a.action != ACTION or a.undo:
            continue
        until = a.until.timestamp() if a.until is not None else None
        w = Watch(factor=_factor(a.params), until=until)
        if not w.active(now):
            continue
        held = out.get(a.target)
        if held is not None:
            longest = None if held.until is None or until is None else max(held.until, until)
            w = Watch(factor=min(held.factor, w.factor), until=longest)
        out[a.target] = w
    return out


def active_targets(actions: Iterable[EnforcementAction], action: str, now: float) -> dict[str, float | None]:
    """Targets of the active (not undone, not expired at ``now``) ``action`` actions, with the
    latest expiry of each (None: untimed)."""
    out: dict[str, float | None] = {}
    for a in actions:
        if a.action != action or a.undo:
            continue
        until = a.until.timestamp() if a.until is not None else None
        if until is not None and until <= now:
            continue
        prev = out.get(a.target, until)
        out[a.target] = None if until is None or prev is None else max(until, prev)
    return out


def factor_for(watched: Mapping[str, Watch], entities: Iterable[str | None], now: float) -> float:
    """The factor for an event about ``entities`` (its user and IP): the strongest active one, 1.0 if none."""
    f = 1.0
    for e in entities:
        w = watched.get(e) if e is not None else None
        if w is not None and w.active(now):
            f = min(f, w.factor)
    return f


def lowered(threshold: int, factor: float) -> int:
    """An integer threshold scaled by ``factor``, at least 1."""
    return threshold if factor >= 1.0 else max(1, math.ceil(threshold * factor))
