"""What platform services and clients import: declare and serve a service, call services.

::

    from sdk import Service, CallContext, ServiceRuntime, ServiceClient, PlatformAwareClient
"""

from sdk.client import ServiceClient
from sdk.errors import (
    AuthorizationError,
    BusinessLogicError,
    BusinessLogicException,
    ConflictError,
    ConflictException,
    FieldError,
    RateLimitedException,
    RateLimitError,
    ResourceNotFound,
    ResourceNotFoundException,
    ServiceCallError,
    ServiceException,
    ServiceFunctionError,
    ServiceTemporarilyUnavailableException,
    ServiceTimeoutException,
    UnauthorizedException,
    ValidationError,
    ValidationException,
    WritesDeferredException,
)
from sdk.executor import EnforcementCheck, Executor, Reply
from sdk.platform_client import CallResult, ClientEvent, PlatformAwareClient
from sdk.runtime import ServiceRuntime, presence_will
from sdk.service import CallContext, Service
from sdk.strategy import AdaptiveStrategy, CallPlan, StrategyConfig

__all__ = [
    "AdaptiveStrategy",
    "AuthorizationError",
    "BusinessLogicError",
    "BusinessLogicException",
    "CallContext",
    "CallPlan",
    "CallResult",
    "ClientEvent",
    "ConflictError",
    "ConflictException",
    "EnforcementCheck",
    "Executor",
    "FieldError",
    "PlatformAwareClient",
    "RateLimitError",
    "RateLimitedException",
    "Reply",
    "ResourceNotFound",
    "ResourceNotFoundException",
    "Service",
    "ServiceCallError",
    "ServiceClient",
    "ServiceException",
    "ServiceFunctionError",
    "ServiceRuntime",
    "ServiceTemporarilyUnavailableException",
    "ServiceTimeoutException",
    "StrategyConfig",
    "UnauthorizedException",
    "ValidationError",
    "ValidationException",
    "WritesDeferredException",
    "presence_will",
]
