"""Driver options: command line over env over --config file over defaults; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.options import Option, OptionError, positive_int, resolve, seconds

OPTS = [
    Option("cluster-id", "cluster", default="local"),
    Option("observers", "observers", default=1, convert=positive_int),
    Option("duration", "seconds", convert=seconds),
    Option("check-redis", "redis", default=[], repeatable=True),
    Option("kubernetes", "k8s", default=False, flag=True),
]


def run(argv: list[str], env: dict[str, str] | None = None) -> dict:
    return resolve(OPTS, argv, prog="t", description="d", env=env or {})


def test_defaults() -> None:
    """With nothing given, every option has its default."""
    assert run([]) == {"cluster_id": "local", "observers": 1, "duration": None, "check_redis": [],
                       "kubernetes": False}


def test_precedence(tmp_path: Path) -> None:
    """Command line beats env, env beats the config file, the file beats defaults."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cluster-id: from-file\nobservers: 3\nduration: 2m\ncheck_redis: [redis://a, redis://b]\n")
    got = run(["--config", str(cfg), "--cluster-id", "cli"], env={"SFA_OPS_OBSERVERS": "2"})
    assert got["cluster_id"] == "cli" and got["observers"] == 2 and got["duration"] == 120.0
    assert got["check_redis"] == ["redis://a", "redis://b"]
    assert run(["--check-redis", "x", "--check-redis", "y", "--kubernetes"])["check_redis"] == ["x", "y"]
    assert run([], env={"SFA_OPS_KUBERNETES": "yes"})["kubernetes"] is True


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--observers", "0"], {}, "--observers (from command line) = '0'"),
        ([], {"SFA_OPS_OBSERVERS": "many"}, "from environment SFA_OPS_OBSERVERS"),
        (["--duration", "soon"], {}, "--duration"),
    ],
)
def test_bad_values_name_the_option_and_source(argv: list[str], env: dict, expected: str) -> None:
    """A bad value raises OptionError naming the option and where it came from."""
    with pytest.raises(OptionError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        run(argv, env)


def test_bad_config_file(tmp_path: Path) -> None:
    """An unknown key or a missing file in --config is named."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("clusterid: x\n")
    with pytest.raises(OptionError, match="unknown option 'clusterid'"):
        run(["--config", str(cfg)])
    with pytest.raises(OptionError, match="cannot read"):
        run(["--config", str(tmp_path / "missing.yaml")])
