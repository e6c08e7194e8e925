"""Errors of the SDK: what a service function raises, and what a client call raises.

A service function raises a ``ServiceFunctionError`` (seed: ``ServiceFunctionException``); the
executor turns it into the standard JSON-RPC error response. A client call raises a
``ServiceCallError`` chosen by the response's error code (seed: ``ServiceClient.HandleServiceError``).

Service side::

    ServiceFunctionError(error_type, message, details)
     ├── ValidationError            -32001  details {"field","message","value","constraint","errors":[…]}
     ├── BusinessLogicError         -32002  details {"rule","message",…}
     ├── AuthorizationError         -32003
     ├── ResourceNotFound           -32004  details {"resourceType","resourceId"}
     ├── ConflictError              -32005  details {"rule","message",…}
     └── RateLimitError             -32006  details {"retryAfterSeconds"}

Client side::

    ServiceCallError                           code, message, data, service, method
     ├── ValidationException                   -32001  .errors (list[FieldError])
     ├── BusinessLogicException                -32002  .rule
     ├── UnauthorizedException                 -32003
     ├── ResourceNotFoundException             -32004
     ├── ConflictException                     -32005  .rule
     ├── RateLimitedException                  -32006  .retry_after
     ├── ServiceTimeoutException               -32007, or no answer in time (.local=True)
     ├── ServiceTemporarilyUnavailableException -32503, or refused locally (.local=True)
     │    │                                    .retry_after, .reason, .circuit_open
     │    └── WritesDeferredException          a write refused while the database is in trouble
     └── ServiceException                      any other code (-32700, -32600, -32601, -32603, …)
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from protocol.base import epoch_from_rfc3339
from protocol.errors import ErrorCode, spec_for

# ---------------------------------------------------------------- service side


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field (seed: ``ValidationError`` inside ``ValidationErrorDetails``)."""

    field: str
    message: str
    value: str | None = None
    constraint: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, doc: Mapping[str, Any]) -> FieldError:
        value = doc.get("value")
        constraint = doc.get("constraint")
        return cls(
            field=str(doc.get("field", "")),
            message=str(doc.get("message", "")),
            value=None if value is None else str(value),
            constraint=None if constraint is None else str(constraint),
        )


class ServiceFunctionError(Exception):
    """Raised by a service function to answer with a tier-1 error of the code table.

    ``error_type`` is an ``ErrorCode`` (or its int); ``details`` must be JSON-serialisable and is
    sent to the caller as ``error.data.details`` — never put internals there.
    """

    def __init__(self, error_type: ErrorCode | int, message: str, details: Any = None) -> None:
        self.code = int(error_type)
        self.error_type = spec_for(self.code).error_type
        self.message = message
        self.details = details
        super().__init__(message)


class ValidationError(ServiceFunctionError):
    """Invalid input (-32001). ``details`` keeps the seed's flat first-error fields and the list."""

    def __init__(self, message: str = "Invalid input data", errors: list[FieldError] | None = None) -> None:
        self.errors = list(errors or [])
        super().__init__(ErrorCode.VALIDATION_ERROR, message, validation_details(self.errors))


class BusinessLogicError(ServiceFunctionError):
    """A business rule refused the call (-32002); ``rule`` names it (seed: ``duplicate_email``)."""

    def __init__(self, rule: str, message: str, **extra: Any) -> None:
        self.rule = rule
        super().__init__(ErrorCode.BUSINESS_LOGIC_ERROR, message, {"rule": rule, "message": message, **extra})


class AuthorizationError(ServiceFunctionError):
    """The caller may not do this (-32003)."""

    def __init__(self, message: str = "Not authorized", **extra: Any) -> None:
        super().__init__(
            ErrorCode.AUTHORIZATION_ERROR, message, {"message": message, **extra} if extra else None
        )


class ResourceNotFound(ServiceFunctionError):
    """The resource does not exist (-32004)."""

    def __init__(self, resource_type: str, resource_id: str, message: str | None = None) -> None:
        msg = message or f"{resource_type} {resource_id} not found"
        super().__init__(
            ErrorCode.RESOURCE_NOT_FOUND,
            msg,
            {"resourceType": resource_type, "resourceId": resource_id, "message": msg},
        )


class ConflictError(ServiceFunctionError):
    """The call conflicts with existing state (-32005); ``rule`` names the constraint."""

    def __init__(self, rule: str, message: str, **extra: Any) -> None:
        self.rule = rule
        super().__init__(ErrorCode.CONFLICT_ERROR, message, {"rule": rule, "message": message, **extra})


class RateLimitError(ServiceFunctionError):
    """Too many calls (-32006); ``retry_after`` in seconds when known, sent as
    ``details.retryAfterSeconds`` (``retryAfter`` on the wire is always an instant)."""

    def __init__(self, message: str = "Rate limit exceeded", retry_after: float | None = None) -> None:
        details: dict[str, Any] = {"message": message}
        if retry_after is not None:
            details["retryAfterSeconds"] = retry_after
        super().__init__(ErrorCode.RATE_LIMIT_ERROR, message, details)


def validation_details(errors: list[FieldError]) -> dict[str, Any]:
    """``error.data.details`` of a -32001: the seed's wire example is one flat field error, its
    C# sketch a list (``ValidationErrorDetails.Errors``); we send both so either reader works."""
    listed = [e.to_wire() for e in errors]
    first = listed[0] if listed else {}
    return {**first, "errors": listed}


# ---------------------------------------------------------------- client side


class ServiceCallError(Exception):
    """Base of every error a client call raises; ``code`` is the JSON-RPC error code."""

    def __init__(
        self,
        message: str,
        *,
        code: int,
        data: Mapping[str, Any] | None = None,
        service: str | None = None,
        method: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.data: Mapping[str, Any] = data or {}
        self.service = service
        self.method = method
        super().__init__(message)

    @property
    def details(self) -> Any:
        return self.data.get("details")

    @property
    def error_type(self) -> str | None:
        value = self.data.get("errorType")
        return value if isinstance(value, str) else None


class ValidationException(ServiceCallError):
    """-32001: ``errors`` lists the invalid fields."""

    @property
    def errors(self) -> list[FieldError]:
        details = self.details
        if not isinstance(details, Mapping):
            return []
        listed = details.get("errors")
        if isinstance(listed, list):
            return [FieldError.from_wire(e) for e in listed if isinstance(e, Mapping)]
        return [FieldError.from_wire(details)] if "field" in details else []


class BusinessLogicException(ServiceCallError):
    """-32002: ``rule`` names the business rule that refused the call."""

    @property
    def rule(self) -> str | None:
        return _detail_str(self.details, "rule")


class UnauthorizedException(ServiceCallError):
    """-32003."""


class ResourceNotFoundException(ServiceCallError):
    """-32004."""


class ConflictException(ServiceCallError):
    """-32005: ``rule`` names the violated constraint."""

    @property
    def rule(self) -> str | None:
        return _detail_str(self.details, "rule")


class RateLimitedException(ServiceCallError):
    """-32006: ``retry_after`` seconds when the service said (``details.retryAfterSeconds``, or
    ``details.retryAfter`` as an instant)."""

    @property
    def retry_after(self) -> float | None:
        details = self.details
        return retry_seconds(details, time.time()) if isinstance(details, Mapping) else None


class ServiceTimeoutException(ServiceCallError):
    """-32007 (the function timed out), or ``local``: no answer within the call timeout."""

    def __init__(self, message: str, *, local: bool = False, **kw: Any) -> None:
        kw.setdefault("code", int(ErrorCode.TIMEOUT_ERROR))
        super().__init__(message, **kw)
        self.local = local


class ServiceTemporarilyUnavailableException(ServiceCallError):
    """-32503 from sfa-ops, or ``local``: refused by the client without publishing because the
    service is known to be unavailable or its breaker open."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        reason: str | None = None,
        circuit_open: bool = False,
        local: bool = False,
        **kw: Any,
    ) -> None:
        kw.setdefault("code", int(ErrorCode.SERVICE_UNAVAILABLE))
        super().__init__(message, **kw)
        self.retry_after = retry_after
        self.reason = reason
        self.circuit_open = circuit_open
        self.local = local


class WritesDeferredException(ServiceTemporarilyUnavailableException):
    """A write refused locally while the platform's database is in trouble (reads still go)."""


class ServiceException(ServiceCallError):
    """Any other error code: protocol errors, -32603 internal errors, unknown codes."""


_BY_CODE: dict[int, type[ServiceCallError]] = {
    ErrorCode.VALIDATION_ERROR: ValidationException,
    ErrorCode.BUSINESS_LOGIC_ERROR: BusinessLogicException,
    ErrorCode.AUTHORIZATION_ERROR: UnauthorizedException,
    ErrorCode.RESOURCE_NOT_FOUND: ResourceNotFoundException,
    ErrorCode.CONFLICT_ERROR: ConflictException,
    ErrorCode.RATE_LIMIT_ERROR: RateLimitedException,
}


def exception_for(error: Mapping[str, Any], *, service: str | None, method: str | None) -> ServiceCallError:
    """The client exception for a response's ``error`` object (tolerant of malformed ones)."""
    raw_code = error.get("code")
    code = (
        raw_code
        if isinstance(raw_code, int) and not isinstance(raw_code, bool)
        else int(ErrorCode.INTERNAL_ERROR)
    )
    message = error.get("message")
    text = message if isinstance(message, str) else spec_for(code).message
    raw_data = error.get("data")
    data: Mapping[str, Any] = raw_data if isinstance(raw_data, Mapping) else {}
    if code == ErrorCode.TIMEOUT_ERROR:
        return ServiceTimeoutException(text, data=data, service=service, method=method)
    if code == ErrorCode.SERVICE_UNAVAILABLE:
        reason = data.get("reason")
        return ServiceTemporarilyUnavailableException(
            text,
            retry_after=retry_seconds(data, time.time()),
            reason=reason if isinstance(reason, str) else None,
            circuit_open=data.get("errorType") == "CircuitBreakerOpen",
            data=data,
            service=service,
            method=method,
        )
    cls = _BY_CODE.get(code, ServiceException)
    return cls(text, code=code, data=data, service=service, method=method)


def retry_seconds(data: Mapping[str, Any], now: float) -> float | None:
    """Seconds to wait from an error's ``retryAfterSeconds`` (a delay) or ``retryAfter`` (an RFC 3339
    instant, the seed's DateTime); never negative; ``None`` when neither is usable."""
    delay = data.get("retryAfterSeconds")
    if isinstance(delay, int | float) and not isinstance(delay, bool) and math.isfinite(delay):
        return max(0.0, float(delay))
    instant = data.get("retryAfter")
    if isinstance(instant, str):
        try:
            return max(0.0, epoch_from_rfc3339(instant) - now)
        except ValueError:
            return None
    return None


def _detail_str(details: Any, key: str) -> str | None:
    value = details.get(key) if isinstance(details, Mapping) else None
    return value if isinstance(value, str) else None
