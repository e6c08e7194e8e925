"""Checks of one call for the executor: the JSON-RPC envelope as the platform sends it, and the
-32001 ValidationError a params mismatch becomes (a detail per field, attempted values shown with
secrets hidden and long values cut)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError as PydanticValidationError

from protocol.errors import ErrorCode
from sdk.errors import FieldError, ServiceFunctionError, validation_details

_SECRET_HINTS = ("password", "secret", "token", "apikey", "api_key", "credential", "privatekey")
_SHOWN_MAX = 100


def envelope_problem(doc: dict[str, Any]) -> tuple[str, str] | None:
    """The first envelope field that is not JSON-RPC 2.0 as the platform sends it."""
    if doc.get("jsonrpc") != "2.0":
        return "jsonrpc", 'must be "2.0"'
    method = doc.get("method")
    if not isinstance(method, str) or not 0 < len(method) <= 128:
        return "method", "must be a string of 1..128 characters"
    params = doc.get("params")
    if params is not None and not isinstance(params, dict | list):
        return "params", "must be an object or an array"
    corr = doc.get("correlationId")
    if corr is not None and not (isinstance(corr, str) and len(corr) <= 256):
        return "correlationId", "must be a string of at most 256 characters"
    reply_to = doc.get("replyTo")
    if reply_to is not None and not isinstance(reply_to, str):
        return "replyTo", "must be a string"
    uc = doc.get("userContext")
    if uc is not None and not isinstance(uc, dict):
        return "userContext", "must be an object"
    return None


def details_with_message(exc: ServiceFunctionError) -> Any:
    if exc.details is None:
        return {"message": exc.message}
    if isinstance(exc.details, dict) and "message" not in exc.details:
        return {**exc.details, "message": exc.message}
    return exc.details


def _shown(field: str, value: Any) -> str | None:
    """The attempted value as the caller may see it: secrets hidden, long values cut."""
    if value is None:
        return None
    if any(h in field.lower().replace("-", "").replace(".", "") for h in _SECRET_HINTS):
        return "[REDACTED]"
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:
            text = type(value).__name__
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 3] + "..."


def _constraint(err: Any) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    ctx = {k: v for k, v in (err.get("ctx") or {}).items() if k != "error"}
    if ctx:
        return ", ".join(f"{k}: {v}" for k, v in ctx.items())
    return str(kind)


def validation_error(exc: PydanticValidationError) -> ServiceFunctionError:
    errors: list[FieldError] = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "(params)"
        errors.append(
            FieldError(
                field=field,
                message=err["msg"],
                value=None if err["type"] == "missing" else _shown(field, err.get("input")),
                constraint=_constraint(err),
            )
        )
    return ServiceFunctionError(ErrorCode.VALIDATION_ERROR, "Invalid input data", validation_details(errors))


def too_many_params(given: int, allowed: int) -> ServiceFunctionError:
    err = FieldError(
        field="params",
        message=f"{given} positional params given, at most {allowed} accepted",
        value=str(given),
        constraint=f"max_items: {allowed}",
    )
    return ServiceFunctionError(ErrorCode.VALIDATION_ERROR, "Invalid input data", validation_details([err]))
