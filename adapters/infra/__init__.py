"""Infrastructure probes: each performs ONE bounded check of one component and returns a
:class:`~policies.infrastructure.ProbeResult` (never raises, never hangs past its timeout).

Probes: :mod:`.mqtt_probe` (``mqtt_broker``), :mod:`.emqx` (``emqx_cluster``),
:mod:`.postgres_probe` (``postgresql_cluster``), :mod:`.redis_probe` (``redis``),
:mod:`.kubernetes_probe` (``kubernetes_cluster``). Judging a run of results (hysteresis, severity,
messages) is :mod:`policies.infrastructure`'s job.

Errors a probe body may raise (converted into a failed result by :func:`run_check`)::

    ProbeError
     └── ProbeConfigError    our configuration is wrong (bad API key): config_error=True
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from policies.infrastructure import ProbeResult, Problem, Severity

__all__ = ["Probe", "ProbeConfigError", "ProbeError", "ProbeResult", "Problem", "run_check"]

logger = logging.getLogger("sfa_ops.infra")

Body = Callable[[], Awaitable[tuple[Mapping[str, Any], Sequence[Problem]]]]


class ProbeError(Exception):
    """A check could not be completed; the message says why (shown in the result's ``error``)."""


class ProbeConfigError(ProbeError):
    """The check failed because of our configuration (credentials, URL), not the component."""


class Probe(Protocol):
    """What an infrastructure checker actor drives: one ``check()`` per interval."""

    component: str

    async def check(self) -> ProbeResult: ...

    async def close(self) -> None: ...


async def run_check(
    component: str, timeout_s: float, body: Body, *, unreachable_severity: Severity = "critical",
) -> ProbeResult:
    """Run ``body`` under ``asyncio.timeout``; time it; turn every failure into a failed result.

    ``body`` returns ``(details, problems)``. A timeout gives problem ``timeout``, a
    :class:`ProbeConfigError` a ``config_error`` result, any other exception ``unreachable``.
    """
    started = time.perf_counter()

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000.0, 3)

    try:
        async with asyncio.timeout(timeout_s):
            details, problems = await body()
    except TimeoutError:
        msg = f"{component} check did not finish within {timeout_s:g}s"
        return ProbeResult.build(component=component, latency_ms=elapsed(), error=msg,
                                 problems=[Problem(code="timeout", severity=unreachable_severity, message=msg)])
    except ProbeConfigError as exc:
        return ProbeResult.build(component=component, latency_ms=elapsed(), error=str(exc), config_error=True,
                                 problems=[Problem(code="misconfigured", severity="warning", message=str(exc))])
    except Exception as exc:  # a probe must report, not raise: any failure is a failed check
        msg = f"{component} unreachable: {type(exc).__name__}: {exc}".rstrip(": ")
        logger.debug("%s check failed", component, exc_info=True)
        return ProbeResult.build(component=component, latency_ms=elapsed(), error=msg,
                                 problems=[Problem(code="unreachable", severity=unreachable_severity, message=msg)])
    return ProbeResult.build(component=component, latency_ms=elapsed(), details=details, problems=problems)
