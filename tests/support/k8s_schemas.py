"""Validate Kubernetes manifests against the real schemas kept in tests/fixtures/schemas/ (sources
and versions in SOURCE.md there): the Kubernetes OpenAPI v2 definitions for built-in kinds and
KubeRay's CRD ``openAPIV3Schema`` for RayCluster and RayJob.

Strict as kubeconform's ``-strict`` (and yannh's ``-standalone-strict`` schemas): an object schema
that lists its properties rejects any other field, unless the schema keeps unknown fields
(``x-kubernetes-preserve-unknown-fields``). IntOrString and Quantity take what the API server takes.
A custom resource's ``metadata`` is checked against ObjectMeta (its CRD schema says only "object").
CEL rules (``x-kubernetes-validations``) are not evaluated.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator, Draft7Validator
from jsonschema.exceptions import ValidationError

SCHEMAS = Path(__file__).resolve().parents[1] / "fixtures" / "schemas"
K8S_DEFINITIONS = SCHEMAS / "kubernetes-release-1.36-definitions.json"
CRDS = {("ray.io/v1", "RayCluster"): SCHEMAS / "kuberay-v1.7.0-ray.io_rayclusters.v1.json",
        ("ray.io/v1", "RayJob"): SCHEMAS / "kuberay-v1.7.0-ray.io_rayjobs.v1.json"}
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def _strict(node: Any) -> Any:
    """A copy where every object schema with listed properties rejects unlisted ones."""
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k == "properties" else _strict(v)) for k, v in node.items()}
    if "properties" in node:
        out["properties"] = {name: _strict(v) for name, v in node["properties"].items()}
        if "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


@cache
def _k8s() -> tuple[dict[str, Any], dict[tuple[str, str], str]]:
    doc = json.loads(K8S_DEFINITIONS.read_text())
    defs = _strict(doc["definitions"])
    defs[INT_OR_STRING] = {"type": ["integer", "string"]}
    defs[QUANTITY] = {"type": ["string", "number"]}
    kinds: dict[tuple[str, str], str] = {}
    for name, schema in defs.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            kinds[(api_version, gvk["kind"])] = name
    return defs, kinds


@cache
def _validator(api_version: str, kind: str) -> Draft4Validator | Draft7Validator:
    if (api_version, kind) in CRDS:
        crd = json.loads(CRDS[(api_version, kind)].read_text())
        return Draft7Validator(_strict(crd["openAPIV3Schema"]))
    kinds = _k8s()[1]
    if (api_version, kind) not in kinds:
        raise KeyError(f"no schema kept for {api_version} {kind}; add it to tests/fixtures/schemas/")
    return _definition_validator(kinds[(api_version, kind)])


@cache
def _definition_validator(name: str) -> Draft4Validator:
    defs, _ = _k8s()
    return Draft4Validator({"$ref": f"#/definitions/{name}", "definitions": defs})


def known_kinds() -> set[tuple[str, str]]:
    return set(_k8s()[1]) | set(CRDS)


def errors(doc: Mapping[str, Any]) -> list[str]:
    """Every schema violation of one manifest, as ``path: message`` (empty: valid)."""
    api_version, kind = str(doc.get("apiVersion")), str(doc.get("kind"))
    found: list[ValidationError] = list(_validator(api_version, kind).iter_errors(copy.deepcopy(dict(doc))))
    if (api_version, kind) in CRDS and isinstance(doc.get("metadata"), Mapping):
        for err in _definition_validator(OBJECT_META).iter_errors(dict(doc["metadata"])):
            err.path.appendleft("metadata")
            found.append(err)
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '.'}: {e.message}" for e in found]


def walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) in a parsed manifest, depth first."""
    yield path, node
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, (*path, i))
