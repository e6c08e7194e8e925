"""``python -m drivers.demo`` — a sample service and a client exchanging calls over MQTT, showing
every tier-1 outcome and the platform-aware client's fast-fail and stale cache.

Starts an embedded mosquitto (or uses ``--broker``), serves ``UserManagement``, makes the calls,
prints one row per call (call → outcome, code, errorType, latency) and stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import Field

from adapters.mqtt.bus import Message, MqttBus, MqttConfig
from adapters.runtime.processes import start_mosquitto
from adapters.runtime.urls import redact_url
from drivers.tables import print_table
from protocol import topics
from protocol.system import ServiceUnavailable
from sdk import errors
from sdk.client import ServiceClient
from sdk.errors import ServiceCallError
from sdk.platform_client import PlatformAwareClient
from sdk.runtime import ServiceRuntime
from sdk.service import CallContext, Service

CLUSTER = "demo"
USER = {"userId": "alice", "roles": ["user"]}


def user_management() -> Service:
    """The sample service: each tier-1 error on a suitable input."""
    svc = Service("UserManagement")
    users = {"u1": {"id": "u1", "email": "ada@example.com", "name": "Ada"}}

    @svc.function("createUser", timeout=2.0)
    async def create_user(
        email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[a-z]+$"), name: str = Field(min_length=2)
    ) -> dict[str, str]:
        if any(u["email"] == email for u in users.values()):
            raise errors.ConflictError("unique_email", "User with this email already exists")
        if email.endswith("@blocked.example"):
            raise errors.BusinessLogicError("blocked_domain", "Sign-ups from this domain are not accepted")
        uid = f"u{len(users) + 1}"
        users[uid] = {"id": uid, "email": email, "name": name}
        return users[uid]

    @svc.function("getUser", cacheable=True)
    async def get_user(user_id: str, ctx: CallContext) -> dict[str, str]:
        if ctx.user_context is None or not ctx.user_context.user_id:
            raise errors.AuthorizationError("login required")
        if user_id not in users:
            raise errors.ResourceNotFound("User", user_id)
        return users[user_id]

    @svc.function("searchUsers")
    async def search_users(query: str, ctx: CallContext) -> list[str]:
        if query == "*":
            raise errors.RateLimitError("Full scans are limited to one a minute", retry_after=60)
        return [u["id"] for u in users.values() if query.lower() in u["name"].lower()]

    @svc.function("exportReport", timeout=0.3)
    async def export_report() -> str:
        await asyncio.sleep(2)
        return "never"

    @svc.function("recalculate")
    async def recalculate() -> int:
        return int("not a number")  # a bug: becomes -32603, the text stays in the service's log

    return svc


@dataclass(frozen=True, slots=True)
class Row:
    call: str
    outcome: str
    code: int | str
    error_type: str
    latency_ms: float
    note: str


async def timed(label: str, fn: Callable[[], Awaitable[Any]]) -> Row:
    t0 = time.perf_counter()
    try:
        value = await fn()
    except ServiceCallError as exc:
        ms = (time.perf_counter() - t0) * 1000
        note = exc.message
        if isinstance(exc, errors.ValidationException):
            note = "; ".join(f"{e.field}: {e.constraint}" for e in exc.errors)
        elif getattr(exc, "local", False):
            note = f"local: {exc.message}"[:70]
        return Row(label, type(exc).__name__, exc.code, exc.error_type or "-", ms, note[:70])
    ms = (time.perf_counter() - t0) * 1000
    stale = getattr(value, "stale", None)
    shown = getattr(value, "value", value)
    return Row(label, "ok (stale cache)" if stale else "ok", "-", "-", ms, str(shown)[:70])


async def raw_call(bus: MqttBus, payload: bytes) -> Any:
    """Publish raw bytes with an MQTT 5 Response Topic and return the answer's error."""
    reply = f"session/{uuid.uuid4().hex}/response"
    got: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
    await bus.subscribe(reply, lambda m: None if got.done() else got.set_result(m), qos=0)
    await bus.publish(topics.service_call("UserManagement"), payload, qos=1, response_topic=reply)
    msg = await asyncio.wait_for(got, 5)
    await bus.unsubscribe(reply)
    raise errors.exception_for(orjson.loads(msg.payload)["error"], service="UserManagement", method=None)


async def demo(broker_url: str) -> list[Row]:
    runtime = ServiceRuntime.connect(
        user_management(), broker_url=broker_url, cluster=CLUSTER, instance="demo-1"
    )
    bus = MqttBus(config=MqttConfig.from_url(broker_url))
    async with runtime, bus:
        await bus.wait_connected(10)
        client = ServiceClient(bus)
        aware = PlatformAwareClient(client, cluster=CLUSTER, cacheable={"UserManagement": {"getUser": 300}})
        await aware.start()
        um = "UserManagement"

        def c(method: str, params: dict[str, Any], **kw: Any) -> Callable[[], Awaitable[Any]]:
            return lambda: client.call(
                um, method, params, timeout=kw.get("timeout", 5.0), user_context=kw.get("uc", USER)
            )

        rows = [
            await timed(
                "createUser(grace@example.com)",
                c("createUser", {"email": "grace@example.com", "name": "Grace"}),
            ),
            await timed(
                "getUser(u1) via PlatformAwareClient",
                lambda: aware.call(um, "getUser", {"user_id": "u1"}, user_context=USER),
            ),
            await timed(
                "createUser(bad email, 1-char name)", c("createUser", {"email": "nope", "name": "G"})
            ),
            await timed(
                "createUser(x@blocked.example)", c("createUser", {"email": "x@blocked.example", "name": "Xi"})
            ),
            await timed("getUser(u1) without login", c("getUser", {"user_id": "u1"}, uc=None)),
            await timed("getUser(u404)", c("getUser", {"user_id": "u404"})),
            await timed(
                "createUser(ada@example.com) again",
                c("createUser", {"email": "ada@example.com", "name": "Ada"}),
            ),
            await timed("searchUsers(*)", c("searchUsers", {"query": "*"})),
            await timed("exportReport() (0.3 s limit)", c("exportReport", {})),
            await timed("recalculate() (a bug)", c("recalculate", {})),
            await timed("deleteEverything()", c("deleteEverything", {})),
            await timed("raw bytes '{oops'", lambda: raw_call(bus, b"{oops")),
            await timed(
                "call a service nobody serves", lambda: client.call("Nobody", "ping", {}, timeout=0.5)
            ),
        ]
        notice = ServiceUnavailable(
            cluster_id=CLUSTER,
            service=um,
            reason="no running pods",
            estimated_recovery="2-5 minutes",
            timestamp=datetime.now(UTC),
            correlation_id=str(uuid.uuid4()),
        )
        await bus.publish(topics.system_errors(CLUSTER), notice.to_json(), qos=1)
        for _ in range(200):
            if aware.strategy.is_unavailable(aware.strategy.view(um), time.time()):
                break
            await asyncio.sleep(0.01)
        rows.append(
            await timed(
                "[service_unavailable] getUser(u1)",
                lambda: aware.call(um, "getUser", {"user_id": "u1"}, user_context=USER),
            )
        )
        rows.append(
            await timed(
                "[service_unavailable] createUser(...)",
                lambda: aware.call(um, "createUser", {"email": "z@z.io", "name": "Zed"}),
            )
        )
        await aware.close()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drivers.demo", description=__doc__)
    parser.add_argument(
        "--broker", metavar="URL", help="use this MQTT broker instead of an embedded mosquitto"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("sdk.executor").setLevel(logging.CRITICAL)  # the demo's bug is on purpose
    broker = None if args.broker else start_mosquitto()
    url = args.broker or (broker.url if broker else "")
    try:
        print(f"broker: {redact_url(url)}")
        rows = asyncio.run(demo(url))
    finally:
        if broker is not None:
            broker.stop()
    print_table(
        "UserManagement calls",
        ["call", "outcome", "code", "errorType", "latency ms", "note"],
        [[r.call, r.outcome, r.code, r.error_type, round(r.latency_ms, 1), r.note] for r in rows],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
