"""The SDK wheel (``drivers.sdk_wheel``, ``make sdk-wheel``) as a platform service gets it: built,
installed alone into a fresh venv, imported with a clean ``sys.path`` (not the repository), and a
``sfa_sdk`` Service answering a ``sfa_sdk`` client over the real test broker, each logged in as its
own principal (``service-{name}``, ``caller``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drivers import sdk_wheel
from tests.support.broker import SessionBroker

pytestmark = pytest.mark.integration
SERVICE = "SdkWheelProbe"

# Run by the venv's python with -I (isolated: no script directory, no PYTHONPATH, no user site).
CHILD = r'''
import asyncio, json, os, sys
from pathlib import Path

import sfa_sdk
from sfa_sdk import CallContext, MqttBus, MqttConfig, Service, ServiceClient, ServiceRuntime, ValidationException

svc = Service(os.environ["PROBE_SERVICE"])


@svc.function("greet", timeout=5.0)
async def greet(name: str, ctx: CallContext) -> dict:
    return {"greeting": f"hello {name}", "method": ctx.method}


async def main() -> dict:
    async with ServiceRuntime.connect(svc, broker_url=os.environ["PROBE_SERVICE_URL"], cluster="wheel"):
        bus = MqttBus(config=MqttConfig.from_url(os.environ["PROBE_CALLER_URL"], env={}))
        await bus.start()
        try:
            await bus.wait_connected(10)
            client = ServiceClient(bus, session_id=bus.client_id)  # the ACL: session/{clientid}/response
            await client.start()
            result = await client.call(svc.name, "greet", {"name": "wheel"}, timeout=10)
            try:
                await client.call(svc.name, "greet", {}, timeout=10)
                refused = None
            except ValidationException as exc:
                refused = f"{type(exc).__module__}.{type(exc).__name__}"
        finally:
            await bus.stop()
    return {
        "result": result,
        "refused": refused,
        "sfa_sdk": sfa_sdk.__file__,
        "typed": (Path(sfa_sdk.__file__).parent / "py.typed").exists(),
        "sys_path": sys.path,
        "colliding": sorted(m for m in sys.modules if m.split(".")[0] in ("protocol", "adapters", "sdk")),
    }


print(json.dumps(asyncio.run(asyncio.wait_for(main(), 60))))
'''


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False, **kwargs)  # type: ignore[call-overload]
    assert r.returncode == 0, f"{args[:3]}: {r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the built wheel, the python of a fresh venv with only it and its dependencies)."""
    out = tmp_path_factory.mktemp("sdk-wheel")
    wheel = sdk_wheel.build(out / "dist")
    uv = sdk_wheel.uv_binary()
    env = {**os.environ, "UV_NO_CONFIG": "1"}
    env.pop("VIRTUAL_ENV", None)
    _run([uv, "venv", "--quiet", "--python", sys.executable, "--no-python-downloads", str(out / "venv")], env=env)
    python = out / "venv" / "bin" / "python"
    # The dependencies at the versions this project's venv holds (uv's cache has them): fast, and
    # the combination the rest of the suite tests. Not the project itself, nor anything editable.
    frozen = _run([uv, "pip", "freeze", "--python", sys.executable], env=env).stdout.splitlines()
    constraints = out / "constraints.txt"
    constraints.write_text("\n".join(line for line in frozen if "==" in line and not line.startswith("sfa-ops")))
    _run([uv, "pip", "install", "--quiet", "--python", str(python), "-c", str(constraints), str(wheel)], env=env)
    return wheel, python


def test_wheel_ships_only_sfa_sdk(wheel_venv: tuple[Path, Path]) -> None:
    wheel, python = wheel_venv
    site = Path(_run([str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    tops = {p.name for p in site.iterdir() if p.is_dir() and not p.name.endswith((".dist-info", "__pycache__"))}
    assert "sfa_sdk" in tops
    assert not tops & {"protocol", "adapters", "sdk", "policies", "actors", "drivers"}
    assert wheel.name.startswith("sfa_sdk-")


def test_service_answers_client_from_the_installed_wheel(
    wheel_venv: tuple[Path, Path], session_broker: SessionBroker, caller_url: str, tmp_path: Path,
) -> None:
    _, python = wheel_venv
    service_url = session_broker.url(session_broker.service_principal(SERVICE))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PROBE_SERVICE": SERVICE,
           "PROBE_SERVICE_URL": service_url, "PROBE_CALLER_URL": caller_url}
    r = _run([str(python), "-I", "-c", CHILD], env=env, cwd=tmp_path)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["result"] == {"greeting": "hello wheel", "method": "greet"}
    assert out["refused"] == "sfa_sdk.errors.ValidationException"
    assert out["colliding"] == []
    assert out["typed"] is True
    repo = str(Path(__file__).resolve().parents[2])
    assert not out["sfa_sdk"].startswith(repo)
    assert all(not p.startswith(repo) for p in out["sys_path"])


def test_installed_wheel_is_typed_for_the_services_type_checker(wheel_venv: tuple[Path, Path], tmp_path: Path) -> None:
    """mypy, run as a platform service runs it against its own venv, reads sfa_sdk's annotations
    (py.typed): a call's signature is known and a misuse is an error, not an untyped import."""
    _, python = wheel_venv
    probe = tmp_path / "probe.py"
    probe.write_text("from sfa_sdk import MqttBus, MqttConfig, Service, ServiceClient\n\n"
                     "svc = Service('Users')\n"
                     "client = ServiceClient(MqttBus(config=MqttConfig.from_url('mqtt://127.0.0.1:1883')))\n"
                     "reveal_type(client.call)\n"
                     "wrong: int = svc.name\n")
    r = subprocess.run([sys.executable, "-m", "mypy", "--python-executable", str(python), "--no-incremental",
                        "--strict", "--cache-dir", str(tmp_path / ".mypy"), str(probe)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "import-untyped" not in r.stdout and "import-not-found" not in r.stdout
    assert 'Revealed type is "def (service: str, method: str' in r.stdout
    assert 'probe.py:6: error: Incompatible types in assignment (expression has type "str", variable has type "int")' \
        in r.stdout
    assert "Found 1 error in 1 file" in r.stdout
