"""``python -m drivers.sdk_wheel [--out DIR]`` (``make sdk-wheel``) — the SDK as a wheel of its own,
``sfa-sdk`` (import name ``sfa_sdk``), for platform services and clients.

The SDK (``sdk/``) imports ``protocol/`` and a few adapters (the MQTT bus, signing). Installed in a
platform service's environment, top-level names such as ``protocol`` or ``adapters`` could collide
with the service's own, so the wheel ships everything under ``sfa_sdk``:

- ``sdk.X`` → ``sfa_sdk.X``; ``protocol.X`` → ``sfa_sdk.protocol.X``; ``adapters.X`` →
  ``sfa_sdk._adapters.X`` (private: the SDK re-exports what callers need, e.g. ``MqttBus``).

Nothing is duplicated in the repository: the modules the SDK reaches (found by following its
imports from every ``sdk/*.py``) are staged in a temporary directory with their absolute imports
rewritten, the result is checked (no first-party import other than ``sfa_sdk`` remains, every
third-party import is a declared dependency), and uv builds the wheel (hatchling) from the staged
tree, its own minimal metadata and ``sdk/README.md``.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROG = "python -m drivers.sdk_wheel"
DIST = "sfa-sdk"
PACKAGE = "sfa_sdk"
# First-party top-level packages: the SDK may reach only the first three, renamed.
RENAMES = {"sdk": PACKAGE, "protocol": f"{PACKAGE}.protocol", "adapters": f"{PACKAGE}._adapters"}
FIRST_PARTY = {"protocol", "policies", "adapters", "actors", "drivers", "sdk", "benchmarks", "tests"}
# Third-party import name → distribution; the version specifiers are the project's own.
REQUIRED = {"aiomqtt": ("aiomqtt",), "paho": ("paho-mqtt",), "pydantic": ("pydantic",), "orjson": ("orjson",),
            "cryptography": ("cryptography",),
            "opentelemetry": ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http")}
"""Top-level import name -> the distributions the wheel requires for it."""
OPTIONAL = {"redis": "redis"}  # imported only by sdk.enforcement's Redis ban source: extra [redis]
_IMPORT_LINE = re.compile(r"^(\s*)(from|import)(\s+)(sdk|protocol|adapters)\b")


class SdkWheelError(RuntimeError):
    """The SDK cannot be packaged as it is (an import the wheel could not satisfy)."""


@dataclass(frozen=True)
class Staged:
    modules: tuple[str, ...]  # repository module names, sorted
    third_party: frozenset[str]  # top-level import names outside the standard library


def _source(module: str) -> Path:
    path = REPO.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _imports(tree: ast.AST) -> Iterable[tuple[ast.stmt, str]]:
    """(statement, absolute module name) of every import, the names imported from a module too
    (``from protocol import topics`` may import the module ``protocol.topics``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise SdkWheelError(f"line {node.lineno}: relative import; the SDK's imports are absolute")
            assert node.module is not None
            yield node, node.module
            for alias in node.names:
                yield node, f"{node.module}.{alias.name}"


def reached_modules(roots: Iterable[str]) -> Staged:
    """Every first-party module reachable from ``roots`` (with the packages that contain them)."""
    todo, seen, third = list(roots), set(), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if "." in module:
            todo.append(module.rsplit(".", 1)[0])  # its package's __init__ runs first
        for _, name in _imports(ast.parse(_source(module).read_text(), str(_source(module)))):
            top = name.split(".")[0]
            if top in FIRST_PARTY:
                if top not in RENAMES:
                    raise SdkWheelError(f"{module} imports {name}: only sdk, protocol and adapters can be shipped")
                if _source(name).exists():
                    todo.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third.add(top)
    return Staged(tuple(sorted(seen)), frozenset(third))


def rewrite(source: str) -> str:
    """``source`` with its absolute first-party imports moved under ``sfa_sdk`` (docstring
    examples too: a line that starts with ``from sdk import`` reads right in the wheel)."""
    return "\n".join(_IMPORT_LINE.sub(lambda m: m[1] + m[2] + m[3] + RENAMES[m[4]], line)
                     for line in source.split("\n"))


def check_rewritten(module: str, source: str, shipped: set[str]) -> None:
    """Refuse ``source`` if it still imports a first-party top-level name, imports a ``sfa_sdk``
    module the wheel does not ship, or binds ``sfa_sdk`` where it meant a submodule."""
    for node, name in _imports(ast.parse(source)):
        top = name.split(".")[0]
        if top in FIRST_PARTY:
            raise SdkWheelError(f"{module}, line {node.lineno}: {name} left after the rewrite")
        if top != PACKAGE:
            continue
        if isinstance(node, ast.Import) and any(a.asname is None and "." in a.name for a in node.names):
            raise SdkWheelError(f"{module}, line {node.lineno}: `import {name}` binds {PACKAGE}; use from … import")
        is_module_import = isinstance(node, ast.Import) or name == getattr(node, "module", None)
        if is_module_import and name not in shipped:
            raise SdkWheelError(f"{module}, line {node.lineno}: {name} is not in the wheel")


def _target(module: str) -> str:
    top, _, rest = module.partition(".")
    return RENAMES[top] + (f".{rest}" if rest else "")


def _requirements() -> dict[str, str]:
    """Distribution name → the project's requirement string for it (dependencies and dev group)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    specs = [*project["project"]["dependencies"], *project.get("dependency-groups", {}).get("dev", [])]
    out = {}
    for spec in specs:
        name = re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0].lower()
        out[name] = spec
    return out


def _pyproject(version: str, staged: Staged) -> str:
    unknown = staged.third_party - REQUIRED.keys() - OPTIONAL.keys()
    if unknown:
        raise SdkWheelError(f"the SDK imports {', '.join(sorted(unknown))}: add the distribution to REQUIRED")
    reqs = _requirements()
    deps = ", ".join(f'"{reqs[d]}"' for n in sorted(staged.third_party & REQUIRED.keys()) for d in REQUIRED[n])
    extras = "\n".join(f'{OPTIONAL[n]} = ["{reqs[OPTIONAL[n]]}"]' for n in sorted(staged.third_party & OPTIONAL.keys()))
    return f'''[build-system]
requires = ["hatchling>=1.26"]
build-backend = "hatchling.build"

[project]
name = "{DIST}"
version = "{version}"
description = "Serve and call services of an SFA platform (JSON-RPC 2.0 over MQTT 5), with sfa-ops' signals"
readme = "README.md"
requires-python = ">=3.11,<3.14"
dependencies = [{deps}]
classifiers = [
    "Framework :: AsyncIO",
    "Programming Language :: Python :: 3 :: Only",
    "Programming Language :: Python :: 3.11",
    "Programming Language :: Python :: 3.12",
    "Programming Language :: Python :: 3.13",
    "Typing :: Typed",
]

[project.optional-dependencies]
{extras}

[tool.hatch.build.targets.wheel]
packages = ["{PACKAGE}"]
'''


def stage(into: Path) -> Staged:
    """Write the wheel's source tree (pyproject.toml, README.md, sfa_sdk/) under ``into``."""
    roots = ["sdk"] + [f"sdk.{p.stem}" for p in sorted((REPO / "sdk").glob("*.py")) if p.stem != "__init__"]
    staged = reached_modules(roots)
    shipped = {_target(m) for m in staged.modules}
    for module in staged.modules:
        src = _source(module)
        where = _target(module).split(".")
        dest = into.joinpath(*where, "__init__.py") if src.name == "__init__.py" else into.joinpath(*where).with_suffix(".py")
        dest.parent.mkdir(parents=True, exist_ok=True)
        text = rewrite(src.read_text())
        check_rewritten(module, text, shipped)
        dest.write_text(text)
    for target in shipped:  # every enclosing package is shipped, with its __init__
        parts = target.split(".")
        for n in range(1, len(parts)):
            if not into.joinpath(*parts[:n], "__init__.py").exists():
                raise SdkWheelError(f"{'.'.join(parts[:n])} (package of {target}) is not in the wheel")
    shutil.copy(REPO / "sdk" / "py.typed", into / PACKAGE / "py.typed")
    shutil.copy(REPO / "sdk" / "README.md", into / "README.md")
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    (into / "pyproject.toml").write_text(_pyproject(version, staged))
    return staged


def uv_binary() -> str:
    """The project's uv (``.tools/uv``, what ``make setup`` installs), else the one on PATH."""
    pinned = REPO / ".tools" / "uv" / "bin" / "uv"
    found = str(pinned) if pinned.exists() else shutil.which("uv")
    if not found:
        raise SdkWheelError("uv not found: run `make setup` (it installs .tools/uv)")
    return found


def build(out: Path) -> Path:
    """Stage and build the wheel into ``out``; returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sfa-sdk-") as tmp:
        stage(Path(tmp))
        before = set(out.glob("*.whl"))
        env = {**os.environ, "UV_NO_CONFIG": "1"}
        proc = subprocess.run([uv_binary(), "build", "--wheel", "--out-dir", str(out.resolve()), "--quiet", tmp],
                              env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SdkWheelError(f"uv build failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    name = PACKAGE + "-"
    built = sorted(p for p in out.glob(f"{name}*.whl") if p not in before) or sorted(out.glob(f"{name}*.whl"))
    if not built:
        raise SdkWheelError(f"uv build wrote no {name}*.whl into {out}")
    return built[-1]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("dist"), help="directory for the wheel (default: dist)")
    args = ap.parse_args(argv)
    try:
        wheel = build(args.out)
    except SdkWheelError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
