"""The executor without a broker: every error path of one call, from bytes to reply."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from protocol.errors import ErrorCode
from protocol.intake import usable_reply_topic
from sdk.errors import (
    AuthorizationError,
    BusinessLogicError,
    ConflictError,
    RateLimitError,
    ResourceNotFound,
    ServiceFunctionError,
)
from sdk.executor import Executor, Job, Reply
from sdk.service import CallContext, Service

REPLY = "session/s1/response"


class NewUser(BaseModel):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    name: str = Field(min_length=2)


def make_service() -> Service:
    svc = Service("UserManagement")

    @svc.function("add", timeout=1.0)
    async def add(a: int, b: int = 0) -> int:
        return a + b

    @svc.function("whoami")
    async def whoami(ctx: CallContext) -> dict[str, Any]:
        uc = ctx.user_context
        return {"user": uc.user_id if uc else None, "corr": ctx.correlation_id}

    @svc.function("createUser")
    async def create_user(request: NewUser) -> dict[str, str]:
        return {"email": request.email}

    @svc.function("login")
    async def login(user: str, password: str = Field(min_length=12)) -> bool:
        return True

    @svc.function("fail")
    async def fail(kind: str) -> None:
        errors: dict[str, ServiceFunctionError] = {
            "business": BusinessLogicError("duplicate_email", "User with this email already exists"),
            "auth": AuthorizationError("admins only"),
            "missing": ResourceNotFound("User", "u-9"),
            "conflict": ConflictError("unique_email", "taken"),
            "rate": RateLimitError(retry_after=3.0),
        }
        if kind in errors:
            raise errors[kind]
        raise RuntimeError("db password=hunter2 at /srv/app.py line 7")

    @svc.function("slow", timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(1)

    @svc.function("blocking", timeout=1.0)
    def blocking(x: int) -> int:
        return x * 2

    @svc.function("weird")
    async def weird() -> object:
        return object()

    return svc


EXECUTOR = Executor(make_service(), clock=lambda: 1_734_258_600.0)


def call(method: str, params: Any = None, **extra: Any) -> bytes:
    doc = {
        "jsonrpc": "2.0",
        "id": "c-1",
        "method": method,
        "replyTo": REPLY,
        "correlationId": "corr-1",
        **extra,
    }
    if params is not None:
        doc["params"] = params
    return orjson.dumps(doc)


async def run(payload: bytes, **props: Any) -> dict[str, Any]:
    reply = await EXECUTOR.handle(payload, **props)
    assert reply is not None
    return reply.response


async def test_success_result_and_defaults() -> None:
    """A valid call returns its result under the same id; defaults fill missing params."""
    assert await run(call("add", {"a": 2, "b": 3})) == {"jsonrpc": "2.0", "id": "c-1", "result": 5}
    assert (await run(call("add", {"a": 2})))["result"] == 2
    assert (await run(call("add", [4, 5])))["result"] == 9


async def test_sync_function_runs() -> None:
    """A sync function is run (in a worker thread) and its result returned."""
    assert (await run(call("blocking", {"x": 21})))["result"] == 42


async def test_context_injected() -> None:
    """A CallContext parameter receives the user context and correlation id, not a param."""
    resp = await run(call("whoami", {}, userContext={"userId": "alice", "roles": ["admin"]}))
    assert resp["result"] == {"user": "alice", "corr": "corr-1"}


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        (b"{not json", -32700, "(payload)"),
        (b"[1, 2]", -32600, "(payload)"),
        (orjson.dumps({"jsonrpc": "1.0", "id": "x", "method": "add"}), -32600, "jsonrpc"),
        (orjson.dumps({"jsonrpc": "2.0", "id": True, "method": "add"}), -32600, "id"),
        (orjson.dumps({"jsonrpc": "2.0", "method": "add"}), -32600, "id"),
        (orjson.dumps({"jsonrpc": "2.0", "id": "x", "method": 7}), -32600, "method"),
        (orjson.dumps({"jsonrpc": "2.0", "id": "x", "method": "add", "params": 3}), -32600, "params"),
        (
            orjson.dumps({"jsonrpc": "2.0", "id": "x", "method": "add", "userContext": {"roles": 5}}),
            -32600,
            "userContext.roles",
        ),
        (orjson.dumps({"jsonrpc": "2.0", "id": "x", "method": "nope"}), -32601, "method"),
        (b"[" * 40 + b"]" * 40, -32600, "(payload)"),
        (b" " * 300_000, -32600, "(payload)"),
    ],
)
async def test_protocol_errors(payload: bytes, code: int, field: str) -> None:
    """Malformed calls get the JSON-RPC protocol code with details naming the bad part."""
    resp = await run(payload, response_topic=REPLY)
    assert resp["error"]["code"] == code
    assert resp["error"]["data"]["details"]["field"] == field
    assert resp["error"]["data"]["service"] == "UserManagement"


async def test_bad_json_without_response_topic_is_dropped() -> None:
    """Unparseable JSON has no replyTo to read: with no MQTT Response Topic it is dropped."""
    before = EXECUTOR.counts["dropped_no_reply_topic"]
    assert await EXECUTOR.handle(b"{oops") is None
    assert await EXECUTOR.handle(orjson.dumps({"jsonrpc": "2.0", "id": "1", "method": "add"})) is None
    assert EXECUTOR.counts["dropped_no_reply_topic"] == before + 2


@pytest.mark.parametrize("reply_to", ["system/prod/circuit-breaker/X", "session/+/response", "", "$SYS/x", 7])
async def test_unsafe_reply_topics_are_not_used(reply_to: Any) -> None:
    """Replies never go to wildcard, empty, or reserved topics (no forged system messages)."""
    assert await EXECUTOR.handle(call("add", {"a": 1}, replyTo=reply_to)) is None
    assert usable_reply_topic(reply_to) is None


async def test_mqtt5_properties_take_precedence() -> None:
    """The Response Topic property beats the body's replyTo and the Correlation Data is echoed."""
    reply = await EXECUTOR.handle(
        call("add", {"a": 1}), response_topic="session/s2/response", correlation_data=b"\x01\x02"
    )
    assert reply is not None
    assert (reply.topic, reply.correlation_data) == ("session/s2/response", b"\x01\x02")


async def test_validation_error_details_per_field() -> None:
    """Bad params give -32001 with one {field,message,value,constraint} per bad field."""
    resp = await run(call("add", {"a": "x", "c": 1}))
    err = resp["error"]
    assert (err["code"], err["message"], err["data"]["errorType"]) == (
        -32001,
        "Validation Error",
        "ValidationError",
    )
    by_field = {e["field"]: e for e in err["data"]["details"]["errors"]}
    assert set(by_field) == {"a", "c"}
    assert by_field["a"]["value"] == "x" and by_field["a"]["constraint"] == "int_parsing"
    assert by_field["c"]["constraint"] == "unknown field"
    assert err["data"]["details"]["field"] == "a"  # the seed's flat form, first error
    assert (err["data"]["method"], err["data"]["correlationId"]) == ("add", "corr-1")
    assert err["data"]["timestamp"] == "2024-12-15T10:30:00Z"


async def test_validation_of_whole_model_and_missing() -> None:
    """A model parameter gets the whole params object; a missing field is 'required'."""
    resp = await run(call("createUser", {"email": "bad"}))
    by_field = {e["field"]: e for e in resp["error"]["data"]["details"]["errors"]}
    assert by_field["name"]["constraint"] == "required" and by_field["name"]["value"] is None
    assert "pattern" in by_field["email"]["constraint"]
    ok = await run(call("createUser", {"email": "a@b.c", "name": "Al"}))
    assert ok["result"] == {"email": "a@b.c"}


async def test_secret_values_are_not_echoed() -> None:
    """A bad password value is redacted in the validation details."""
    resp = await run(call("login", {"user": "a", "password": "short"}))
    [err] = resp["error"]["data"]["details"]["errors"]
    assert err["field"] == "password" and err["value"] == "[REDACTED]"


async def test_too_many_positional_params() -> None:
    """More positional params than the function takes is a -32001."""
    resp = await run(call("add", [1, 2, 3]))
    assert resp["error"]["code"] == -32001


@pytest.mark.parametrize(
    ("kind", "code", "error_type", "detail_key", "detail_value"),
    [
        ("business", -32002, "BusinessLogicError", "rule", "duplicate_email"),
        ("auth", -32003, "AuthorizationError", "message", "admins only"),
        ("missing", -32004, "ResourceNotFound", "resourceId", "u-9"),
        ("conflict", -32005, "ConflictError", "rule", "unique_email"),
        ("rate", -32006, "RateLimitError", "retryAfterSeconds", 3.0),
    ],
)
async def test_function_errors(
    kind: str, code: int, error_type: str, detail_key: str, detail_value: Any
) -> None:
    """A raised ServiceFunctionError becomes its code, errorType and details."""
    err = (await run(call("fail", {"kind": kind})))["error"]
    assert (err["code"], err["data"]["errorType"]) == (code, error_type)
    assert err["data"]["details"][detail_key] == detail_value


async def test_unexpected_exception_leaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected exception is -32603 with no exception text or traceback; it is logged."""
    reply = await EXECUTOR.handle(call("fail", {"kind": "boom"}))
    assert reply is not None
    assert reply.response["error"]["code"] == -32603
    for leak in (b"hunter2", b"RuntimeError", b"Traceback", b"app.py"):
        assert leak not in reply.payload
    assert "hunter2" in caplog.text


async def test_unserialisable_result_is_internal_error() -> None:
    """A result orjson cannot encode is answered -32603, not a crash."""
    assert (await run(call("weird")))["error"]["code"] == -32603


async def test_timeout() -> None:
    """A function exceeding its timeout is answered -32007."""
    err = (await run(call("slow")))["error"]
    assert (err["code"], err["data"]["errorType"]) == (-32007, "TimeoutError")


async def test_enforcement_hook_refuses_before_dispatch() -> None:
    """The enforcement hook's error is the answer and the function never runs."""
    svc = Service("Guarded")
    ran: list[int] = []

    @svc.function()
    async def act() -> int:
        ran.append(1)
        return 1

    def check(ctx: CallContext, uc: Any) -> ServiceFunctionError | None:
        return None if uc and "admin" in uc.roles else AuthorizationError("suspended")

    ex = Executor(svc, enforcement=check)
    denied = await ex.handle(call("act", {}, userContext={"userId": "u", "roles": []}))
    allowed = await ex.handle(call("act", {}, userContext={"userId": "u", "roles": ["admin"]}))
    assert denied is not None and denied.response["error"]["code"] == ErrorCode.AUTHORIZATION_ERROR
    assert allowed is not None and allowed.response["result"] == 1
    assert ran == [1]


def test_prepare_is_sync_and_returns_job() -> None:
    """prepare() needs no event loop and yields a Job for a good call, a Reply for a bad one."""
    assert isinstance(EXECUTOR.prepare(call("add", {"a": 1})), Job)
    assert isinstance(EXECUTOR.prepare(call("nope")), Reply)


def test_registration_errors() -> None:
    """Duplicate names and *args functions are refused at registration."""
    svc = Service("S")

    @svc.function("f")
    async def f() -> None: ...

    with pytest.raises(ValueError, match="twice"):
        svc.function("f")(f)
    with pytest.raises(TypeError):
        svc.function("g")(lambda *a: None)


@settings(max_examples=150, deadline=None)
@given(
    st.binary(max_size=300)
    | st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.text(max_size=10)
        | st.sampled_from(["2.0", "add", "createUser", REPLY]),
        lambda c: (
            st.lists(c, max_size=4)
            | st.dictionaries(
                st.sampled_from(["jsonrpc", "id", "method", "params", "replyTo", "userContext", "a"]),
                c,
                max_size=6,
            )
        ),
        max_leaves=20,
    ).map(orjson.dumps)
)
async def test_any_payload_gives_reply_or_drop(payload: bytes) -> None:
    """No payload makes the executor raise: the answer is a JSON-RPC response or a drop."""
    reply = await EXECUTOR.handle(payload, response_topic=REPLY)
    assert reply is not None
    doc = reply.response
    assert doc["jsonrpc"] == "2.0" and ("result" in doc) != ("error" in doc)
