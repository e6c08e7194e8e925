"""Error codes of the wire contract, their tiers and whether they count against a service.

The table is DESIGN.md §1: tier-1 function errors (-32001..-32007, -32603), the JSON-RPC
protocol errors a service runtime answers with (-32700, -32600, -32601, -32602), and the
tier-2 -32503 that sfa-ops answers on a service's behalf. Tier 3 is never sent as a response.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ErrorCode(IntEnum):
    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    VALIDATION_ERROR = -32001
    BUSINESS_LOGIC_ERROR = -32002
    AUTHORIZATION_ERROR = -32003
    RESOURCE_NOT_FOUND = -32004
    CONFLICT_ERROR = -32005
    RATE_LIMIT_ERROR = -32006
    TIMEOUT_ERROR = -32007
    SERVICE_UNAVAILABLE = -32503


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    code: int
    error_type: str
    message: str
    tier: int
    counts_against_service: bool


_SPECS = (
    ErrorSpec(-32700, "ParseError", "Parse error", 1, False),
    ErrorSpec(-32600, "InvalidRequest", "Invalid Request", 1, False),
    ErrorSpec(-32601, "MethodNotFound", "Method not found", 1, False),
    ErrorSpec(-32602, "InvalidParams", "Invalid params", 1, False),
    ErrorSpec(-32001, "ValidationError", "Validation Error", 1, False),
    ErrorSpec(-32002, "BusinessLogicError", "Business Logic Error", 1, False),
    ErrorSpec(-32003, "AuthorizationError", "Authorization Error", 1, False),
    ErrorSpec(-32004, "ResourceNotFound", "Resource Not Found", 1, False),
    ErrorSpec(-32005, "ConflictError", "Conflict Error", 1, False),
    ErrorSpec(-32006, "RateLimitError", "Rate Limit Exceeded", 1, False),
    ErrorSpec(-32007, "TimeoutError", "Function Timeout", 1, True),
    ErrorSpec(-32603, "InternalError", "Internal Error", 1, True),
    ErrorSpec(-32503, "ServiceUnavailable", "Service Temporarily Unavailable", 2, False),
)

ERROR_SPECS: dict[int, ErrorSpec] = {s.code: s for s in _SPECS}
ERROR_TYPES: dict[str, ErrorSpec] = {s.error_type: s for s in _SPECS}
ERROR_TYPES["CircuitBreakerOpen"] = ErrorSpec(-32503, "CircuitBreakerOpen", "Circuit Breaker Open", 2, False)

CIRCUIT_BREAKER_OPEN_MESSAGE = "Circuit Breaker Open"
SERVICE_UNAVAILABLE_MESSAGE = "Service Temporarily Unavailable"


def spec_for(code: int) -> ErrorSpec:
    """The spec of a code; unknown server codes are treated as internal errors (they count)."""
    spec = ERROR_SPECS.get(code)
    if spec is not None:
        return spec
    return ErrorSpec(code, "UnknownError", "Unknown Error", 1, True)


def counts_against_service(code: int | None) -> bool:
    """Whether an outcome counts as a failure of the service (health and breaker).

    ``None`` is a success. -32503 is sfa-ops' own answer and never feeds back into the breaker.
    """
    if code is None:
        return False
    return spec_for(code).counts_against_service


def tier_of(code: int) -> int:
    return spec_for(code).tier
