"""Control loops that never die (STYLE.md 7): each step in its own try/except, timed, slow steps
logged."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable


async def run_every(
    interval_s: float,
    step: Callable[[], Awaitable[None]],
    *,
    name: str,
    logger: logging.Logger,
    slow_after_s: float | None = None,
) -> None:
    """Call ``step`` every ``interval_s`` seconds until cancelled; an exception in a step is logged
    and the loop goes on. The interval is measured start to start; an overrun skips the wait."""
    slow = slow_after_s if slow_after_s is not None else max(interval_s, 0.5)
    next_at = time.monotonic()
    while True:
        started = time.monotonic()
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s: step failed; continuing", name)
        took = time.monotonic() - started
        if took > slow:
            logger.warning("%s: step took %.3fs (interval %.3fs)", name, took, interval_s)
        next_at += interval_s
        delay = next_at - time.monotonic()
        if delay < 0:
            next_at = time.monotonic()
            delay = 0
        await asyncio.sleep(delay)
