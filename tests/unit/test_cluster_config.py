"""cluster.yaml is a real Ray cluster-launcher config: Ray's own validation accepts it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


def _load() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_ray_validation() -> None:
    """prepare_config + validate_config (the checks `ray up` runs) accept cluster.yaml."""
    config = prepare_config(_load())
    validate_config(config)
    assert config["head_node_type"] in config["available_node_types"]
    assert any("scripts/install-python.sh" in c for c in config["setup_commands"])


def test_every_node_starts_ray_with_token_auth() -> None:
    """Token authentication on every node: each `ray start` runs with RAY_AUTH_MODE=token, and the
    token made on the launching machine is mounted at Ray's default path on every node."""
    config = _load()
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands")
              for c in config[key] if "ray start" in c]
    assert len(starts) == 2
    assert all("RAY_AUTH_MODE=token" in c for c in starts)
    assert config["file_mounts"].get("/home/ubuntu/.ray/auth_token") == "~/.ray/auth_token"


def test_validation_is_not_vacuous() -> None:
    """The same validation rejects a broken copy (a head type that does not exist)."""
    broken = copy.deepcopy(_load())
    broken["head_node_type"] = "nope"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(broken))


def test_every_node_type_has_a_root_disk_that_fits() -> None:
    """The AMI's 8 GiB default does not hold the environment plus Ray's logs and spilled objects:
    every node type names its root volume, of at least 32 GiB (cluster.yaml says why 40)."""
    config = _load()
    for name, node in config["available_node_types"].items():
        [root] = [m for m in node["node_config"]["BlockDeviceMappings"] if m["DeviceName"] == "/dev/sda1"]
        assert root["Ebs"]["VolumeSize"] >= 32, name
        assert root["Ebs"]["VolumeType"] == "gp3", name


def test_nodes_install_without_the_dev_group() -> None:
    """SFA_OPS_NO_DEV=1: scripts/install-python.sh runs `uv sync --no-dev` (no test or lint tools)."""
    config = _load()
    [install] = [c for c in config["setup_commands"] if "install-python.sh" in c]
    assert "SFA_OPS_NO_DEV=1" in install
    script = (CLUSTER_YAML.parent / "scripts" / "install-python.sh").read_text()
    assert 'SFA_OPS_NO_DEV:-0}" = 1 ] && extra+=(--no-dev)' in script
