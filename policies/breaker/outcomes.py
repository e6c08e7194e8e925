"""Call outcomes and what a window reads of them: :data:`UNANSWERED` and :func:`is_failure` (which
outcome codes count against a service), the counts of a :class:`Snapshot` with its minimum-calls
:class:`Gate`, and :class:`WindowMetrics` (counts, outcomes per code, latency quantiles).

Outcome codes: ``None`` is a success; a JSON-RPC error code is a failure when
``protocol.errors.counts_against_service`` says so; :data:`UNANSWERED` marks a call that got no
answer within its call timeout (a failure, like -32007, but kept distinct so health can compute a
response rate).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

from policies.breaker.latency_sketch import LatencySketch
from protocol.errors import counts_against_service

UNANSWERED: Final[int] = -39999
"""Outcome code of a call with no answer within its timeout. Outside every code range the wire
uses (JSON-RPC reserves -32768..-32000; services use that range), so no real answer collides."""


def is_failure(code: int | None) -> bool:
    """Whether an outcome counts against the service (timeouts and unanswered calls included)."""
    return code == UNANSWERED or counts_against_service(code)


class Gate(Enum):
    """The minimum-calls gate: may rates be judged yet?"""

    BELOW_MINIMUM_CALLS = "below_minimum_calls"
    ENOUGH_CALLS = "enough_calls"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Counts in the window at one moment. Rates are percentages (50.0 means 50 %)."""

    calls: int
    failures: int
    slow_calls: int
    total_duration_s: float

    @property
    def failure_rate(self) -> float:
        return self.failures * 100.0 / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        return self.slow_calls * 100.0 / self.calls if self.calls else 0.0

    @property
    def mean_duration_s(self) -> float:
        return self.total_duration_s / self.calls if self.calls else 0.0

    def gate(self, minimum_calls: int) -> Gate:
        """Whether enough calls were seen for the rates to mean anything."""
        return Gate.ENOUGH_CALLS if self.calls >= minimum_calls else Gate.BELOW_MINIMUM_CALLS


@dataclass(frozen=True, slots=True)
class WindowMetrics:
    """Everything a window knows, copied: counts, outcomes per error code, latency quantiles."""

    snapshot: Snapshot
    outcomes: Mapping[int, int]
    """Calls per error code (successes are ``snapshot.calls - sum(outcomes)``; see UNANSWERED)."""
    latency: LatencySketch | None
    """``None`` when the window was built with ``latency=False``."""

    @property
    def successes(self) -> int:
        return self.snapshot.calls - sum(self.outcomes.values())

    @property
    def unanswered(self) -> int:
        return self.outcomes.get(UNANSWERED, 0)

    def quantile(self, q: float) -> float | None:
        return None if self.latency is None else self.latency.quantile(q)

    @property
    def p50(self) -> float | None:
        return self.quantile(0.50)

    @property
    def p95(self) -> float | None:
        return self.quantile(0.95)

    @property
    def p99(self) -> float | None:
        return self.quantile(0.99)


__all__ = ["UNANSWERED", "Gate", "Snapshot", "WindowMetrics", "is_failure"]
