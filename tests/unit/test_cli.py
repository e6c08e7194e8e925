"""The ``sfa-ops`` console script (``[project.scripts]``), run as an operator runs it: the executable
uv installs into the venv (``make setup``), in a subprocess, from outside the repository."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from drivers.cli import COMMANDS, EXIT_CODES, main
from drivers.options import LOG_OPTIONS, OptionError, add_options, from_args

REPO = Path(__file__).resolve().parents[2]
SFA_OPS = Path(sys.executable).parent / "sfa-ops"


def sfa_ops(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not SFA_OPS.exists():
        pytest.fail(f"{SFA_OPS} is missing: `make setup` installs the project (and its console script) into the venv")
    return subprocess.run([str(SFA_OPS), *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def test_version_is_the_installed_package_version(tmp_path: Path) -> None:
    r = sfa_ops("--version", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert r.stdout.strip() == f"sfa-ops {version}" == f"sfa-ops {metadata.version('sfa-ops')}"


def test_help_lists_every_subcommand_and_the_exit_codes(tmp_path: Path) -> None:
    r = sfa_ops("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("operate", "simulate", "status", "baselines", "recommend", "report", "incidents", "audit",
                 "broker-acl"):
        assert re.search(rf"^  {re.escape(name)} +{re.escape(COMMANDS[name].summary)}$", r.stdout, re.M), name
    assert "exit status:" in r.stdout
    for code, _ in EXIT_CODES:
        assert f"\n  {code:<3}  " in r.stdout
    assert "--log-level" in r.stdout and "--log-format" in r.stdout


@pytest.mark.parametrize(("args", "expect"), [
    (("statsu",), "unknown subcommand 'statsu'; did you mean 'status'?"),
    (("--verbose",), "unknown option '--verbose'"),
    ((), "name a subcommand"),
])
def test_bad_usage_exits_2_with_a_clear_message(tmp_path: Path, args: tuple[str, ...], expect: str) -> None:
    r = sfa_ops(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stdout == ""
    assert f"sfa-ops: error: {expect}" in r.stderr
    assert "broker-acl" in r.stderr  # the subcommands are named


def test_broker_acl_runs_as_a_subcommand(tmp_path: Path) -> None:
    r = sfa_ops("broker-acl", "mosquitto", "--cluster-id", "c1", "--services", "Users", "--out", "acl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "acl"
    assert {p.name for p in (out / "mosquitto").iterdir()} == {"passwd", "acl", "auth.conf"}
    assert "sfa-ops broker-acl: 4 principal(s): sfa-ops, service-Users, caller, auth" in r.stdout
    for cred in (out / "credentials").iterdir():  # the passwords are written, never printed
        assert cred.read_text().strip() not in r.stdout + r.stderr


def test_a_subcommand_reports_usage_errors_under_its_own_name(tmp_path: Path) -> None:
    r = sfa_ops("audit", "--log-level", "loud", "verify", cwd=tmp_path)
    assert r.returncode == 2
    assert "sfa-ops audit: error: --log-level (from command line) = 'loud'" in r.stderr
    r = sfa_ops("broker-acl", "--cluster-id", "c1", cwd=tmp_path)  # argparse: missing arguments
    assert r.returncode == 2
    assert "usage: sfa-ops broker-acl" in r.stderr


@pytest.mark.slow
def test_log_format_json_reaches_the_subcommands_log_lines(tmp_path: Path) -> None:
    # Nothing listens on port 1: the MQTT adapter logs its failed connection attempts (WARNING).
    r = sfa_ops("status", "--broker", "mqtt://127.0.0.1:1", "--timeout", "1", "--log-format", "json", cwd=tmp_path)
    assert r.returncode == 2
    assert "sfa-ops status: error: broker not reachable within 1 s" in r.stderr
    records = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    assert records, r.stderr
    assert {rec["levelname"] for rec in records} == {"WARNING"}
    assert all("Connection refused" in rec["message"] for rec in records)
    r = sfa_ops("status", "--broker", "mqtt://127.0.0.1:1", "--timeout", "1", "--log-level", "error", cwd=tmp_path)
    assert r.returncode == 2
    assert "Connection refused" not in r.stderr  # the warnings are below the level


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_subcommand_answers_help_and_says_whether_it_takes_the_log_options(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = importlib.import_module(COMMANDS[name].module)
    monkeypatch.setattr(module, "PROG", module.PROG)  # restored after: the dispatcher renames it
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: sfa-ops {name}" in out  # named as typed, not as python -m drivers.X
    assert ("--log-level" in out and "--log-format" in out) is COMMANDS[name].logs


def test_log_options_from_a_drivers_own_parser_take_the_environment() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, LOG_OPTIONS)
    assert from_args(LOG_OPTIONS, parser.parse_args([]), env={}) == {"log_level": "WARNING", "log_format": "text"}
    env = {"SFA_OPS_LOG_LEVEL": "debug", "SFA_OPS_LOG_FORMAT": "JSON"}
    assert from_args(LOG_OPTIONS, parser.parse_args([]), env=env) == {"log_level": "DEBUG", "log_format": "json"}
    got = from_args(LOG_OPTIONS, parser.parse_args(["--log-level", "error"]), env=env)
    assert got == {"log_level": "ERROR", "log_format": "json"}
    with pytest.raises(OptionError, match="environment SFA_OPS_LOG_FORMAT"):
        from_args(LOG_OPTIONS, parser.parse_args([]), env={"SFA_OPS_LOG_FORMAT": "xml"})
