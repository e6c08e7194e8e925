"""The simulator's traffic: calls at a set rate spread over the sample services' functions,
counted by service and outcome code."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from drivers.sample_platform import POOL_ORDERS, POOL_USERS, SKUS
from sdk.client import ServiceClient
from sdk.errors import ServiceTimeoutException

CALL_TIMEOUT = 8.0  # above the slow fault's 6 s, so a slow answer is seen as slow, not lost
MAX_IN_FLIGHT = 2000


def _calls() -> list[tuple[str, str, Callable[[random.Random], dict[str, Any]]]]:
    def user(r: random.Random) -> str:
        return r.choice(POOL_USERS)

    return [
        ("UserManagement", "createUser", lambda r: {"email": f"{r.randrange(10**6)}@example.com", "name": "Sim"}),
        ("UserManagement", "getUser", lambda r: {"userId": user(r)}),
        ("UserManagement", "updateUser", lambda r: {"userId": user(r), "name": "Renamed"}),
        ("UserManagement", "deleteUser", lambda r: {"userId": f"tmp-{r.randrange(10**6)}"}),
        ("OrderManagement", "createOrder", lambda r: {"userId": user(r), "items": [{"sku": r.choice(SKUS), "qty": 1}]}),
        ("OrderManagement", "getOrder", lambda r: {"orderId": r.choice(POOL_ORDERS)}),
        ("Inventory", "reserve", lambda r: {"sku": r.choice(SKUS), "quantity": 1}),
        ("Inventory", "release", lambda r: {"sku": r.choice(SKUS), "quantity": 1}),
        ("Inventory", "getStock", lambda r: {"sku": r.choice(SKUS)}),
        ("Payments", "charge", lambda r: {"userId": user(r), "amount": round(r.uniform(1, 100), 2)}),
        ("Payments", "refund", lambda r: {"paymentId": f"p-{r.randrange(10**6)}", "amount": 1.0}),
    ]


class Traffic:
    """``rate`` calls/s, the same share for each service, counted by service and outcome code."""

    def __init__(self, *, client: ServiceClient, rate: float, seed: int | None = None) -> None:
        self.client = client
        self.rate = rate
        self.rng = random.Random(seed)
        by_service: dict[str, list[tuple[str, str, Callable[[random.Random], dict[str, Any]]]]] = {}
        for c in _calls():
            by_service.setdefault(c[0], []).append(c)
        self.by_service = by_service
        self.outcomes: dict[str, Counter[str]] = {s: Counter() for s in by_service}
        self.sent = 0
        self.skipped = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Send calls at the set rate until ``stop`` is set."""
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
            if stop.is_set():
                break
            next_at += interval
            if len(self._tasks) >= MAX_IN_FLIGHT:
                self.skipped += 1
                continue
            service = self.rng.choice(list(self.by_service))
            _svc, method, params = self.rng.choice(self.by_service[service])
            task = asyncio.create_task(self._one(service, method, params(self.rng)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _one(self, service: str, method: str, params: dict[str, Any]) -> None:
        self.sent += 1
        uc = {"userId": self.rng.choice(POOL_USERS), "roles": ["customer"]}
        try:
            doc = await self.client.call_raw(service, method, params, timeout=CALL_TIMEOUT, user_context=uc)
        except ServiceTimeoutException:
            self.outcomes[service]["no_answer"] += 1
            return
        err = doc.get("error")
        code = str(err.get("code")) if isinstance(err, dict) else "ok"
        self.outcomes[service][code] += 1

    async def drain(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def summary(self) -> dict[str, Any]:
        return {"sent": self.sent, "skipped": self.skipped, "rate": self.rate,
                "byService": {s: dict(sorted(c.items())) for s, c in self.outcomes.items()}}
