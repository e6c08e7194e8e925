"""The ``kubernetes_cluster`` probe: node readiness and pressure conditions, and per service
(label ``app={Service}`` in one namespace, as in the seed) a :class:`PodStatus` for service monitors,
the containers' CPU/memory usage against their limits (metrics API, ``metrics.k8s.io/v1beta1``) and
the services' Deployment rollouts (``apps/v1``), judged in :mod:`policies.infrastructure.kubernetes_state`.

The metrics API and the Deployment list are optional parts: when one answers with an HTTP error
(no metrics-server: 404; RBAC: 403) its detail says why and is ``available: false``; the check
itself still stands on the nodes and pods.

The ``kubernetes`` package is synchronous: each API call runs in a worker thread with its own
request timeout, and the whole check is bounded by ``asyncio.timeout`` as every probe is. Lists
are read raw (``_preload_content=False``) and parsed with orjson: faster than the package's model
objects, and the camelCase field names are the API's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from adapters.probes import ProbeResult, ProbeSet, ProbeSetup, Problem, run_check
from policies.infrastructure.kubernetes_state import (
    MAX_DEPLOYMENTS,
    deployments_unavailable,
    judge_deployments,
    judge_pod_resources,
    metrics_unavailable,
)
from policies.infrastructure.thresholds import KubernetesThresholds
from protocol.names import check_service_name

COMPONENT = "kubernetes_cluster"
PRESSURE_CONDITIONS = ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")
RESTART_LOOP = "pod_restart_loop"
OOM_KILLED = "container_oom_killed"


@dataclass(frozen=True, slots=True, kw_only=True)
class PodStatus:
    """One service's pods, as the seed's ``ServiceHealthState`` counts them: ``ready`` pods have
    every container ready; ``reason`` is ``pod_restart_loop`` (CrashLoopBackOff or restarts over
    the threshold); ``failure_reason`` is ``container_oom_killed`` when a container was OOM-killed,
    else the last termination or waiting reason Kubernetes gave."""

    service: str
    running: int
    ready: int
    total: int
    restarts: int
    reason: str | None = None
    failure_reason: str | None = None

    def to_details(self) -> dict[str, Any]:
        return {"runningPods": self.running, "readyPods": self.ready, "totalPods": self.total,
                "restarts": self.restarts, "reason": self.reason, "failureReason": self.failure_reason}


def api_client(
    *, host: str | None = None, token: str | None = None, verify_ssl: bool = True,
    ca_file: str | None = None, kubeconfig: str | None = None, context: str | None = None,
) -> k8s.ApiClient:
    """An API client: explicit ``host`` (tests, or a URL plus token), else in-cluster service
    account, else ``kubeconfig`` (``~/.kube/config`` when None)."""
    conf = k8s.Configuration()
    if host is not None:
        conf.host = host
        conf.verify_ssl = verify_ssl
        conf.ssl_ca_cert = ca_file
        if token:
            conf.api_key = {"authorization": f"Bearer {token}"}
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=conf)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=conf)
    return k8s.ApiClient(conf)


def summarize_nodes(node_list: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Pure: a v1 NodeList → details and problems (not Ready → error, a pressure → warning)."""
    problems: list[Problem] = []
    nodes: list[dict[str, Any]] = []
    for item in node_list.get("items", []):
        name = item.get("metadata", {}).get("name", "?")
        conds = {c.get("type"): c for c in item.get("status", {}).get("conditions", [])}
        ready = conds.get("Ready", {}).get("status") == "True"
        pressures = [t for t in PRESSURE_CONDITIONS if conds.get(t, {}).get("status") == "True"]
        unschedulable = bool(item.get("spec", {}).get("unschedulable", False))
        nodes.append({"name": name, "ready": ready, "pressures": pressures, "unschedulable": unschedulable})
        if not ready:
            why = conds.get("Ready", {}).get("reason") or "no Ready condition"
            problems.append(Problem(code="node_not_ready", severity="error",
                                    message=f"Kubernetes node {name} is not Ready ({why})"))
        for p in pressures:
            problems.append(Problem(code="node_pressure", severity="warning",
                                    message=f"Kubernetes node {name} reports {p}"))
    ready_count = sum(1 for n in nodes if n["ready"])
    return {"readyNodes": ready_count, "totalNodes": len(nodes), "nodes": nodes}, problems


def pod_status(service: str, pods: Iterable[Mapping[str, Any]], *, restart_threshold: int) -> PodStatus:
    """Pure: the pods of one service (v1 Pod objects) → :class:`PodStatus`."""
    running = ready = total = restarts = 0
    loop = oom = False
    last_reason: str | None = None
    for pod in pods:
        total += 1
        status = pod.get("status", {})
        if status.get("phase") == "Running":
            running += 1
        containers = status.get("containerStatuses") or []
        if containers and all(c.get("ready") for c in containers):
            ready += 1
        pod_restarts = 0
        for c in containers:
            pod_restarts += int(c.get("restartCount", 0))
            waiting = (c.get("state") or {}).get("waiting") or {}
            terminated = (c.get("lastState") or {}).get("terminated") or (c.get("state") or {}).get("terminated") or {}
            if waiting.get("reason") == "CrashLoopBackOff":
                loop = True
            if terminated.get("reason") == "OOMKilled":
                oom = True
            last_reason = terminated.get("reason") or waiting.get("reason") or last_reason
        restarts += pod_restarts
        if pod_restarts >= restart_threshold:
            loop = True
    return PodStatus(service=service, running=running, ready=ready, total=total, restarts=restarts,
                     reason=RESTART_LOOP if loop else None,
                     failure_reason=OOM_KILLED if oom else last_reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class KubernetesSnapshot:
    """A check's result plus the pod status of every configured service (empty when it failed)."""

    result: ProbeResult
    pods: Mapping[str, PodStatus]


class KubernetesProbe:
    """``kubernetes_cluster``: ``check()`` for the component, ``snapshot()`` for pods as well."""

    component = COMPONENT

    def __init__(
        self, *, api: k8s.ApiClient, timeout_s: float, thresholds: KubernetesThresholds,
        namespace: str = "default", services: Sequence[str] = (),
    ) -> None:
        self.api = api
        self.core = k8s.CoreV1Api(api)
        self.apps = k8s.AppsV1Api(api)
        self.custom = k8s.CustomObjectsApi(api)
        self.timeout_s = timeout_s
        self.thresholds = thresholds
        self.namespace = namespace
        # names go into a label selector: validate them (DESIGN §4)
        self.services = tuple(check_service_name(s) for s in services)
        self._pods: dict[str, PodStatus] = {}

    async def check(self) -> ProbeResult:
        return (await self.snapshot()).result

    async def snapshot(self) -> KubernetesSnapshot:
        self._pods = {}
        result = await run_check(COMPONENT, self.timeout_s, self._body, unreachable_severity="error")
        return KubernetesSnapshot(result=result, pods=dict(self._pods))

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        resp = await asyncio.to_thread(fn, *args, _preload_content=False, _request_timeout=self.timeout_s, **kwargs)
        try:
            return orjson.loads(resp.data)
        finally:
            resp.release_conn()

    async def _optional(self, fn: Any, *args: Any, **kwargs: Any) -> Mapping[str, Any] | k8s.ApiException:
        """An optional list: an HTTP error answer is returned (and judged), not raised."""
        try:
            doc = await self._call(fn, *args, **kwargs)
        except k8s.ApiException as exc:
            return exc
        return doc if isinstance(doc, Mapping) else {}

    async def _body(self) -> tuple[dict[str, Any], list[Problem]]:
        calls = [self._call(self.core.list_node)]
        if self.services:
            selector = f"app in ({','.join(self.services)})"
            calls += [
                self._call(self.core.list_namespaced_pod, self.namespace, label_selector=selector),
                self._optional(self.custom.list_namespaced_custom_object, "metrics.k8s.io", "v1beta1",
                               self.namespace, "pods", label_selector=selector),
                self._optional(self.apps.list_namespaced_deployment, self.namespace, limit=MAX_DEPLOYMENTS),
            ]
        docs = await asyncio.gather(*calls)
        details, problems = summarize_nodes(docs[0])
        if self.services:
            by_service: dict[str, list[Mapping[str, Any]]] = {s: [] for s in self.services}
            for pod in docs[1].get("items", []):
                app = (pod.get("metadata", {}).get("labels") or {}).get("app")
                if app in by_service:
                    by_service[app].append(pod)
            self._pods = {s: pod_status(s, pods, restart_threshold=self.thresholds.restarts)
                          for s, pods in by_service.items()}
            details["namespace"] = self.namespace
            details["services"] = {s: p.to_details() for s, p in self._pods.items()}
            metrics, deployments = docs[2], docs[3]
            if isinstance(metrics, k8s.ApiException):
                details["podResources"] = {"available": False, "reason": metrics_unavailable(metrics.status,
                                                                                            str(metrics.reason))}
            else:
                pods = [p for ps in by_service.values() for p in ps]
                details["podResources"], found = judge_pod_resources(
                    pods, metrics, cpu_threshold=self.thresholds.pod_cpu / 100.0,
                    memory_threshold=self.thresholds.pod_memory / 100.0)
                problems += found
            if isinstance(deployments, k8s.ApiException):
                details["deployments"] = {"available": False, "reason": deployments_unavailable(
                    deployments.status, str(deployments.reason))}
            else:
                details["deployments"], found = judge_deployments(deployments, services=self.services)
                problems += found
        return details, problems

    async def close(self) -> None:
        await asyncio.to_thread(self.api.close)


async def build(setup: ProbeSetup) -> ProbeSet:
    """``kubernetes_cluster``: nodes, plus pod status per service (``snapshot()``)."""
    s = setup.settings
    api = await asyncio.to_thread(api_client, host=s.kube_api)
    probe = KubernetesProbe(api=api, timeout_s=setup.timeout, thresholds=setup.thresholds,
                            namespace=s.kube_namespace, services=s.services)
    return ProbeSet(probes={"kubernetes": probe}, pods=probe, timeout_severity="error")
