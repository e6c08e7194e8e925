"""Infrastructure probes: each performs ONE bounded check of one component and returns a
:class:`~policies.infrastructure.checks.ProbeResult` (never raises, never hangs past its timeout).

:data:`PROBES` names every component the infrastructure checker knows: component name → the
module that builds its probes and whether ``settings`` asks for it. A probe module exposes
``async def build(setup: ProbeSetup) -> ProbeSet``. Judging a run of results (hysteresis,
severity, messages) is :mod:`policies.infrastructure.checks`'s job.

A new component is one new module here (``build`` plus its :class:`Probe`), one line in
:data:`PROBES`, and its section in ``policies/infrastructure.yaml`` (``components.<name>``; its
thresholds under ``thresholds.<name>``, read with ``InfrastructurePolicy.thresholds_for``).

Errors a probe body may raise (converted into a failed result by :func:`run_check`)::

    ProbeError
     └── ProbeConfigError    our configuration is wrong (bad API key): config_error=True
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from policies.infrastructure.checks import InfrastructurePolicy, ProbeResult, Problem, Severity

if TYPE_CHECKING:
    from adapters.probes.kubernetes_probe import KubernetesProbe

__all__ = ["PROBES", "Probe", "ProbeConfigError", "ProbeError", "ProbeKind", "ProbeResult", "ProbeSet",
           "ProbeSetup", "Problem", "build_probes", "run_check", "unknown_components"]

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


# -- the registry -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeSetup:
    """What a probe module's ``build`` gets: the component's check timeout and thresholds (its
    ``thresholds.<name>`` section: a typed model, or the raw mapping for a component the policy
    model does not name), and the operate settings (targets, credentials)."""

    component: str
    cluster: str
    timeout: float
    thresholds: Any
    settings: Any
    policy: InfrastructurePolicy


@dataclass(kw_only=True)
class ProbeSet:
    """A component's probes, run together each check and merged (``primary``'s result leads)."""

    probes: dict[str, Probe]
    hosts: list[str] = field(default_factory=list)
    """Hosts named in runbooks."""
    primary: str | None = None
    timeout_severity: Severity = "critical"
    """Severity of a check that hung past the checker's guard."""
    pods: KubernetesProbe | None = None
    """A probe whose ``snapshot()`` also gives pod status per service (Kubernetes)."""
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Called at stop after the probes' own ``close`` (connections the probes share)."""


@dataclass(frozen=True, slots=True)
class ProbeKind:
    """One registry entry: the module with ``build`` (imported when the component is checked, so
    an unused probe's client library is never loaded) and whether ``settings`` asks for it."""

    module: str
    wanted: Callable[[Any], bool]

    async def build(self, setup: ProbeSetup) -> ProbeSet:
        built: ProbeSet = await importlib.import_module(self.module).build(setup)
        return built


PROBES: dict[str, ProbeKind] = {
    "mqtt_broker": ProbeKind("adapters.probes.mqtt_probe", lambda s: not s.emqx_api),
    "emqx_cluster": ProbeKind("adapters.probes.emqx", lambda s: bool(s.emqx_api)),
    "postgresql_cluster": ProbeKind("adapters.probes.postgres_probe", lambda s: bool(s.check_postgres)),
    "mongodb_cluster": ProbeKind("adapters.probes.mongodb_probe", lambda s: bool(s.check_mongodb)),
    "redis": ProbeKind("adapters.probes.redis_probe", lambda s: bool(s.check_redis)),
    "kubernetes_cluster": ProbeKind("adapters.probes.kubernetes_probe", lambda s: bool(s.kubernetes)),
}
"""Component name → its probes, in checking order (the broker first)."""


def unknown_components(policy: InfrastructurePolicy) -> list[str]:
    """Component names the policy configures (``components``, ``thresholds``,
    ``service_dependencies``) that no probe is registered for: typos, sorted."""
    named = {*policy.components, *policy.thresholds.model_fields_set, *(policy.thresholds.model_extra or {}),
             *(c for deps in policy.service_dependencies.values() for c in deps)}
    return sorted(named - set(PROBES))


async def build_probes(component: str, setup: ProbeSetup) -> ProbeSet:
    """The probes of ``component`` (ValueError when no probe is registered for it)."""
    kind = PROBES.get(component)
    if kind is None:
        raise ValueError(f"unknown infrastructure component {component!r}")
    return await kind.build(setup)
