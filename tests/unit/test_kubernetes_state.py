"""policies/kubernetes_state: Kubernetes quantities, container usage against limits, and
Deployment rollout status (tables of API-shaped documents; the fixtures' shapes are described in
tests/fixtures/kubernetes/README.md)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.infrastructure.checks import ProbeResult, load_infrastructure_policy
from policies.infrastructure.kubernetes_state import (
    MAX_PODS,
    MAX_REPORTED,
    QuantityError,
    RolloutState,
    deployment_status,
    judge_deployments,
    judge_pod_resources,
    metrics_unavailable,
    parse_quantity,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kubernetes"
POLICY = load_infrastructure_policy()


def fixture(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


# -- quantities ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("250m", Decimal("0.25")), ("1", Decimal(1)), ("0.5", Decimal("0.5")), ("1.", Decimal(1)), (".5", Decimal("0.5")),
    ("212094518n", Decimal("0.212094518")), ("500u", Decimal("0.0005")),
    ("128Mi", Decimal(128 * 2**20)), ("1Gi", Decimal(2**30)), ("123456Ki", Decimal(123456 * 1024)),
    ("1.5Gi", Decimal(3 * 2**29)), ("2Ti", Decimal(2 * 2**40)), ("1Ei", Decimal(2**60)),
    ("1k", Decimal(1000)), ("128M", Decimal(128_000_000)), ("1G", Decimal(10**9)), ("3T", Decimal(3 * 10**12)),
    ("1E", Decimal(10**18)), ("129e6", Decimal(129_000_000)), ("1e3", Decimal(1000)), ("1E3", Decimal(1000)),
    ("12e-3", Decimal("0.012")), ("5e+2", Decimal(500)), ("+1", Decimal(1)), ("-1", Decimal(-1)),
    ("123456789", Decimal(123456789)),
])
def test_parse_quantity(text: str, value: Decimal) -> None:
    """Every suffix family of resource.Quantity: decimal SI, binary SI, decimal exponent, plain."""
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Mi", "1mi", "1 Mi", "1KiB", "1e", "1e3Mi", "0x10", "1.2.3", "1ki",
                                  "1" * 65, "1e1000", "∞", None, 5, ["1"]])
def test_parse_quantity_refuses_what_kubernetes_refuses(text: object) -> None:
    """Malformed or oversized quantities (and non-strings) raise QuantityError, never anything else."""
    with pytest.raises(QuantityError):
        parse_quantity(text)


@pytest.mark.slow
@given(st.text(max_size=80))
def test_parse_quantity_total(text: str) -> None:
    """Any string either parses to a finite number or raises QuantityError."""
    try:
        value = parse_quantity(text)
    except QuantityError:
        return
    assert value.is_finite()


@given(st.integers(min_value=0, max_value=10**12))
def test_binary_and_decimal_agree(n: int) -> None:
    """``nKi`` is ``n*1024`` bytes and ``nk`` ``n*1000``; ``n000m`` is ``n``."""
    assert parse_quantity(f"{n}Ki") == n * 1024 == parse_quantity(f"{n * 1024}")
    assert parse_quantity(f"{n}k") == n * 1000 == parse_quantity(f"{n}e3")
    assert parse_quantity(f"{n}000m") == n


# -- pod resources ------------------------------------------------------------------------------


def pod(name: str, *containers: tuple[str, dict[str, str]], app: str = "Svc") -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"app": app}},
            "spec": {"containers": [{"name": c, "resources": {"limits": lim}} for c, lim in containers]}}


def metrics(*items: tuple[str, list[tuple[str, dict[str, str]]]]) -> dict[str, Any]:
    return {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {},
            "items": [{"metadata": {"name": n}, "timestamp": "2026-08-07T10:48:17Z", "window": "15s",
                       "containers": [{"name": c, "usage": u} for c, u in cs]} for n, cs in items]}


@pytest.mark.parametrize(("limits", "usage", "codes"), [
    ({"cpu": "500m", "memory": "256Mi"}, {"cpu": "212m", "memory": "128Mi"}, []),
    ({"cpu": "500m", "memory": "256Mi"}, {"cpu": "400m", "memory": "128Mi"}, ["pod_cpu_near_limit"]),  # 80 %
    ({"cpu": "500m", "memory": "256Mi"}, {"cpu": "399m", "memory": "128Mi"}, []),
    ({"cpu": "1", "memory": "1Gi"}, {"cpu": "100m", "memory": "943719Ki"}, ["pod_memory_near_limit"]),  # 90 % is 943718.4Ki
    ({"cpu": "1", "memory": "1Gi"}, {"cpu": "100m", "memory": "943718Ki"}, []),
    ({"cpu": "2", "memory": "1G"}, {"cpu": "1999000000n", "memory": "1e9"},
     ["pod_cpu_near_limit", "pod_memory_near_limit"]),
    ({"memory": "512Mi"}, {"cpu": "4", "memory": "100Mi"}, []),  # no CPU limit: nothing to approach
])
def test_judge_container_against_limits(limits: dict[str, str], usage: dict[str, str], codes: list[str]) -> None:
    """At the seed's thresholds (CPU 80 %, memory 90 % of the limit) a container is a warning."""
    details, problems = judge_pod_resources([pod("p", ("app", limits))], metrics(("p", [("app", usage)])),
                                            cpu_threshold=0.8, memory_threshold=0.9)
    assert sorted(p.code for p in problems) == codes
    assert all(p.severity == "warning" for p in problems)
    assert details["available"] and details["overThresholdCount"] == len(codes)


def test_seed_thresholds_are_the_defaults() -> None:
    """The shipped policy uses the seed runbook's "CPU should be <80%, Memory should be <90%"."""
    t = POLICY.thresholds.kubernetes_cluster
    assert (t.pod_cpu, t.pod_memory) == (80.0, 90.0)


def test_pod_resources_fixture() -> None:
    """The replayed fixtures: OrderManagement's ``app`` container at 96 % of 256 MiB is the only
    finding; UserManagement's pod without limits is counted, pods of no service are ignored."""
    pods = fixture("pods.json")["items"]
    details, problems = judge_pod_resources(pods, fixture("pod_metrics.json"), cpu_threshold=0.8, memory_threshold=0.9)
    assert [p.code for p in problems] == ["pod_memory_near_limit"]
    assert "ordermanagement-5b6c7d8e9-abcde container app uses 96% of its memory limit" in problems[0].message
    [over] = details["overThreshold"]
    assert (over["service"], over["usage"], over["limit"]) == ("OrderManagement", 245 * 2**20, 256 * 2**20)
    assert details["podsMeasured"] == 3 and details["withoutLimits"] == 2 and details["judged"] == 6
    assert details["podsWithoutMetrics"] == 2  # the crash-looping and the Pending UserManagement pods
    healthy, none = judge_pod_resources(pods, fixture("pod_metrics_healthy.json"), cpu_threshold=0.8,
                                        memory_threshold=0.9)
    assert none == [] and healthy["overThresholdCount"] == 0 and healthy["judged"] == 6
    only_om = [p for p in pods if p["metadata"]["labels"]["app"] == "OrderManagement"]
    d, _ = judge_pod_resources(only_om, fixture("pod_metrics.json"), cpu_threshold=0.8, memory_threshold=0.9)
    assert d["podsMeasured"] == 2  # the UserManagement metrics are not judged without their pod


def test_pod_resources_hostile_input_is_counted_and_bounded() -> None:
    """Garbage quantities and items are counted as unparsable; more pods than the cap are counted
    as not judged; problems and listed findings stay bounded."""
    bad = metrics(("p", [("app", {"cpu": "lots", "memory": "-5Mi"})]))
    bad["items"].append("not an object")
    details, problems = judge_pod_resources([pod("p", ("app", {"cpu": "1", "memory": "1Gi"}))], bad,
                                            cpu_threshold=0.8, memory_threshold=0.9)
    assert problems == [] and details["unparsable"] == 3 and details["judged"] == 0
    zero, _ = judge_pod_resources([pod("p", ("app", {"cpu": "0"}))], metrics(("p", [("app", {"cpu": "1"})])),
                                  cpu_threshold=0.8, memory_threshold=0.9)
    assert zero["unparsable"] == 1  # a zero limit gives no ratio
    n = MAX_PODS + 5
    pods = [pod(f"p{i}", ("app", {"memory": "1Mi"})) for i in range(n)]
    many = metrics(*((f"p{i}", [("app", {"memory": "1Mi"})]) for i in range(n)))
    details, problems = judge_pod_resources(pods, many, cpu_threshold=0.8, memory_threshold=0.9)
    assert details["podsMeasured"] == MAX_PODS and details["overThresholdCount"] == MAX_PODS
    assert len(problems) == MAX_REPORTED and len(details["overThreshold"]) == MAX_REPORTED


def test_metrics_unavailable_says_why() -> None:
    """A 404 names metrics-server; a 403 names the RBAC rule that is missing."""
    assert "metrics-server" in metrics_unavailable(404, "Not Found")
    assert "pods.metrics.k8s.io" in metrics_unavailable(403, "Forbidden")
    assert "503" in metrics_unavailable(503, "Service Unavailable")


# -- deployments --------------------------------------------------------------------------------


def deployment(*, replicas: int = 3, generation: int = 2, observed: int = 2, current: int = 3, updated: int = 3,
               available: int = 3, progressing: tuple[str, str] | None = ("True", "NewReplicaSetAvailable"),
               available_cond: str = "True", paused: bool = False) -> dict[str, Any]:
    conds = [{"type": "Available", "status": available_cond, "reason": "MinimumReplicasAvailable"}]
    if progressing:
        conds.append({"type": "Progressing", "status": progressing[0], "reason": progressing[1], "message": "m"})
    return {"metadata": {"name": "svc", "generation": generation},
            "spec": {"replicas": replicas, "paused": paused, "template": {"metadata": {"labels": {"app": "Svc"}}}},
            "status": {"observedGeneration": observed, "replicas": current, "updatedReplicas": updated,
                       "readyReplicas": available, "availableReplicas": available, "conditions": conds}}


@pytest.mark.parametrize(("doc", "state", "codes"), [
    (deployment(), RolloutState.COMPLETE, []),
    (deployment(progressing=("False", "ProgressDeadlineExceeded"), updated=1, available=2),
     RolloutState.STUCK, ["rollout_stuck"]),
    (deployment(progressing=("False", "ProgressDeadlineExceeded"), available=0, available_cond="False"),
     RolloutState.STUCK, ["rollout_stuck", "deployment_unavailable"]),
    (deployment(generation=3, observed=2, updated=2), RolloutState.OBSERVING, ["rollout_in_progress"]),
    (deployment(progressing=("True", "ReplicaSetUpdated"), updated=1, current=4), RolloutState.UPDATING,
     ["rollout_in_progress"]),
    (deployment(progressing=("True", "ReplicaSetUpdated"), current=4), RolloutState.TERMINATING_OLD,
     ["rollout_in_progress"]),
    (deployment(progressing=("True", "ReplicaSetUpdated"), available=2), RolloutState.WAITING_AVAILABLE,
     ["rollout_in_progress"]),
    (deployment(available=1), RolloutState.DEGRADED, ["deployment_replicas_unavailable"]),
    (deployment(available=0, available_cond="False"), RolloutState.DEGRADED,
     ["deployment_unavailable", "deployment_replicas_unavailable"]),
    (deployment(paused=True, updated=1), RolloutState.PAUSED, []),
    (deployment(replicas=0, current=0, updated=0, available=0), RolloutState.COMPLETE, []),
])
def test_rollout_state(doc: dict[str, Any], state: RolloutState, codes: list[str]) -> None:
    """kubectl rollout status' order (generation observed, deadline, updated, old, available), plus
    replicas lost after a finished rollout (degraded) and a paused rollout."""
    assert deployment_status(doc).state is state
    _, problems = judge_deployments({"items": [doc]})
    assert sorted(p.code for p in problems) == sorted(codes)


def test_in_progress_rollout_is_not_an_outage() -> None:
    """A rollout under way is reported (``info``) but leaves the check ok; a stuck one does not."""
    _, moving = judge_deployments({"items": [deployment(generation=3, observed=2, updated=2)]})
    _, stuck = judge_deployments({"items": [deployment(progressing=("False", "ProgressDeadlineExceeded"))]})
    assert ProbeResult.build(component="kubernetes_cluster", latency_ms=1.0, problems=moving).ok
    assert not ProbeResult.build(component="kubernetes_cluster", latency_ms=1.0, problems=stuck).ok


def test_deployments_fixture() -> None:
    """The replayed DeploymentList: UserManagement stuck and unavailable, OrderManagement complete,
    Billing's new generation not yet observed; a deployment of no service is left out."""
    details, problems = judge_deployments(fixture("deployments.json"),
                                          services=("UserManagement", "OrderManagement", "Billing"))
    by_name = {d["name"]: d for d in details["deployments"]}
    assert set(by_name) == {"usermanagement", "ordermanagement", "billing"}
    um = by_name["usermanagement"]
    assert (um["desiredReplicas"], um["updatedReplicas"], um["readyReplicas"], um["availableReplicas"]) == (3, 3, 0, 0)
    assert um["rollout"] == "stuck" and um["progressing"] == "False (ProgressDeadlineExceeded)"
    assert um["message"] == 'ReplicaSet "usermanagement-7c9d8f6b5" has timed out progressing.'
    assert by_name["ordermanagement"]["rollout"] == "complete" and by_name["billing"]["rollout"] == "observing"
    assert details["byRollout"] == {"complete": 1, "observing": 1, "stuck": 1} and not details["truncated"]
    assert [(p.code, p.severity) for p in problems] == [
        ("rollout_stuck", "error"), ("deployment_unavailable", "error"), ("rollout_in_progress", "info")]
    healthy, none = judge_deployments(fixture("deployments_healthy.json"), services=("UserManagement",
                                                                                    "OrderManagement"))
    assert none == [] and healthy["byRollout"] == {"complete": 2}


def test_deployments_hostile_input() -> None:
    """Missing or mistyped fields do not raise: counts default to 0, replicas to 1, text is cut."""
    weird = {"metadata": {"name": "x" * 5000, "generation": "7"}, "spec": {"replicas": True},
             "status": {"conditions": ["junk", {"type": "Progressing", "reason": "ProgressDeadlineExceeded",
                                                "message": "y" * 5000}]}}
    details, problems = judge_deployments({"items": [weird, 3, None], "metadata": {"continue": "abc"}})
    [d] = details["deployments"]
    assert d["desiredReplicas"] == 1 and d["rollout"] == "stuck" and len(d["name"]) == 200
    assert details["truncated"] and all(len(p.message) < 700 for p in problems)
