"""The actor chassis: one idempotent start that concurrent callers share and a failure does not
leave half done for good."""

from __future__ import annotations

import asyncio

import pytest

from actors.chassis import Chassis


class Body(Chassis):
    what = "test body"

    def __init__(self, failures: int = 0) -> None:
        self.runs = 0
        self.failures = failures

    async def _start(self) -> None:
        self.runs += 1
        await asyncio.sleep(0)  # let the other callers arrive while this start is under way
        if self.runs <= self.failures:
            raise ConnectionError("store not up yet")


async def test_concurrent_starts_run_start_once() -> None:
    body = Body()
    await asyncio.gather(*(body.ensure_started() for _ in range(5)))
    await body.ensure_started()
    assert body.runs == 1
    assert body.started


async def test_a_failed_start_is_retried_by_the_next_call() -> None:
    body = Body(failures=1)
    with pytest.raises(ConnectionError):
        await body.ensure_started()
    assert not body.started
    await body.ensure_started()
    assert body.runs == 2
    assert body.started


def test_outside_a_restarted_actor_nothing_is_queued() -> None:
    assert Body().start_when_restarted() is False
