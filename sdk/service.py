"""Declaring a service and its functions (seed: ``[ServiceFunction("UserManagement")]`` and
``[Function("createUser")]``).

::

    service = Service("UserManagement")

    @service.function("createUser", timeout=5.0)
    async def create_user(email: EmailStr, name: str, ctx: CallContext) -> dict[str, str]:
        ...

Parameters are validated by a pydantic model compiled once from the signature. A parameter
annotated ``CallContext`` receives the call's context instead of a value from ``params``. A
function whose only parameter is a pydantic model receives the whole ``params`` object validated
as that model (seed: ``CreateUser(CreateUserRequest request)``). Sync functions run in a worker
thread so they cannot block the service's event loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, create_model

from protocol.names import check_service_name
from protocol.rpc import RpcId, UserContext

DEFAULT_TIMEOUT = 30.0
_METHOD_MAX = 128


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a function may know about the call it serves."""

    service: str
    method: str
    call_id: RpcId
    correlation_id: str | None
    user_context: UserContext | None
    reply_to: str
    received_at: float


class _Params(BaseModel):
    # Unknown params are refused: a misspelt optional argument must not pass silently.
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A registered function: how to validate its params and how to call it."""

    name: str
    func: Callable[..., Any]
    is_async: bool
    params_model: type[BaseModel]
    positional: tuple[str, ...]
    ctx_param: str | None
    whole_model_param: str | None
    timeout: float
    cacheable: bool


class Service:
    """A named service and its functions; served by ``sdk.runtime.ServiceRuntime``."""

    def __init__(self, name: str) -> None:
        self.name = check_service_name(name)
        self.functions: dict[str, FunctionSpec] = {}

    def function(
        self, name: str | None = None, *, timeout: float = DEFAULT_TIMEOUT, cacheable: bool = False
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a function under the JSON-RPC method ``name`` (default: the Python name).

        ``timeout`` bounds one execution (-32007 beyond it); ``cacheable`` tells clients its
        results may be cached and served stale while the service is unavailable.
        """
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            method = name or func.__name__
            if not method or len(method) > _METHOD_MAX:
                raise ValueError(f"method name must be 1..{_METHOD_MAX} characters, got {method!r}")
            if method in self.functions:
                raise ValueError(f"{self.name}.{method} is registered twice")
            self.functions[method] = compile_function(method, func, timeout=timeout, cacheable=cacheable)
            return func

        return register

    @property
    def cacheable_methods(self) -> list[str]:
        return sorted(m for m, s in self.functions.items() if s.cacheable)


def compile_function(name: str, func: Callable[..., Any], *, timeout: float, cacheable: bool) -> FunctionSpec:
    """Build the params model of ``func`` from its signature (done once, at registration)."""
    sig = inspect.signature(func)
    hints = get_type_hints(func)
    fields: dict[str, Any] = {}
    positional: list[str] = []
    ctx_param: str | None = None
    for pname, param in sig.parameters.items():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"{name}: *args/**kwargs cannot be described as JSON-RPC params")
        annotation = hints.get(pname, Any)
        if annotation is CallContext:
            ctx_param = pname
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (annotation, default)
        positional.append(pname)
    whole: str | None = None
    if len(positional) == 1:
        only = fields[positional[0]][0]
        if inspect.isclass(only) and issubclass(only, BaseModel):
            whole = positional[0]
    model: type[BaseModel]
    if whole is not None:
        model = fields[whole][0]
    else:
        model = create_model(f"{name}Params", __base__=_Params, **fields)
    return FunctionSpec(
        name=name,
        func=func,
        is_async=inspect.iscoroutinefunction(func),
        params_model=model,
        positional=tuple(positional),
        ctx_param=ctx_param,
        whole_model_param=whole,
        timeout=timeout,
        cacheable=cacheable,
    )
