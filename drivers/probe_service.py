"""A minimal platform service instance in its own process, for tests and benchmarks that crash it
(SIGKILL → Last Will).

``python -m drivers.probe_service --broker URL --cluster C --service NAME --instance I``

Methods: ``ok`` answers at once; ``fail`` raises an unexpected exception (-32603); ``invalid``
raises a ValidationError (-32001); ``hang`` never answers (sleeps for an hour); ``call`` calls
another service (``params.service``) with the same correlationId, then answers.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from adapters.mqtt.bus import MqttBus, MqttConfig
from sdk import CallContext, Service, ServiceClient, ServiceRuntime, ValidationError


def build(name: str, client: ServiceClient | None) -> Service:
    svc = Service(name)

    @svc.function("ok")
    async def ok(ctx: CallContext) -> dict[str, Any]:
        return {"ok": True, "service": name}

    @svc.function("fail")
    async def fail() -> None:
        raise RuntimeError("database password=hunter2 exploded")  # must never reach the caller

    @svc.function("invalid")
    async def invalid() -> None:
        raise ValidationError("bad input")

    @svc.function("hang", timeout=3600)
    async def hang() -> None:
        await asyncio.sleep(3600)

    @svc.function("call")
    async def call(service: str, ctx: CallContext) -> Any:
        assert client is not None
        return await client.call(service, "ok", {}, timeout=5, correlation_id=ctx.correlation_id)

    return svc


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--broker", required=True)
    p.add_argument("--cluster", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--instance", required=True)
    a = p.parse_args()
    bus = MqttBus(config=MqttConfig.from_url(a.broker))
    await bus.start()
    # Session id = client id: a broker with ACLs lets a client read its own session's answers only.
    client = ServiceClient(bus, session_id=bus.client_id)
    await client.start()
    runtime = ServiceRuntime.connect(build(a.service, client), broker_url=a.broker, cluster=a.cluster,
                                     instance=a.instance)
    async with runtime:
        print("ready", flush=True)
        await runtime.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
