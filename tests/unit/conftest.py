"""Unit tests are pure: no broker, database server or Ray. Every test here gets a ``ray.init``
that raises, and the session's Ray fixture refuses, so a test that would start Ray fails at once
and loudly instead of quietly costing seconds (drive an actor's body in-process instead, with
``actors.clock.FakeClock`` and ``adapters.testing.doubles``'s ``InMemoryStore`` and ``CapturingBus``)."""

from __future__ import annotations

from typing import Any, NoReturn

import pytest
import ray


class RayInUnitTest(AssertionError):
    """A unit test tried to start Ray."""


def _refuse(*args: Any, **kwargs: Any) -> NoReturn:
    raise RayInUnitTest("ray.init in a unit test: drive the actor body in-process with the doubles of "
                        "adapters.testing.doubles, or move the test to tests/integration")


@pytest.fixture(autouse=True)
def _no_ray_init(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray, "init", _refuse)


@pytest.fixture
def ray_session() -> NoReturn:
    """Overrides the session's Ray: unit tests have none."""
    _refuse()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/unit carries the ``unit`` marker (``pytest -m unit``)."""
    for item in items:
        if "tests/unit/" in item.nodeid:
            item.add_marker(pytest.mark.unit)
