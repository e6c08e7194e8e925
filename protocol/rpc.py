"""JSON-RPC 2.0 calls and responses as the platform uses them (DESIGN.md §1, seed's "Standard
Error Response Format")."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from protocol.base import Timestamp, WireModel
from protocol.errors import CIRCUIT_BREAKER_OPEN_MESSAGE, SERVICE_UNAVAILABLE_MESSAGE, ErrorCode, spec_for

RpcId = str | int

_METHOD_MAX = 128


class UserContext(WireModel):
    user_id: str | None = Field(default=None, max_length=256)
    roles: list[str] = Field(default_factory=list)
    ip_address: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=512)
    session_id: str | None = Field(default=None, max_length=256)


class Call(WireModel):
    """A call published on ``service/{Service}``."""

    jsonrpc: Literal["2.0"] = "2.0"
    id: RpcId
    method: str = Field(min_length=1, max_length=_METHOD_MAX)
    params: dict[str, Any] | list[Any] | None = None
    reply_to: str | None = Field(default=None, max_length=512)
    correlation_id: str | None = Field(default=None, max_length=256)
    user_context: UserContext | None = None

    @field_validator("id")
    @classmethod
    def _id_not_bool(cls, v: RpcId) -> RpcId:
        if isinstance(v, str) and len(v) > 256:
            raise ValueError("id longer than 256 characters")
        return v


class ErrorData(WireModel):
    """``error.data``: the standard fields plus the -32503 extras (serviceName, reason, …)."""

    error_type: str
    details: Any = None
    correlation_id: str | None = None
    timestamp: Timestamp | None = None
    service: str | None = None
    method: str | None = None
    service_name: str | None = None
    reason: str | None = None
    message: str | None = None
    estimated_recovery: str | None = None
    retry_after: Timestamp | None = None
    """Instant from which the call may be retried (the seed's ``RetryAfter``, a DateTime)."""
    retry_after_seconds: float | None = Field(default=None, ge=0)
    """The same as a delay from ``timestamp``."""


class RpcError(WireModel):
    code: int
    message: str
    data: ErrorData | None = None


class SuccessResponse(WireModel):
    jsonrpc: Literal["2.0"] = "2.0"
    id: RpcId | None
    result: Any


class ErrorResponse(WireModel):
    jsonrpc: Literal["2.0"] = "2.0"
    id: RpcId | None
    error: RpcError

    def to_wire(self) -> dict[str, Any]:
        """As ``WireModel.to_wire``, but ``id`` is always present (JSON-RPC 2.0: null when unknown)."""
        return {**super().to_wire(), "id": self.id}


def error_response(
    *,
    call_id: RpcId | None,
    code: int,
    message: str | None = None,
    details: Any = None,
    correlation_id: str | None = None,
    service: str | None = None,
    method: str | None = None,
    timestamp: Any = None,
    error_type: str | None = None,
    data_message: str | None = None,
    **extra: Any,
) -> ErrorResponse:
    """Build the standard error response for ``code`` (errorType and message from the table)."""
    spec = spec_for(code)
    data = ErrorData(
        error_type=error_type or spec.error_type,
        details=details,
        correlation_id=correlation_id,
        timestamp=timestamp,
        service=service,
        method=method,
        message=data_message,
        **extra,
    )
    return ErrorResponse(id=call_id, error=RpcError(code=code, message=message or spec.message, data=data))


def _epoch(ts: Any) -> float:
    return ts.timestamp() if isinstance(ts, datetime) else float(ts)


def circuit_open_response(
    *, call_id: RpcId | None, service: str, retry_after_seconds: float, correlation_id: str | None,
    timestamp: datetime | float,
) -> ErrorResponse:
    """-32503 "Circuit Breaker Open"; ``retryAfter`` is ``timestamp`` + ``retry_after_seconds``."""
    seconds = max(0.0, round(retry_after_seconds, 3))
    return error_response(
        call_id=call_id,
        code=ErrorCode.SERVICE_UNAVAILABLE,
        message=CIRCUIT_BREAKER_OPEN_MESSAGE,
        error_type="CircuitBreakerOpen",
        service_name=service,
        data_message=f"Circuit breaker for {service} is open; calls are refused until it half-opens",
        retry_after=_epoch(timestamp) + seconds,
        retry_after_seconds=seconds,
        correlation_id=correlation_id,
        timestamp=timestamp,
    )


def service_unavailable_response(
    *,
    call_id: RpcId | None,
    service: str,
    reason: str,
    estimated_recovery: str | None,
    retry_after_seconds: float,
    correlation_id: str | None,
    timestamp: datetime | float,
) -> ErrorResponse:
    """-32503 "Service Temporarily Unavailable"; ``retryAfter`` is ``timestamp`` + ``retry_after_seconds``."""
    seconds = max(0.0, round(retry_after_seconds, 3))
    return error_response(
        call_id=call_id,
        code=ErrorCode.SERVICE_UNAVAILABLE,
        message=SERVICE_UNAVAILABLE_MESSAGE,
        error_type="ServiceUnavailable",
        service_name=service,
        reason=reason,
        estimated_recovery=estimated_recovery,
        retry_after=_epoch(timestamp) + seconds,
        retry_after_seconds=seconds,
        correlation_id=correlation_id,
        timestamp=timestamp,
    )
