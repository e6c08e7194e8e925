"""The -32503 answers an observer sends on a service's behalf, built through ``protocol.rpc`` (pure)."""

from __future__ import annotations

from typing import Any

from policies.observation.correlation import Answer, Pending
from protocol.rpc import circuit_open_response, service_unavailable_response


def circuit_open_answer(a: Answer, now: float) -> dict[str, Any]:
    """-32503 "Circuit Breaker Open" for a call refused while its service's breaker is open."""
    return circuit_open_response(call_id=a.call_id, service=a.service, retry_after_seconds=a.retry_after_s,
                                 correlation_id=a.correlation_id, timestamp=now).to_wire()


def unavailable_answer(p: Pending, reason: str, estimate: str | None, retry_after_s: float,
                       now: float) -> dict[str, Any]:
    """-32503 "Service Temporarily Unavailable" for a call pending when its service went down."""
    return service_unavailable_response(call_id=p.call_id, service=p.service, reason=reason,
                                        estimated_recovery=estimate, retry_after_seconds=retry_after_s,
                                        correlation_id=p.correlation_id, timestamp=now).to_wire()


__all__ = ["circuit_open_answer", "unavailable_answer"]
