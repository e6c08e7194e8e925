"""Executing one call (seed: ``ServiceFunctionExecutor``): bytes in, a reply (or nothing) out.

``Executor.prepare`` is synchronous and cheap — it parses the payload once (orjson), checks the
JSON-RPC envelope with plain dict checks and finds the function — so the MQTT handler can run it
inline; ``Executor.run`` validates params with the function's compiled model, runs enforcement,
calls the function under its timeout and builds the response. ``Executor.handle`` does both.

Outcomes:

======================================  =========================================
malformed JSON                          -32700 (only when an MQTT Response Topic says where)
not a JSON-RPC request                  -32600, ``details`` names the bad field
unknown method                          -32601
params do not fit the signature         -32001 ValidationError, a detail per field
``ServiceFunctionError`` raised         its code, ``details`` as given
function exceeded its timeout           -32007
any other exception                     -32603, logged here, nothing of it sent
no usable reply topic                   logged and dropped (``None``)
======================================  =========================================

The MQTT 5 Response Topic and Correlation Data properties take precedence over the body's
``replyTo``/``correlationId``; the reply carries the same Correlation Data.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from protocol.base import MAX_DEPTH, MAX_PAYLOAD_BYTES, check_depth, rfc3339_from_epoch
from protocol.errors import ErrorCode, spec_for
from protocol.exceptions import ProtocolError
from protocol.intake import usable_reply_topic  # one rule for sfa-ops and services: no forged system messages
from protocol.rpc import UserContext
from sdk.call_checks import details_with_message, envelope_problem, too_many_params, validation_error
from sdk.errors import ServiceFunctionError
from sdk.service import CallContext, FunctionSpec, Service

logger = logging.getLogger(__name__)

EnforcementResult = ServiceFunctionError | None
EnforcementCheck = Callable[
    [CallContext, UserContext | None], EnforcementResult | Awaitable[EnforcementResult]
]
"""Run before dispatch: return an error to refuse the call, ``None`` to allow."""

_DUMP_OPTS = orjson.OPT_NON_STR_KEYS


@dataclass(frozen=True, slots=True)
class Reply:
    """What to publish: ``payload`` (JSON bytes) on ``topic`` with ``correlation_data``."""

    topic: str
    payload: bytes
    correlation_data: bytes | None = None
    code: int | None = None

    @property
    def response(self) -> dict[str, Any]:
        doc: dict[str, Any] = orjson.loads(self.payload)
        return doc


@dataclass(frozen=True, slots=True)
class Job:
    """A well-formed call, ready to run."""

    spec: FunctionSpec
    ctx: CallContext
    params: dict[str, Any] | list[Any] | None
    correlation_data: bytes | None


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class Executor:
    """Turns call payloads into replies for one ``Service``. Holds no connection."""

    def __init__(
        self,
        service: Service,
        *,
        enforcement: EnforcementCheck | None = None,
        clock: Callable[[], float] = time.time,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        max_depth: int = MAX_DEPTH,
    ) -> None:
        self.service = service
        self.enforcement = enforcement
        self._clock = clock
        self._max_bytes = max_payload_bytes
        self._max_depth = max_depth
        self.counts: Counter[str] = Counter()
        self._last_drop_log = -1e9

    # ------------------------------------------------------------ parsing (sync)

    def prepare(
        self, payload: bytes, *, response_topic: str | None = None, correlation_data: bytes | None = None
    ) -> Job | Reply | None:
        """Parse and check a call; a ``Job`` to run, an error ``Reply``, or ``None`` to drop."""
        self.counts["received"] += 1
        prop_topic = usable_reply_topic(response_topic)
        if len(payload) > self._max_bytes:
            return self._refuse(
                prop_topic,
                correlation_data,
                None,
                ErrorCode.INVALID_REQUEST,
                "(payload)",
                f"{len(payload)} bytes is over the {self._max_bytes}-byte limit",
            )
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return self._refuse(
                prop_topic, correlation_data, None, ErrorCode.PARSE_ERROR, "(payload)", "not valid JSON"
            )
        if not isinstance(doc, dict):
            return self._refuse(
                prop_topic,
                correlation_data,
                None,
                ErrorCode.INVALID_REQUEST,
                "(payload)",
                f"must be a JSON object, got {type(doc).__name__}",
            )
        reply_to = prop_topic or usable_reply_topic(doc.get("replyTo"))
        call_id = doc.get("id")
        if not (isinstance(call_id, str) and 0 < len(call_id) <= 256) and type(call_id) is not int:
            return self._refuse(
                reply_to,
                correlation_data,
                doc,
                ErrorCode.INVALID_REQUEST,
                "id",
                "must be a string of 1..256 characters or an integer",
            )
        try:
            check_depth(doc, self._max_depth)
        except ProtocolError as exc:
            return self._refuse(
                reply_to, correlation_data, doc, ErrorCode.INVALID_REQUEST, "(payload)", exc.problem
            )
        problem = envelope_problem(doc)
        if problem is not None:
            return self._refuse(reply_to, correlation_data, doc, ErrorCode.INVALID_REQUEST, *problem)
        if reply_to is None:
            self._log_drop(f"call {call_id!r} has no usable reply topic")
            return None
        method: str = doc["method"]
        spec = self.service.functions.get(method)
        if spec is None:
            return self._refuse(
                reply_to,
                correlation_data,
                doc,
                ErrorCode.METHOD_NOT_FOUND,
                "method",
                f"{self.service.name} has no function {method!r}",
            )
        raw_uc = doc.get("userContext")
        user_context: UserContext | None = None
        if raw_uc is not None:
            try:
                user_context = UserContext.model_validate(raw_uc)
            except PydanticValidationError as exc:
                loc = ".".join(str(p) for p in exc.errors()[0]["loc"])
                return self._refuse(
                    reply_to,
                    correlation_data,
                    doc,
                    ErrorCode.INVALID_REQUEST,
                    f"userContext.{loc}",
                    exc.errors()[0]["msg"],
                )
        ctx = CallContext(
            service=self.service.name,
            method=method,
            call_id=call_id,
            correlation_id=doc.get("correlationId"),
            user_context=user_context,
            reply_to=reply_to,
            received_at=self._clock(),
        )
        return Job(spec=spec, ctx=ctx, params=doc.get("params"), correlation_data=correlation_data)

    # ------------------------------------------------------------ running (async)

    async def run(self, job: Job) -> Reply:
        """Enforce, validate, call under the timeout, and build the reply. Never raises (except
        ``CancelledError``)."""
        spec, ctx = job.spec, job.ctx
        try:
            if self.enforcement is not None:
                refusal = self.enforcement(ctx, ctx.user_context)
                if inspect.isawaitable(refusal):
                    refusal = await refusal
                if refusal is not None:
                    raise refusal
            kwargs = self._arguments(spec, job.params)
            if spec.ctx_param is not None:
                kwargs[spec.ctx_param] = ctx
            async with asyncio.timeout(spec.timeout):
                if spec.is_async:
                    result = await spec.func(**kwargs)
                else:
                    result = await asyncio.to_thread(spec.func, **kwargs)
            self.counts["ok"] += 1
            body = {"jsonrpc": "2.0", "id": ctx.call_id, "result": result}
            try:
                return Reply(
                    ctx.reply_to,
                    orjson.dumps(body, default=_json_default, option=_DUMP_OPTS),
                    job.correlation_data,
                )
            except TypeError:
                logger.exception("%s.%s returned a result that is not JSON", ctx.service, ctx.method)
                return self._error(job, ErrorCode.INTERNAL_ERROR, None, None)
        except ServiceFunctionError as exc:
            # error.message comes from the code table (seed: GetErrorMessage(ex.ErrorType)); the
            # function's own message travels in details.
            return self._error(job, exc.code, None, details_with_message(exc))
        except TimeoutError:
            return self._error(
                job,
                ErrorCode.TIMEOUT_ERROR,
                None,
                {"timeoutSeconds": spec.timeout, "message": f"{ctx.method} did not finish in time"},
            )
        except Exception:
            # Logged with its traceback here; the caller learns only that it failed.
            logger.exception("%s.%s failed (call %r)", ctx.service, ctx.method, ctx.call_id)
            return self._error(
                job, ErrorCode.INTERNAL_ERROR, None, {"message": "An unexpected error occurred"}
            )

    async def handle(
        self, payload: bytes, *, response_topic: str | None = None, correlation_data: bytes | None = None
    ) -> Reply | None:
        """``prepare`` then ``run``: the whole call, for tests and simple loops."""
        prepared = self.prepare(payload, response_topic=response_topic, correlation_data=correlation_data)
        if isinstance(prepared, Job):
            return await self.run(prepared)
        return prepared

    # ------------------------------------------------------------ helpers

    def _arguments(self, spec: FunctionSpec, params: dict[str, Any] | list[Any] | None) -> dict[str, Any]:
        if params is None:
            params = {}
        if isinstance(params, list):
            if spec.whole_model_param is not None and len(params) == 1 and isinstance(params[0], dict):
                params = params[0]
            elif len(params) > len(spec.positional):
                raise too_many_params(len(params), len(spec.positional))
            else:
                params = dict(zip(spec.positional, params, strict=False))
        try:
            model = spec.params_model.model_validate(params)
        except PydanticValidationError as exc:
            raise validation_error(exc) from None
        if spec.whole_model_param is not None:
            return {spec.whole_model_param: model}
        return dict(model.__dict__)

    def _log_drop(self, what: str) -> None:
        """Count a dropped call; log the first at once, then at most one line a second."""
        self.counts["dropped_no_reply_topic"] += 1
        now = time.monotonic()
        if now - self._last_drop_log >= 1.0:
            self._last_drop_log = now
            logger.warning(
                "%s dropped %s (%d dropped so far)",
                self.service.name,
                what,
                self.counts["dropped_no_reply_topic"],
            )

    def _error(self, job: Job, code: int, message: str | None, details: Any) -> Reply:
        ctx = job.ctx
        return self._reply(
            ctx.reply_to,
            job.correlation_data,
            ctx.call_id,
            code,
            message,
            details,
            ctx.correlation_id,
            ctx.method,
        )

    def _refuse(
        self,
        reply_to: str | None,
        correlation_data: bytes | None,
        doc: dict[str, Any] | None,
        code: int,
        field: str,
        problem: str,
    ) -> Reply | None:
        self.counts[
            "malformed" if code in (ErrorCode.PARSE_ERROR, ErrorCode.INVALID_REQUEST) else "refused"
        ] += 1
        if reply_to is None:
            self._log_drop(f"a call with no usable reply topic ({field}: {problem})")
            return None
        doc = doc or {}
        call_id = doc.get("id")
        call_id = (
            call_id if (isinstance(call_id, str) and len(call_id) <= 256) or type(call_id) is int else None
        )
        corr = doc.get("correlationId")
        method = doc.get("method")
        return self._reply(
            reply_to,
            correlation_data,
            call_id,
            code,
            None,
            {"field": field, "message": problem},
            corr if isinstance(corr, str) and len(corr) <= 256 else None,
            method if isinstance(method, str) and len(method) <= 128 else None,
        )

    def _reply(
        self,
        topic: str,
        correlation_data: bytes | None,
        call_id: Any,
        code: int,
        message: str | None,
        details: Any,
        correlation_id: str | None,
        method: str | None,
    ) -> Reply:
        spec = spec_for(code)
        self.counts[f"error{code}"] += 1
        data = {
            "errorType": spec.error_type,
            "details": details,
            "correlationId": correlation_id,
            "timestamp": rfc3339_from_epoch(self._clock()),
            "service": self.service.name,
            "method": method,
        }
        body = {
            "jsonrpc": "2.0",
            "id": call_id,
            "error": {"code": code, "message": message or spec.message, "data": data},
        }
        try:
            payload = orjson.dumps(body, default=_json_default, option=_DUMP_OPTS)
        except TypeError:
            logger.exception("%s: error details are not JSON; sent without them", self.service.name)
            data["details"] = None
            payload = orjson.dumps(body)
        return Reply(topic, payload, correlation_data, code)
