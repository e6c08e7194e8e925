"""Waiting on a condition instead of sleeping: ``await eventually(check, timeout, what)``."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(check: Callable[[], Any | Awaitable[Any]], timeout: float, what: str,
                     interval: float = 0.05) -> Any:
    """Call ``check`` (sync or async) until it returns something truthy, and return that; raise an
    AssertionError naming ``what`` and the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {got!r}")
        await asyncio.sleep(interval)
