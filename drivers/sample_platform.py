"""``python -m drivers.sample_platform`` — one instance of one sample service, in its own process.

The sample platform the simulator drives (``drivers.simulate``): four services built with the SDK,

==================  ==============================================  ==========================
service             functions                                        depends on
==================  ==============================================  ==========================
UserManagement      createUser, getUser, updateUser, deleteUser
OrderManagement     createOrder, getOrder                            UserManagement.getUser
Inventory           reserve, release, getStock
Payments            charge, refund
==================  ==============================================  ==========================

Each instance is a separate OS process so a crash is a real SIGKILL (the broker then publishes
the instance's Last Will, ``offline``). Faults are switched at runtime, without a restart, by a
JSON message on the service's control topic ``sim/{cluster}/control/{Service}`` (retained, so a
restarted instance behaves like its siblings)::

    {"mode": "normal" | "internal_errors" | "slow" | "hang" | "validation_errors",
     "rate": 0..1,      # share of calls affected (default 1)
     "delay": seconds}  # for "slow" (default 6)

``createOrder`` calls ``UserManagement.getUser`` with the caller's correlationId, which is how
sfa-ops learns the dependency OrderManagement → UserManagement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import Field

from adapters.mqtt import tracing
from adapters.mqtt.bus import Message, MqttBus, MqttConfig
from drivers.options import Option, OptionError, fail, resolve
from protocol.errors import ErrorCode
from protocol.names import check_segment, check_service_name
from sdk import errors
from sdk.client import ServiceClient
from sdk.runtime import ServiceRuntime, presence_will
from sdk.service import CallContext, Service

PROG = "python -m drivers.sample_platform"
SERVICES = ("UserManagement", "OrderManagement", "Inventory", "Payments")
MODES = ("normal", "internal_errors", "slow", "hang", "validation_errors")
FUNCTION_TIMEOUT = 20.0  # above any scripted delay: a slow call is slow, not a -32007
DEPENDENCY_TIMEOUT = 2.5  # createOrder's wait for getUser (below sfa-ops' demo call timeout of 3 s)
POOL_USERS = tuple(f"u{i}" for i in range(1, 21))
POOL_ORDERS = tuple(f"o{i}" for i in range(1, 21))
SKUS = ("sku-1", "sku-2", "sku-3", "sku-4", "sku-5")

logger = logging.getLogger("sfa_ops.sample_platform")


def control_topic(cluster: str, service: str) -> str:
    """Where the simulator switches ``service``'s fault mode (both instances listen)."""
    return f"sim/{check_segment(cluster, field='cluster')}/control/{check_service_name(service)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultMode:
    """How an instance misbehaves: ``mode`` on a share ``rate`` of calls, ``delay`` s when slow."""

    mode: str = "normal"
    rate: float = 1.0
    delay: float = 6.0

    @classmethod
    def from_wire(cls, payload: bytes) -> FaultMode:
        """Parse a control message; raises ValueError naming the bad field."""
        doc = orjson.loads(payload)
        if not isinstance(doc, dict):
            raise ValueError("a control message must be a JSON object")
        mode = doc.get("mode", "normal")
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        rate = doc.get("rate", 1.0)
        delay = doc.get("delay", 6.0)
        if not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ValueError(f"rate must be a number in 0..1, got {rate!r}")
        if not isinstance(delay, int | float) or not 0 <= delay < FUNCTION_TIMEOUT:
            raise ValueError(f"delay must be a number of seconds in 0..{FUNCTION_TIMEOUT:g}, got {delay!r}")
        return cls(mode=mode, rate=float(rate), delay=float(delay))

    def to_wire(self) -> dict[str, Any]:
        return {"mode": self.mode, "rate": self.rate, "delay": self.delay}


class Behaviour:
    """The current fault mode of this instance; every function passes through :meth:`apply`."""

    def __init__(self, *, rng: random.Random | None = None) -> None:
        self.mode = FaultMode()
        self._rng = rng or random.Random()
        self._unhang = asyncio.Event()

    def set(self, mode: FaultMode) -> None:
        self.mode = mode
        if mode.mode != "hang":
            self._unhang.set()  # hung calls finish (late: their callers gave up long ago)
            self._unhang = asyncio.Event()

    async def apply(self, method: str) -> None:
        m = self.mode
        if m.mode == "normal" or self._rng.random() >= m.rate:
            return
        if m.mode == "internal_errors":
            raise RuntimeError(f"simulated internal failure in {method}")  # -32603, text stays here
        if m.mode == "validation_errors":
            raise errors.ValidationError(
                "Invalid input data",
                [errors.FieldError(field="simulated", message="rejected by the validation storm")],
            )
        if m.mode == "slow":
            await asyncio.sleep(m.delay)
        elif m.mode == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._unhang.wait(), FUNCTION_TIMEOUT - 1.0)


def build_service(name: str, behaviour: Behaviour, *, client: ServiceClient | None = None) -> Service:
    """The sample service ``name``; ``client`` is needed by OrderManagement (it calls getUser)."""
    builders = {"UserManagement": _users, "OrderManagement": _orders, "Inventory": _inventory,
                "Payments": _payments}
    if name not in builders:
        raise ValueError(f"unknown sample service {name!r}; one of {', '.join(SERVICES)}")
    if name == "OrderManagement" and client is None:
        raise ValueError("OrderManagement needs a ServiceClient to call UserManagement")
    return builders[name](behaviour, client)


def _users(b: Behaviour, _client: ServiceClient | None) -> Service:
    svc = Service("UserManagement")
    users: dict[str, dict[str, str]] = {u: {"id": u, "name": f"User {u}"} for u in POOL_USERS}

    @svc.function("createUser", timeout=FUNCTION_TIMEOUT)
    async def create_user(email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$"), name: str = Field(min_length=1)) -> dict[str, str]:
        await b.apply("createUser")
        uid = f"u-{uuid.uuid4().hex[:10]}"
        users[uid] = {"id": uid, "name": name, "email": email}
        return users[uid]

    @svc.function("getUser", timeout=FUNCTION_TIMEOUT)
    async def get_user(userId: str) -> dict[str, str]:
        await b.apply("getUser")
        if userId not in users:
            raise errors.ResourceNotFound("User", userId)
        return users[userId]

    @svc.function("updateUser", timeout=FUNCTION_TIMEOUT)
    async def update_user(userId: str, name: str) -> dict[str, str]:
        await b.apply("updateUser")
        if userId not in users:
            raise errors.ResourceNotFound("User", userId)
        users[userId] = {**users[userId], "name": name}
        return users[userId]

    @svc.function("deleteUser", timeout=FUNCTION_TIMEOUT)
    async def delete_user(userId: str) -> dict[str, bool]:
        await b.apply("deleteUser")
        # Idempotent delete; pool users are kept so the traffic stays answerable.
        return {"deleted": userId not in POOL_USERS and users.pop(userId, None) is not None}

    return svc


def _orders(b: Behaviour, client: ServiceClient | None) -> Service:
    svc = Service("OrderManagement")
    assert client is not None

    @svc.function("createOrder", timeout=FUNCTION_TIMEOUT)
    async def create_order(userId: str, items: list[dict[str, Any]], ctx: CallContext) -> dict[str, Any]:
        await b.apply("createOrder")
        try:
            user = await client.call("UserManagement", "getUser", {"userId": userId},
                                     timeout=DEPENDENCY_TIMEOUT, correlation_id=ctx.correlation_id,
                                     user_context=ctx.user_context)
        except errors.ServiceTimeoutException as exc:
            raise errors.ServiceFunctionError(ErrorCode.TIMEOUT_ERROR, "UserManagement did not answer in time",
                                              {"dependency": "UserManagement"}) from exc
        except errors.ServiceTemporarilyUnavailableException as exc:
            # Passed on as -32503: the dependency's outage must not count against this service.
            raise errors.ServiceFunctionError(ErrorCode.SERVICE_UNAVAILABLE, "UserManagement is unavailable",
                                              {"dependency": "UserManagement", "retryAfterSeconds": exc.retry_after}) from exc
        except errors.ResourceNotFoundException as exc:
            raise errors.ResourceNotFound("User", userId) from exc
        return {"orderId": f"o-{uuid.uuid4().hex[:10]}", "userId": user["id"], "items": len(items)}

    @svc.function("getOrder", timeout=FUNCTION_TIMEOUT)
    async def get_order(orderId: str) -> dict[str, str]:
        await b.apply("getOrder")
        if orderId not in POOL_ORDERS:
            raise errors.ResourceNotFound("Order", orderId)
        return {"orderId": orderId, "status": "shipped"}

    return svc


def _inventory(b: Behaviour, _client: ServiceClient | None) -> Service:
    svc = Service("Inventory")
    stock = dict.fromkeys(SKUS, 1_000_000)

    @svc.function("reserve", timeout=FUNCTION_TIMEOUT)
    async def reserve(sku: str, quantity: int = Field(ge=1)) -> dict[str, Any]:
        await b.apply("reserve")
        if sku not in stock:
            raise errors.ResourceNotFound("Sku", sku)
        stock[sku] -= quantity
        return {"sku": sku, "reserved": quantity}

    @svc.function("release", timeout=FUNCTION_TIMEOUT)
    async def release(sku: str, quantity: int = Field(ge=1)) -> dict[str, Any]:
        await b.apply("release")
        if sku not in stock:
            raise errors.ResourceNotFound("Sku", sku)
        stock[sku] += quantity
        return {"sku": sku, "released": quantity}

    @svc.function("getStock", timeout=FUNCTION_TIMEOUT)
    async def get_stock(sku: str) -> dict[str, Any]:
        await b.apply("getStock")
        if sku not in stock:
            raise errors.ResourceNotFound("Sku", sku)
        return {"sku": sku, "available": stock[sku]}

    return svc


def _payments(b: Behaviour, _client: ServiceClient | None) -> Service:
    svc = Service("Payments")

    @svc.function("charge", timeout=FUNCTION_TIMEOUT)
    async def charge(userId: str, amount: float = Field(gt=0)) -> dict[str, Any]:
        await b.apply("charge")
        return {"paymentId": f"p-{uuid.uuid4().hex[:10]}", "userId": userId, "amount": amount}

    @svc.function("refund", timeout=FUNCTION_TIMEOUT)
    async def refund(paymentId: str, amount: float = Field(gt=0)) -> dict[str, Any]:
        await b.apply("refund")
        return {"paymentId": paymentId, "refunded": amount}

    return svc


# ------------------------------------------------------------------ the instance process

OPTIONS = [
    Option("service", f"which sample service to serve: {', '.join(SERVICES)}", metavar="NAME"),
    Option("instance", "instance id (its presence topic segment)", default="i1"),
    Option("broker", "MQTT broker URL, mqtt://host:port", metavar="URL"),
    Option("cluster-id", "cluster id of the presence and control topics", default="local"),
    Option("control-topic", "control topic (default sim/{cluster}/control/{Service})", metavar="TOPIC"),
]


async def serve(*, service: str, instance: str, broker: str, cluster: str, control: str | None = None) -> None:
    """Serve one instance until SIGTERM/SIGINT; prints ``sample_platform: ready …`` once online."""
    behaviour = Behaviour()
    # The bus is built here (not by ServiceRuntime.connect) because OrderManagement's client
    # shares it, and the client must exist before the service is built.
    bus = MqttBus(config=MqttConfig.from_url(broker), client_id=f"{service}-{instance}"[:64],
                  will=presence_will(cluster, service, instance))
    # Session id = client id: with broker ACLs a client reads its own session's answers only.
    client = ServiceClient(bus, session_id=bus.client_id) if service == "OrderManagement" else None
    runtime = ServiceRuntime(build_service(service, behaviour, client=client), bus=bus, cluster=cluster,
                             instance=instance, owns_bus=True)

    def on_control(msg: Message) -> None:
        if not msg.payload:
            return  # a cleared retained control message
        try:
            behaviour.set(FaultMode.from_wire(msg.payload))
        except (ValueError, orjson.JSONDecodeError) as exc:
            logger.warning("%s/%s: control message ignored: %s", service, instance, exc)
            return
        logger.warning("%s/%s: mode now %s", service, instance, behaviour.mode.to_wire())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    await runtime.bus.subscribe(control or control_topic(cluster, service), on_control, qos=1)
    if client is not None:
        await client.start()
    print(f"sample_platform: ready {service} {instance}", flush=True)
    await stop.wait()
    await runtime.stop(grace=1.0)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = resolve(OPTIONS, argv, prog=PROG, description=__doc__ or "")
        if not opts["broker"]:
            raise OptionError("--broker is required (an MQTT URL such as mqtt://127.0.0.1:1883)")
        if opts["service"] not in SERVICES:
            raise OptionError(f"--service {opts['service']!r}: one of {', '.join(SERVICES)}")
        check_segment(opts["instance"], field="--instance")
        check_segment(opts["cluster_id"], field="--cluster-id", max_len=63)
    except (OptionError, ValueError) as exc:
        fail(PROG, str(exc))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tracing.configure_tracing(opts["service"])  # spans over OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    asyncio.run(serve(service=opts["service"], instance=opts["instance"], broker=opts["broker"],
                      cluster=opts["cluster_id"], control=opts["control_topic"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
