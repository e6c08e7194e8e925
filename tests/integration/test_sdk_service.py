"""A service runtime and ServiceClient against the real mosquitto: every error path end to end,
concurrency, malformed input, presence and Last Will, shared subscriptions."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import Field

from protocol import topics
from sdk.client import ServiceClient
from sdk.errors import (
    BusinessLogicException,
    ConflictException,
    RateLimitedException,
    ResourceNotFoundException,
    ServiceCallError,
    ServiceException,
    ServiceTimeoutException,
    UnauthorizedException,
    ValidationException,
)
from sdk.runtime import ServiceRuntime
from sdk.service import CallContext, Service
from tests.support.broker import service_child_login
from tests.support.mqtt import Collector, running_bus, wait_until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


SLOW_STARTED: list[float] = []  # one entry per "slow" call the in-process service began


def users_service(name: str) -> Service:
    svc = Service(name)
    from sdk import errors as e

    @svc.function("createUser", timeout=2.0)
    async def create_user(
        email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$"), name: str = Field(min_length=2)
    ) -> str:
        if email == "taken@example.com":
            raise e.ConflictError("unique_email", "User with this email already exists")
        if email == "banned@example.com":
            raise e.BusinessLogicError("banned_domain", "This email domain is not accepted")
        return f"user-{name}"

    @svc.function("getUser")
    async def get_user(user_id: str, ctx: CallContext) -> dict[str, Any]:
        if ctx.user_context is None or ctx.user_context.user_id is None:
            raise e.AuthorizationError("login required")
        if user_id == "missing":
            raise e.ResourceNotFound("User", user_id)
        if user_id == "flood":
            raise e.RateLimitError(retry_after=2.0)
        return {"id": user_id, "by": ctx.user_context.user_id}

    @svc.function("slow", timeout=0.2)
    async def slow(seconds: float = 1.0) -> None:
        SLOW_STARTED.append(seconds)
        await asyncio.sleep(seconds)

    @svc.function("buggy")
    async def buggy() -> None:
        raise KeyError("secret-internal-detail")

    return svc


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def served(broker_url: str) -> AsyncIterator[tuple[str, ServiceClient, ServiceRuntime]]:
    name = unique("Users")
    runtime = ServiceRuntime.connect(users_service(name), broker_url=broker_url, cluster="itest")
    async with runtime, running_bus(broker_url) as bus:
        client = ServiceClient(bus)
        await client.start()
        yield name, client, runtime


UC = {"userId": "alice", "roles": ["user"]}


@pytest.mark.parametrize(
    ("method", "params", "exc", "code", "check"),
    [
        (
            "createUser",
            {"email": "nope", "name": "A"},
            ValidationException,
            -32001,
            lambda x: {f.field for f in x.errors} == {"email", "name"},
        ),
        (
            "createUser",
            {"email": "banned@example.com", "name": "Al"},
            BusinessLogicException,
            -32002,
            lambda x: x.rule == "banned_domain",
        ),
        ("getUser", {"user_id": "u1", "__no_uc": True}, UnauthorizedException, -32003, lambda x: True),
        (
            "getUser",
            {"user_id": "missing"},
            ResourceNotFoundException,
            -32004,
            lambda x: x.details["resourceId"] == "missing",
        ),
        (
            "createUser",
            {"email": "taken@example.com", "name": "Al"},
            ConflictException,
            -32005,
            lambda x: x.rule == "unique_email",
        ),
        ("getUser", {"user_id": "flood"}, RateLimitedException, -32006, lambda x: x.retry_after == 2.0),
        ("slow", {}, ServiceTimeoutException, -32007, lambda x: not x.local),
        (
            "buggy",
            {},
            ServiceException,
            -32603,
            lambda x: "secret" not in orjson.dumps(dict(x.data)).decode(),
        ),
        ("noSuchMethod", {}, ServiceException, -32601, lambda x: x.error_type == "MethodNotFound"),
    ],
)
async def test_error_paths_end_to_end(
    served: Any, method: str, params: dict[str, Any], exc: type, code: int, check: Any
) -> None:
    """Each tier-1 error raised by a function reaches the client as its typed exception."""
    name, client, _ = served
    uc = None if params.pop("__no_uc", False) else UC
    with pytest.raises(exc) as info:
        await client.call(name, method, params, timeout=5.0, user_context=uc)
    assert info.value.code == code
    assert info.value.data["service"] == name and info.value.data["method"] == method
    assert check(info.value)


async def test_success_and_internal_error_leaks_nothing_on_the_wire(served: Any, broker_url: str) -> None:
    """A result arrives; the -32603 payload seen on the broker carries no exception text."""
    name, client, _ = served
    assert await client.call(name, "getUser", {"user_id": "u1"}, user_context=UC) == {
        "id": "u1",
        "by": "alice",
    }
    raw = await client.call_raw(name, "buggy", {})
    text = orjson.dumps(raw)
    assert raw["error"]["code"] == -32603
    for leak in (b"secret-internal-detail", b"KeyError", b"Traceback"):
        assert leak not in text


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{definitely not json", -32700),
        (b'"a string"', -32600),
        (orjson.dumps({"jsonrpc": "2.0", "method": "getUser"}), -32600),
        (b"[" * 100 + b"]" * 100, -32600),
        (b"[" * 5000 + b"]" * 5000, -32700),  # beyond orjson's own depth limit: unparseable
    ],
)
async def test_protocol_errors_via_response_topic(
    served: Any, broker_url: str, payload: bytes, code: int
) -> None:
    """Garbage with an MQTT 5 Response Topic is answered there with its protocol error code."""
    name, _, _ = served
    reply = f"session/{uuid.uuid4().hex}/response"
    async with running_bus(broker_url) as bus:
        got = Collector()
        await bus.subscribe(reply, got)
        await bus.publish(
            topics.service_call(name), payload, qos=1, response_topic=reply, correlation_data=b"k1"
        )
        [msg] = await got.wait_for(1)
    assert orjson.loads(msg.payload)["error"]["code"] == code
    assert msg.correlation_data == b"k1"


async def test_malformed_flood_does_not_stop_the_service(served: Any, broker_url: str) -> None:
    """Non-JSON, wrong types, huge, deeply nested and replyTo-less calls: the service keeps serving."""
    name, client, runtime = served
    junk = [
        b"\xff\xfe\x00garbage",
        orjson.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "getUser", "params": "x", "replyTo": client.reply_topic}
        ),
        orjson.dumps({"jsonrpc": "2.0", "id": {"a": 1}, "method": ["x"], "replyTo": client.reply_topic}),
        orjson.dumps(
            {"jsonrpc": "2.0", "id": "n", "method": "getUser", "params": {"user_id": "u"}}
        ),  # no replyTo
        orjson.dumps(
            {
                "jsonrpc": "2.0",
                "id": "h",
                "method": "getUser",
                "params": {"user_id": "x" * 300_000},
                "replyTo": client.reply_topic,
            }
        ),
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
    ]
    async with running_bus(broker_url) as bus:
        for payload in junk * 20:
            await bus.publish(topics.service_call(name), payload, qos=1)
        await bus.flush(5)
    # The huge one is dropped by the bus's size limit before it reaches the executor.
    await wait_until(lambda: runtime.stats()["received"] >= (len(junk) - 1) * 20, timeout=10)
    assert runtime.stats()["dropped_no_reply_topic"] >= 20
    assert await client.call(name, "getUser", {"user_id": "u1"}, user_context=UC) == {
        "id": "u1",
        "by": "alice",
    }


async def test_thousand_concurrent_calls_over_one_client(served: Any) -> None:
    """1,000 concurrent calls over one connection all get their own answers."""
    name, client, _ = served
    ids = [f"u{i}" for i in range(1000)]
    results = await asyncio.gather(
        *(client.call(name, "getUser", {"user_id": i}, timeout=30, user_context=UC) for i in ids)
    )
    assert [r["id"] for r in results] == ids
    assert client.pending == 0


async def test_slow_call_does_not_block_others(served: Any) -> None:
    """While a slow function runs, a fast one on the same instance answers immediately."""
    name, client, _ = served
    started = len(SLOW_STARTED)
    slow = asyncio.create_task(client.call(name, "slow", {"seconds": 0.15}, timeout=5))
    await wait_until(lambda: len(SLOW_STARTED) > started)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await client.call(name, "getUser", {"user_id": "u"}, user_context=UC)
    assert loop.time() - t0 < 0.1
    await slow


async def test_local_timeout_when_nobody_serves(broker_url: str) -> None:
    """No instance listening: the call raises ServiceTimeoutException(local=True)."""
    async with running_bus(broker_url) as bus:
        client = ServiceClient(bus)
        with pytest.raises(ServiceTimeoutException) as info:
            await client.call(unique("Nobody"), "x", {}, timeout=0.3)
    assert info.value.local and isinstance(info.value, ServiceCallError)


async def test_two_instances_share_calls(broker_url: str) -> None:
    """Two instances on the shared subscription split the calls; each call is answered once."""
    name = unique("Shared")
    svc = Service(name)

    @svc.function()
    async def where(ctx: CallContext) -> str:
        await asyncio.sleep(0.005)
        return ctx.service

    a = ServiceRuntime.connect(svc, broker_url=broker_url, cluster="itest", instance="a")
    b = ServiceRuntime.connect(svc, broker_url=broker_url, cluster="itest", instance="b")
    async with a, b, running_bus(broker_url) as bus:
        client = ServiceClient(bus)
        await asyncio.gather(*(client.call(name, "where", timeout=10) for _ in range(200)))
        assert client.counts["late_or_unknown"] == 0
        ok_a, ok_b = a.stats()["ok"], b.stats()["ok"]
    assert ok_a + ok_b == 200 and ok_a > 0 and ok_b > 0


_CHILD = """
import asyncio, sys
from sdk.runtime import ServiceRuntime
from sdk.service import Service
svc = Service(sys.argv[2])
@svc.function()
async def ping() -> str:
    return "pong"
async def main():
    async with ServiceRuntime.connect(svc, broker_url=sys.argv[1], cluster="itest", instance="child") as rt:
        print("ready", flush=True)
        await rt.serve_forever()
asyncio.run(main())
"""


async def test_presence_online_then_last_will_offline_on_kill(broker_url: str) -> None:
    """A running instance is retained online; SIGKILLed, the broker's Last Will makes it offline."""
    name = unique("Presence")
    url, login = service_child_login(broker_url, name)  # as its service's principal (password via env)
    env = {**os.environ, **login, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, name], stdout=subprocess.PIPE, env=env, cwd=REPO
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert line.strip() == b"ready"
        async with running_bus(broker_url) as bus:
            got = Collector()
            await bus.subscribe(topics.presence("itest", name, "child"), got)
            [online] = await got.wait_for(1)
            doc = orjson.loads(online.payload)
            assert online.retain and doc["status"] == "online" and doc["functions"] == ["ping"]
            proc.send_signal(signal.SIGKILL)
            msgs = await got.wait_for(2, timeout=10)
            assert orjson.loads(msgs[-1].payload)["status"] == "offline"
        async with running_bus(broker_url) as bus2:  # the offline state is what is retained now
            late = Collector()
            await bus2.subscribe(topics.presence("itest", name, "child"), late)
            [kept] = await late.wait_for(1)
            assert kept.retain and orjson.loads(kept.payload)["status"] == "offline"
    finally:
        proc.kill()
        proc.wait()


async def test_graceful_stop_publishes_offline(broker_url: str) -> None:
    """A graceful stop publishes offline (retained) itself."""
    name = unique("Graceful")
    svc = Service(name)
    runtime = ServiceRuntime.connect(svc, broker_url=broker_url, cluster="itest", instance="g")
    async with running_bus(broker_url) as bus:
        got = Collector()
        await bus.subscribe(topics.presence("itest", name, "g"), got)
        async with runtime:
            await got.wait_for(1)
        msgs = await got.wait_for(2)
    assert [orjson.loads(m.payload)["status"] for m in msgs] == ["online", "offline"]
