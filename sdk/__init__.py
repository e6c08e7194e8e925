"""What platform services and clients import: declare and serve a service, call services.

::

    from sdk import Service, CallContext, ServiceRuntime, ServiceClient, PlatformAwareClient
    from sdk import MqttBus, MqttConfig, SystemTrust  # a client's bus; trusting sfa-ops' signals
    from sdk import configure_tracing  # OTLP spans when OTEL_EXPORTER_OTLP_ENDPOINT is set
"""

from adapters.mqtt.bus import MqttBus, MqttConfig
from adapters.mqtt.tracing import configure_tracing
from sdk.client import ServiceClient
from sdk.client_events import CallResult, ClientEvent
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
from sdk.platform_client import PlatformAwareClient
from sdk.runtime import ServiceRuntime, presence_will
from sdk.service import CallContext, Service
from sdk.strategy import AdaptiveStrategy, CallPlan, StrategyConfig
from sdk.trust import SystemTrust

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
    "MqttBus",
    "MqttConfig",
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
    "SystemTrust",
    "UnauthorizedException",
    "ValidationError",
    "ValidationException",
    "WritesDeferredException",
    "configure_tracing",
    "presence_will",
]
