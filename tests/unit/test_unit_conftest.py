"""The unit-test guard itself: starting Ray in a unit test fails loudly."""

from __future__ import annotations

import pytest
import ray

from tests.unit.conftest import RayInUnitTest


def test_ray_init_is_refused_in_unit_tests() -> None:
    """``ray.init`` raises instead of starting a local Ray, and no Ray was started (in a whole-suite
    run the integration tests' session Ray may already be up in this process: nothing changes it)."""
    before = ray.is_initialized()
    with pytest.raises(RayInUnitTest, match=r"ray\.init in a unit test"):
        ray.init(address="local", num_cpus=1)
    assert ray.is_initialized() == before


def test_unit_tests_carry_the_unit_marker(request: pytest.FixtureRequest) -> None:
    """Tests under tests/unit are selected by ``-m unit``."""
    assert request.node.get_closest_marker("unit") is not None
