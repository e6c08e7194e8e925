"""Kubernetes workload state (pure): resource quantities, container usage against limits (the
metrics API's PodMetrics joined with the pods' ``spec.containers[].resources.limits``), and
Deployment rollout status judged as ``kubectl rollout status`` does.

The probe in :mod:`adapters.probes.kubernetes_probe` fetches the lists; everything here takes the
API's JSON (camelCase, as served) and returns ``(details, problems)`` for the
``kubernetes_cluster`` result, so the findings travel in the tier-3 infrastructure messages like
the node findings. Every list is bounded: items past the cap are counted, not judged.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from policies.infrastructure.checks import SEVERITY_RANK, Problem

MAX_QUANTITY_CHARS = 64
MAX_PODS = 1000  # pods (with their metrics) judged per check
MAX_CONTAINERS = 20  # containers judged per pod
MAX_DEPLOYMENTS = 500  # deployments read per check (the API's ``limit``)
MAX_REPORTED = 20  # findings listed in details / as problems; the rest are counted
MAX_TEXT = 200  # condition messages and names copied from the API

POD_CPU_HIGH = "pod_cpu_near_limit"
POD_MEMORY_HIGH = "pod_memory_near_limit"
ROLLOUT_STUCK = "rollout_stuck"
ROLLOUT_IN_PROGRESS = "rollout_in_progress"
DEPLOYMENT_UNAVAILABLE = "deployment_unavailable"
REPLICAS_UNAVAILABLE = "deployment_replicas_unavailable"
REPLICA_FAILURE = "deployment_replica_failure"

# -- quantities ---------------------------------------------------------------------------------

# k8s.io/apimachinery resource.Quantity: <signedNumber><suffix>, suffix binary (Ki..Ei), decimal
# (n u m "" k M G T P E) or a decimal exponent (e3, E-3). "1E" is an exa, "1E3" an exponent.
_QUANTITY = re.compile(
    r"(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:[eE](?P<exp>[+-]?\d{1,3})|(?P<bin>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<dec>[numkMGTPE]))?"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


class QuantityError(ValueError):
    """Not a Kubernetes resource quantity."""


def parse_quantity(text: object) -> Decimal:
    """A Kubernetes quantity (``"250m"``, ``"1"``, ``"128Mi"``, ``"123456Ki"``, ``"1e3"``) as an
    exact number: cores for CPU, bytes for memory."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_QUANTITY_CHARS:
        raise QuantityError(f"not a quantity: {str(text)[:MAX_QUANTITY_CHARS]!r}")
    m = _QUANTITY.fullmatch(text)
    if m is None:
        raise QuantityError(f"not a quantity: {text!r}")
    try:
        value = Decimal(m["num"])
    except InvalidOperation as exc:  # the pattern admits only numbers; kept as a guard
        raise QuantityError(f"not a quantity: {text!r}") from exc
    if m["exp"] is not None:
        return value.scaleb(int(m["exp"]))
    if m["bin"] is not None:
        return value * Decimal(1024) ** _BINARY[m["bin"]]
    if m["dec"] is not None:
        return value.scaleb(_DECIMAL[m["dec"]])
    return value


def _quantity_or_none(text: object) -> float | None:
    try:
        return float(parse_quantity(text))
    except QuantityError:
        return None


def _text(value: object) -> str:
    return str(value)[:MAX_TEXT] if value is not None else ""


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


# -- pod resources ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerUsage:
    """One container's usage (metrics API) and limit (pod spec): CPU in cores, memory in bytes."""

    pod: str
    container: str
    service: str | None
    resource: str  # "cpu" | "memory"
    usage: float
    limit: float

    @property
    def fraction(self) -> float:
        return self.usage / self.limit

    def to_details(self) -> dict[str, Any]:
        return {"pod": self.pod, "container": self.container, "service": self.service,
                "resource": self.resource, "usage": self.usage, "limit": self.limit,
                "fractionOfLimit": round(self.fraction, 4)}


def metrics_unavailable(status: int | None, reason: str) -> str:
    """Why the metrics API gave nothing, for the ``podResources`` detail."""
    if status == 404:
        return "metrics API not available (HTTP 404: metrics.k8s.io is not served; is metrics-server installed?)"
    if status in (401, 403):
        return (f"metrics API refused (HTTP {status}): the service account needs get/list on "
                "pods.metrics.k8s.io")
    return f"metrics API failed (HTTP {status}: {_text(reason)})"


def _limits_by_pod(pods: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str | None, dict[str, Mapping[str, Any]]]]:
    out: dict[str, tuple[str | None, dict[str, Mapping[str, Any]]]] = {}
    for pod in pods:
        meta = _map(pod.get("metadata"))
        name = meta.get("name")
        if not isinstance(name, str) or name in out:
            continue
        app = _map(meta.get("labels")).get("app")
        containers: dict[str, Mapping[str, Any]] = {
            str(c.get("name")): _map(_map(c.get("resources")).get("limits"))
            for c in _list(_map(pod.get("spec")).get("containers"))[:MAX_CONTAINERS]
            if isinstance(c, Mapping) and isinstance(c.get("name"), str)
        }
        out[name] = (app if isinstance(app, str) else None, containers)
        if len(out) >= MAX_PODS:
            break
    return out


def judge_pod_resources(
    pods: Iterable[Mapping[str, Any]], pod_metrics: Mapping[str, Any], *,
    cpu_threshold: float, memory_threshold: float,
) -> tuple[dict[str, Any], list[Problem]]:
    """Each container's CPU and memory usage (a PodMetricsList) against its limits (the pods, a
    v1 Pod list): at ``threshold`` (a fraction, 0.9 = 90 %) of a limit or more is a warning.

    Only pods in ``pods`` are judged (the probe passes the services' pods); a container without a
    limit for a resource is counted, not judged (it has no ceiling to approach)."""
    limits = _limits_by_pod(pods)
    over: list[ContainerUsage] = []
    measured = judged = without_limits = unparsable = skipped = 0
    for item in _list(pod_metrics.get("items")):
        if not isinstance(item, Mapping):
            unparsable += 1
            continue
        name = _map(item.get("metadata")).get("name")
        if not isinstance(name, str) or name not in limits:
            continue
        if measured >= MAX_PODS:
            skipped += 1
            continue
        measured += 1
        service, container_limits = limits[name]
        for c in _list(item.get("containers"))[:MAX_CONTAINERS]:
            cname = _map(c).get("name")
            usage = _map(_map(c).get("usage"))
            lim = container_limits.get(cname, {}) if isinstance(cname, str) else {}
            for resource, threshold in (("cpu", cpu_threshold), ("memory", memory_threshold)):
                if resource not in usage:
                    continue
                if resource not in lim:
                    without_limits += 1
                    continue
                used, limit = _quantity_or_none(usage[resource]), _quantity_or_none(lim[resource])
                if used is None or limit is None or limit <= 0 or used < 0:
                    unparsable += 1
                    continue
                judged += 1
                u = ContainerUsage(pod=_text(name), container=_text(cname), service=service,
                                   resource=resource, usage=used, limit=limit)
                if u.fraction >= threshold:
                    over.append(u)
    over.sort(key=lambda u: u.fraction, reverse=True)
    problems = [
        Problem(code=POD_MEMORY_HIGH if u.resource == "memory" else POD_CPU_HIGH, severity="warning",
                message=f"Pod {u.pod} container {u.container} uses {u.fraction:.0%} of its {u.resource} limit "
                        f"({_amount(u.resource, u.usage)} of {_amount(u.resource, u.limit)})")
        for u in over[:MAX_REPORTED]
    ]
    details = {
        "available": True, "podsMeasured": measured, "podsWithoutMetrics": max(0, len(limits) - measured - skipped),
        "judged": judged, "withoutLimits": without_limits, "unparsable": unparsable, "notJudged": skipped,
        "cpuThresholdFraction": cpu_threshold, "memoryThresholdFraction": memory_threshold,
        "overThresholdCount": len(over), "overThreshold": [u.to_details() for u in over[:MAX_REPORTED]],
    }
    return details, problems


def _amount(resource: str, value: float) -> str:
    if resource == "cpu":
        return f"{value * 1000:.0f}m CPU"
    return f"{value / 1024**2:.0f} MiB"


# -- deployments --------------------------------------------------------------------------------


class RolloutState(StrEnum):
    """Where a Deployment's rollout stands (kubectl's ``rollout status`` steps, plus stuck/degraded)."""

    COMPLETE = "complete"
    OBSERVING = "observing"  # metadata.generation not yet seen by the controller
    UPDATING = "updating"  # fewer updated replicas than desired
    TERMINATING_OLD = "terminating_old"  # old replicas still running
    WAITING_AVAILABLE = "waiting_available"  # updated replicas not yet available
    STUCK = "stuck"  # Progressing False, ProgressDeadlineExceeded
    DEGRADED = "degraded"  # rollout finished earlier, replicas lost since
    PAUSED = "paused"


IN_PROGRESS = frozenset({RolloutState.OBSERVING, RolloutState.UPDATING, RolloutState.TERMINATING_OLD,
                         RolloutState.WAITING_AVAILABLE})


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentStatus:
    name: str
    service: str | None
    desired: int
    current: int
    updated: int
    ready: int
    available: int
    generation: int
    observed_generation: int
    state: RolloutState
    progressing: str | None  # "True (NewReplicaSetAvailable)"
    available_condition: str | None
    message: str | None  # the Progressing (or ReplicaFailure) condition's message
    replica_failure: str | None

    def to_details(self) -> dict[str, Any]:
        return {"name": self.name, "service": self.service, "desiredReplicas": self.desired,
                "replicas": self.current, "updatedReplicas": self.updated, "readyReplicas": self.ready,
                "availableReplicas": self.available, "generation": self.generation,
                "observedGeneration": self.observed_generation, "rollout": self.state.value,
                "progressing": self.progressing, "available": self.available_condition,
                "message": self.message, "replicaFailure": self.replica_failure}


def _condition(conds: Mapping[str, Mapping[str, Any]], kind: str) -> str | None:
    c = conds.get(kind)
    if c is None:
        return None
    reason = c.get("reason")
    return f"{_text(c.get('status'))} ({_text(reason)})" if reason else _text(c.get("status"))


def deployment_status(item: Mapping[str, Any]) -> DeploymentStatus:
    """Pure: one apps/v1 Deployment → its :class:`DeploymentStatus`."""
    meta, spec, status = _map(item.get("metadata")), _map(item.get("spec")), _map(item.get("status"))
    conds: dict[str, Mapping[str, Any]] = {
        str(c.get("type")): c for c in _list(status.get("conditions")) if isinstance(c, Mapping)}
    progressing = _map(conds.get("Progressing"))
    app = _map(_map(_map(spec.get("template")).get("metadata")).get("labels")).get("app") \
        or _map(_map(spec.get("selector")).get("matchLabels")).get("app")
    desired = _int(spec.get("replicas"), 1)
    current, updated = _int(status.get("replicas")), _int(status.get("updatedReplicas"))
    available = _int(status.get("availableReplicas"))
    generation, observed = _int(meta.get("generation")), _int(status.get("observedGeneration"))
    failure = _map(conds.get("ReplicaFailure"))
    # kubectl rollout status: generation first, then the deadline, then the replica counts
    if spec.get("paused") is True:
        state = RolloutState.PAUSED
    elif generation > observed:
        state = RolloutState.OBSERVING
    elif progressing.get("reason") == "ProgressDeadlineExceeded":
        state = RolloutState.STUCK
    elif updated < desired:
        state = RolloutState.UPDATING
    elif current > updated:
        state = RolloutState.TERMINATING_OLD
    elif available < updated:
        # a rollout that finished (NewReplicaSetAvailable) and lost replicas since is not in progress
        done = progressing.get("reason") == "NewReplicaSetAvailable"
        state = RolloutState.DEGRADED if done else RolloutState.WAITING_AVAILABLE
    else:
        state = RolloutState.COMPLETE
    return DeploymentStatus(
        name=_text(meta.get("name") or "?"), service=app if isinstance(app, str) else None,
        desired=desired, current=current, updated=updated, ready=_int(status.get("readyReplicas")),
        available=available, generation=generation, observed_generation=observed, state=state,
        progressing=_condition(conds, "Progressing"), available_condition=_condition(conds, "Available"),
        message=_text(progressing.get("message")) or None,
        replica_failure=_text(failure.get("message")) or None if failure.get("status") == "True" else None,
    )


def _deployment_problems(d: DeploymentStatus) -> list[Problem]:
    counts = f"{d.updated} updated, {d.available} available of {d.desired}"
    out: list[Problem] = []
    if d.state is RolloutState.STUCK:
        out.append(Problem(code=ROLLOUT_STUCK, severity="error",
                           message=f"Deployment {d.name} rollout exceeded its progress deadline ({counts})"
                                   + (f": {d.message}" if d.message else "")))
    if d.available_condition is not None and d.available_condition.startswith("False"):
        out.append(Problem(code=DEPLOYMENT_UNAVAILABLE, severity="error",
                           message=f"Deployment {d.name} does not have minimum availability ({counts})"))
    if d.state is RolloutState.DEGRADED:
        out.append(Problem(code=REPLICAS_UNAVAILABLE, severity="warning",
                           message=f"Deployment {d.name} has {d.available} of {d.desired} replicas available"))
    if d.replica_failure:
        out.append(Problem(code=REPLICA_FAILURE, severity="warning",
                           message=f"Deployment {d.name} cannot create replicas: {d.replica_failure}"))
    if d.state in IN_PROGRESS:
        out.append(Problem(code=ROLLOUT_IN_PROGRESS, severity="info",
                           message=f"Deployment {d.name} rollout in progress ({d.state.value}; {counts})"))
    return out


def judge_deployments(
    deployment_list: Mapping[str, Any], *, services: Collection[str] | None = None,
) -> tuple[dict[str, Any], list[Problem]]:
    """A DeploymentList → details and problems: a rollout past its progress deadline or a
    deployment without minimum availability is an error, replicas lost after a finished rollout
    or a ReplicaFailure a warning, a rollout under way ``info`` (visible, not an outage).

    With ``services``, only deployments whose pod template carries ``app: <service>`` count."""
    items = [i for i in _list(deployment_list.get("items")) if isinstance(i, Mapping)]
    statuses = [deployment_status(i) for i in items[:MAX_DEPLOYMENTS]]
    if services is not None:
        wanted = set(services)
        statuses = [d for d in statuses if d.service in wanted]
    problems = [p for d in statuses for p in _deployment_problems(d)]
    counts = {s.value: 0 for s in RolloutState}
    for d in statuses:
        counts[d.state.value] += 1
    more = _map(deployment_list.get("metadata")).get("continue")
    details = {
        "available": True, "total": len(statuses), "byRollout": {k: v for k, v in counts.items() if v},
        "truncated": bool(more) or len(items) > MAX_DEPLOYMENTS,
        "deployments": [d.to_details() for d in statuses[:MAX_REPORTED]],
    }
    problems.sort(key=lambda p: SEVERITY_RANK[p.severity], reverse=True)  # worst kept when capped
    return details, problems[:MAX_REPORTED]


def deployments_unavailable(status: int | None, reason: str) -> str:
    """Why the Deployment list gave nothing, for the ``deployments`` detail."""
    if status in (401, 403):
        return (f"Deployments refused (HTTP {status}): the service account needs list on "
                "deployments.apps in the namespace")
    return f"Deployments could not be read (HTTP {status}: {_text(reason)})"
