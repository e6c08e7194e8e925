"""deploy/kuberay/ validates against the real Kubernetes (1.36) and KubeRay (v1.7.0) schemas, strictly
(tests/support/k8s_schemas.py; sources in tests/fixtures/schemas/SOURCE.md), and holds what a schema
cannot say: token auth on every Ray container, probes on operate's --http port, no secret outside
the example Secret, and RBAC covering every call of the Kubernetes probe."""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.k8s_schemas import errors, known_kinds, walk

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "deploy" / "kuberay"
PROBE = ROOT / "adapters" / "probes" / "kubernetes_probe.py"
EXAMPLE_SECRETS = "secrets.example.yaml"
TOKEN_SECRET = "sfa-ops-ray-token"
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)


def _files() -> list[Path]:
    return sorted(p for p in KUBERAY.glob("*.yaml") if p.name != "kustomization.yaml")


def _documents() -> list[tuple[str, dict[str, Any]]]:
    """(where, manifest) for every document, including RayJob templates kept in ConfigMaps."""
    out: list[tuple[str, dict[str, Any]]] = []
    for path in _files():
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            out.append((f"{path.name}#{i}", doc))
            if doc["kind"] == "ConfigMap":
                for key, text in doc.get("data", {}).items():
                    if key.endswith(".yaml"):
                        out.append((f"{path.name}#{i}:{key}", yaml.safe_load(text)))
    return out


DOCS = _documents()


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in DOCS if d["kind"] == kind]


def _one(kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in _of_kind(kind) if d["metadata"].get("name") == name]
    return doc


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod spec in the manifests (Deployment, CronJob, RayCluster groups, RayJob clusters)."""
    for where, doc in DOCS:
        for path, node in walk(doc):
            if path and path[-1] == "template" and isinstance(node, Mapping) and "containers" in node.get("spec", {}):
                yield f"{where}:{'/'.join(map(str, path))}", node["spec"]


def _ray_cluster_specs() -> list[dict[str, Any]]:
    return [d["spec"] for d in _of_kind("RayCluster")] + [d["spec"]["rayClusterSpec"] for d in _of_kind("RayJob")]


def _image() -> str:
    return str(_one("RayCluster", "sfa-ops")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"])


def _env(container: Mapping[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


# --- schemas -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "doc"), DOCS, ids=[w for w, _ in DOCS])
def test_every_manifest_validates_against_its_schema(where: str, doc: dict[str, Any]) -> None:
    assert (doc["apiVersion"], doc["kind"]) in known_kinds()
    assert errors(doc) == []


def test_the_deployment_uses_the_kinds_the_issue_asks_for() -> None:
    kinds = {d["kind"] for _, d in DOCS}
    assert {"RayCluster", "RayJob", "CronJob", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
            "RoleBinding", "Secret", "Service", "Deployment"} <= kinds


@pytest.mark.parametrize(("kind", "name", "path", "value", "message"), [
    ("Deployment", "sfa-ops-operate", ("spec", "template", "spec", "containers", 0, "livenesProbe"), {},
     "Additional properties are not allowed"),
    ("Deployment", "sfa-ops-operate", ("spec", "replicas"), "one", "is not of type 'integer'"),
    ("RayCluster", "sfa-ops", ("spec", "headGroupSpec", "template", "spec", "containers", 0, "readinesProbe"), {},
     "Additional properties are not allowed"),
    ("RayCluster", "sfa-ops", ("spec", "workerGroupSpecs", 0, "replicas"), "two", "is not of type 'integer'"),
    ("RayCluster", "sfa-ops", ("spec", "authOptions", "mode"), "tokens", "is not one of"),
    ("RayCluster", "sfa-ops", ("metadata", "labelz"), {}, "Additional properties are not allowed"),
    ("RayJob", None, ("spec", "entrypointt"), "python", "Additional properties are not allowed"),
    ("CronJob", "sfa-ops-nightly", ("spec", "schedule"), 5, "is not of type 'string'"),
    ("ClusterRole", "sfa-ops-node-reader", ("rules", 0, "verb"), ["get"], "Additional properties are not allowed"),
])
def test_a_broken_manifest_fails_validation(kind: str, name: str | None, path: tuple[Any, ...], value: Any,
                                            message: str) -> None:
    """The validator is not vacuous: an unknown field or a wrong type anywhere is refused."""
    doc = copy.deepcopy(_of_kind(kind)[0] if name is None else _one(kind, name))
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    found = errors(doc)
    assert any(message in e for e in found), found


def test_kustomization_lists_every_manifest_but_the_example_secrets() -> None:
    kustomization = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in _files() if p.name != EXAMPLE_SECRETS)
    assert all("namespace" not in d["metadata"] for _, d in DOCS), "namespace-agnostic: kustomize sets it"
    # kustomize rewrites a binding subject's namespace only for subjects named "default"
    [binding] = _of_kind("ClusterRoleBinding")
    assert {s["namespace"] for s in binding["subjects"]} == {kustomization["namespace"]}


# --- token auth --------------------------------------------------------------------------------


def test_every_ray_cluster_uses_token_auth_with_the_token_secret() -> None:
    specs = _ray_cluster_specs()
    assert len(specs) == 2
    for spec in specs:
        assert spec["authOptions"] == {"mode": "token", "secretName": TOKEN_SECRET}
        assert spec["rayVersion"] == "2.60.0"


def test_every_sfa_ops_container_runs_with_token_auth_from_the_mounted_secret() -> None:
    """RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH naming a file of the token Secret's volume, on
    every container running the sfa-ops image (Ray heads and workers, operate)."""
    seen = 0
    for where, spec in _pod_specs():
        token_volumes = {v["name"] for v in spec.get("volumes", []) if v.get("secret", {}).get("secretName") == TOKEN_SECRET}
        for c in spec["containers"]:
            if c.get("command", [""])[0] == "kubectl":  # the scheduler's pod talks to Kubernetes only
                continue
            seen += 1
            env = _env(c)
            assert env["RAY_AUTH_MODE"].get("value") == "token", where
            token_path = env["RAY_AUTH_TOKEN_PATH"]["value"]
            mounts = [m for m in c["volumeMounts"] if m["name"] in token_volumes]
            assert [m["mountPath"] for m in mounts] == [str(Path(token_path).parent)], where
            assert Path(token_path).name == "auth_token" and all(m.get("readOnly") for m in mounts), where
    assert seen == 5  # operate, the RayCluster's head and workers, the nightly RayJob's head and workers


def test_every_container_has_resources_and_the_same_image() -> None:
    for where, spec in _pod_specs():
        for c in spec["containers"]:
            assert c["image"] == _image(), where
            assert {"requests", "limits"} <= set(c["resources"]), where
            assert c["resources"]["limits"]["memory"], where


# --- operate: probes, status Service, Ray address -------------------------------------------------


def _operate() -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = _one("Deployment", "sfa-ops-operate")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


def test_operate_probes_hit_healthz_and_readyz_on_its_http_port() -> None:
    _, c = _operate()
    assert c["command"] == ["python", "-m", "drivers.operate"]
    port = int(_env(c)["SFA_OPS_HTTP"]["value"].rpartition(":")[2])
    assert _env(c)["SFA_OPS_HTTP"]["value"].startswith("0.0.0.0:")  # reachable by the kubelet
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == port, probe


def test_the_status_service_reaches_operate_and_is_scraped() -> None:
    deployment, c = _operate()
    service = _one("Service", "sfa-ops-status")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    port = int(_env(c)["SFA_OPS_HTTP"]["value"].rpartition(":")[2])
    [sp] = service["spec"]["ports"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]}[sp["targetPort"]] == port
    notes = service["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and int(notes["prometheus.io/port"]) == port
    assert notes["prometheus.io/path"] == "/metrics"


def test_operate_joins_the_ray_cluster_through_its_client_port() -> None:
    cluster = _one("RayCluster", "sfa-ops")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    client_port = {p["name"]: p["containerPort"] for p in head["ports"]}["client"]
    _, c = _operate()
    assert _env(c)["SFA_OPS_RAY_ADDRESS"]["value"] == f"ray://{cluster['metadata']['name']}-head-svc:{client_port}"


# --- secrets -------------------------------------------------------------------------------------


def test_no_secret_value_outside_the_example_secrets() -> None:
    """Secrets only in secrets.example.yaml, with placeholders; elsewhere a secret-looking variable
    is a reference or a file path, and no URL carries a password."""
    for where, doc in DOCS:
        if doc["kind"] == "Secret":
            assert where.startswith(EXAMPLE_SECRETS), where
            assert all("REPLACE" in v for v in doc["stringData"].values()) and "data" not in doc, where
            continue
        for path, node in walk(doc):
            if isinstance(node, Mapping) and "name" in node and "value" in node and SECRETISH.search(node["name"]):
                assert str(node["value"]).startswith("/") or node["name"] == "RAY_AUTH_MODE", (where, path)
            if isinstance(node, str) and "://" in node:
                assert urlsplit(node.strip()).password is None, (where, path)
        if doc["kind"] == "ConfigMap":
            assert not any(SECRETISH.search(k) for k in doc["data"]), where


def test_every_referenced_secret_key_exists_in_the_example() -> None:
    example = {d["metadata"]["name"]: set(d["stringData"]) for d in _of_kind("Secret")}
    for where, doc in DOCS:
        for path, node in walk(doc):
            if path and path[-1] == "secretKeyRef":
                assert node["key"] in example[node["name"]], (where, path)
            if path and path[-1] == "secret" and isinstance(node, Mapping) and "secretName" in node:
                assert node["secretName"] in example, (where, path)
    assert "auth_token" in example[TOKEN_SECRET]  # the key KubeRay reads (authOptions.secretName)


# --- RBAC ----------------------------------------------------------------------------------------


def _probe_calls() -> set[tuple[str, str, bool]]:
    """(API group, resource, cluster-wide) of every list call in the Kubernetes probe's source."""
    tree = ast.parse(PROBE.read_text())
    groups = {"CoreV1Api": "", "AppsV1Api": "apps"}
    api_group: dict[str, str] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Attribute) and node.value.func.attr in groups
                and isinstance(node.targets[0], ast.Attribute)):
            api_group[node.targets[0].attr] = groups[node.value.func.attr]
    calls: set[tuple[str, str, bool]] = set()
    [body] = [f for f in ast.walk(tree) if isinstance(f, ast.AsyncFunctionDef) and f.name == "_body"]
    for node in ast.walk(body):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("_call", "_optional")):
            continue
        fn = node.args[0]
        assert isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Attribute)
        method = fn.attr
        if method == "list_namespaced_custom_object":
            # (group, version, namespace, plural): the group and the plural are literals
            consts = [str(a.value) for a in node.args[1:] if isinstance(a, ast.Constant)]
            calls.add((consts[0], consts[-1], False))
            continue
        namespaced = method.startswith("list_namespaced_")
        singular = method.removeprefix("list_namespaced_").removeprefix("list_")
        calls.add((api_group[fn.value.attr], singular + "s", not namespaced))
    return calls


def _grants(kind: str) -> set[tuple[str, str, str]]:
    return {(g, r, v) for d in _of_kind(kind) for rule in d["rules"]
            for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def test_the_probe_calls_are_derived_from_its_source() -> None:
    assert _probe_calls() == {("", "nodes", True), ("", "pods", False), ("apps", "deployments", False),
                              ("metrics.k8s.io", "pods", False)}


def test_rbac_covers_every_kubernetes_probe_call_and_nothing_more() -> None:
    calls = _probe_calls()
    cluster = {(g, r, v) for g, r, v in _grants("ClusterRole")}
    namespaced = {(g, r, v) for d in _of_kind("Role") if d["metadata"]["name"] == "sfa-ops-workload-reader"
                  for rule in d["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    for group, resource, cluster_wide in calls:
        held = cluster if cluster_wide else namespaced
        assert {(group, resource, "get"), (group, resource, "list")} <= held, (group, resource)
    assert {(g, r) for g, r, _ in cluster | namespaced} == {(g, r) for g, r, _ in calls}
    assert {v for *_, v in cluster | namespaced} == {"get", "list"}  # read-only


def test_the_roles_are_bound_to_the_accounts_the_pods_run_as() -> None:
    bound = {(b["roleRef"]["kind"], b["roleRef"]["name"]): {s["name"] for s in b["subjects"]}
             for kind in ("ClusterRoleBinding", "RoleBinding") for b in _of_kind(kind)}
    assert bound[("ClusterRole", "sfa-ops-node-reader")] == {"sfa-ops"}
    assert bound[("Role", "sfa-ops-workload-reader")] == {"sfa-ops"}
    assert bound[("Role", "sfa-ops-rayjob-creator")] == {"sfa-ops-scheduler"}
    cluster = _one("RayCluster", "sfa-ops")["spec"]
    for spec in [cluster["headGroupSpec"]["template"]["spec"], cluster["workerGroupSpecs"][0]["template"]["spec"],
                 _one("Deployment", "sfa-ops-operate")["spec"]["template"]["spec"]]:
        assert spec["serviceAccountName"] == "sfa-ops"  # the Kubernetes check runs in an actor on a Ray pod
    cron = _one("CronJob", "sfa-ops-nightly")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert cron["serviceAccountName"] == "sfa-ops-scheduler"
    assert _grants("Role") >= {("ray.io", "rayjobs", "create")}


# --- the nightly RayJob ---------------------------------------------------------------------------


def test_the_cronjob_creates_the_rayjob_it_mounts() -> None:
    cron = _one("CronJob", "sfa-ops-nightly")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [c] = cron["containers"]
    assert c["command"][:3] == ["kubectl", "create", "-f"]  # create: generateName needs it (apply does not)
    mount = Path(c["command"][3])
    [vm] = [m for m in c["volumeMounts"] if m["mountPath"] == str(mount.parent)]
    [vol] = [v for v in cron["volumes"] if v["name"] == vm["name"]]
    rayjobs = _one("ConfigMap", vol["configMap"]["name"])
    job = yaml.safe_load(rayjobs["data"][mount.name])
    assert job["kind"] == "RayJob" and job["metadata"]["generateName"]
    assert job["spec"]["entrypoint"] == "bash /home/ray/sfa-ops/deploy/nightly.sh"
    assert (ROOT / "deploy" / "nightly.sh").is_file()
    env = _env(job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0])
    assert env["SFA_OPS_STORE"]["valueFrom"]["configMapKeyRef"]["name"] == "sfa-ops-config"


# --- the image ----------------------------------------------------------------------------------


def test_the_image_matches_the_lock_and_the_manifests() -> None:
    """deploy/Dockerfile (not built here) starts from the Ray release uv.lock pins, with the Python
    the project requires, the uv install-python.sh pins, and copies every package Ray workers import."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    ray_pin = re.search(r'"ray\[default\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert ray_pin is not None
    assert f"FROM rayproject/ray:{ray_pin[1]}-py311\n" in dockerfile
    assert all(spec["rayVersion"] == ray_pin[1] for spec in _ray_cluster_specs())
    uv = re.search(r"^UV_VERSION=(\S+)$", (ROOT / "scripts" / "install-python.sh").read_text(), re.MULTILINE)
    assert uv is not None and f"ARG UV_VERSION={uv[1]}\n" in dockerfile
    assert "--no-dev" in dockerfile
    for package in ("protocol", "policies", "adapters", "actors", "sdk", "drivers"):
        assert f"COPY --chown=ray:users {package}/ {package}/\n" in dockerfile, package
    assert "COPY --chown=ray:users deploy/nightly.sh deploy/nightly.sh\n" in dockerfile
    assert "PYTHONPATH=/home/ray/sfa-ops" in dockerfile
