"""The one shape every sfa-ops actor has.

An actor is a thin Ray class around a plain-Python body (``XBody``) that takes its clock, store and
bus as constructor arguments, so the body runs in a unit test without Ray or a broker
(``actors.clock.FakeClock``, ``adapters.testing.doubles.InMemoryStore``, ``adapters.testing.doubles.CapturingBus``).

Both the body and the actor start the same way, through :class:`Chassis`:

- ``await x.ensure_started()`` is idempotent and safe under concurrent calls: the first caller runs
  ``_start()`` (open the store, restore state from it, connect, start loops); the others wait for it.
  A start that fails is tried again by the next call, never left half done for good.
- In the constructor, ``self.start_when_restarted()`` queues ``ensure_started`` on the actor itself
  when Ray restarted it after its process died (Ray reruns only ``__init__``), so a restarted actor
  is whole again without anyone asking.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from actors.restart import start_if_restarted


class Chassis:
    """Idempotent start and the restart hook. Subclasses implement :meth:`_start`."""

    what: ClassVar[str] = "actor"  # for the restart log line: "observer 0 was restarted by Ray"
    _starting: asyncio.Future[None] | None = None

    async def _start(self) -> None:
        raise NotImplementedError

    @property
    def started(self) -> bool:
        f = self._starting
        return f is not None and f.done() and not f.cancelled() and f.exception() is None

    async def ensure_started(self) -> None:
        """Run ``_start()`` once; concurrent callers share it; after a failure the next call retries."""
        f = self._starting
        if f is None or (f.done() and (f.cancelled() or f.exception() is not None)):
            f = self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(f)

    def start_when_restarted(self, what: str | None = None) -> bool:
        """From the actor's constructor: when Ray restarted it, queue ``ensure_started`` on itself."""
        return start_if_restarted(what or self.what, method="ensure_started")
