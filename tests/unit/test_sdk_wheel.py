"""The SDK wheel's staging (``drivers.sdk_wheel``): imports moved under ``sfa_sdk``, and refused
when the SDK reaches what the wheel cannot ship. Building and installing it:
``tests/integration/test_sdk_wheel.py``."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from drivers.sdk_wheel import FIRST_PARTY, SdkWheelError, check_rewritten, rewrite, stage


def test_rewrite_moves_first_party_imports_under_sfa_sdk() -> None:
    src = ("from sdk.errors import X\nimport adapters.mqtt.bus as bus\n    from protocol import topics\n"
           "from protocolish import y\nfrom sdk import (\n    A,\n)\n")
    assert rewrite(src) == ("from sfa_sdk.errors import X\nimport sfa_sdk._adapters.mqtt.bus as bus\n"
                            "    from sfa_sdk.protocol import topics\nfrom protocolish import y\n"
                            "from sfa_sdk import (\n    A,\n)\n")


@pytest.mark.parametrize(("source", "why"), [
    ("from policies.common.config import parse_duration\n", "policies.common.config left after the rewrite"),
    ("import sfa_sdk._adapters.store\n", "binds sfa_sdk"),
    ("from sfa_sdk._adapters.store import Store\n", "sfa_sdk._adapters.store is not in the wheel"),
])
def test_check_refuses_what_the_wheel_cannot_satisfy(source: str, why: str) -> None:
    with pytest.raises(SdkWheelError, match=why):
        check_rewritten("sdk.x", source, {"sfa_sdk", "sfa_sdk._adapters", "sfa_sdk._adapters.mqtt.bus"})


def test_staged_tree_imports_only_sfa_sdk_and_declared_dependencies(tmp_path: Path) -> None:
    staged = stage(tmp_path)
    assert "sdk.client" in staged.modules and "protocol.rpc" in staged.modules and "adapters.mqtt.bus" in staged.modules
    assert not any(m.startswith(("policies", "actors", "drivers", "adapters.store")) for m in staged.modules)
    files = sorted((tmp_path / "sfa_sdk").rglob("*.py"))
    assert len(files) == len(staged.modules)
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not {n.split(".")[0] for n in names} & FIRST_PARTY, f
    assert (tmp_path / "sfa_sdk" / "py.typed").exists()
    meta = tomllib.loads((tmp_path / "pyproject.toml").read_text())["project"]
    assert meta["name"] == "sfa-sdk"
    assert {d.split(">")[0].split("<")[0] for d in meta["dependencies"]} == {
        "aiomqtt", "cryptography", "orjson", "paho-mqtt", "pydantic",
        "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"}
    assert meta["optional-dependencies"] == {"redis": ["redis>=5.0"]}
    assert (tmp_path / "README.md").read_text().startswith("# sfa-sdk")
