"""What crosses :class:`~adapters.mqtt.bus.MqttBus`: received :class:`Message`, the :class:`LastWill`,
payload encoding, handler type, and the bus's own errors (see ``adapters.mqtt.bus`` for the tree)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as paho

from adapters.mqtt.config import MqttBusError

Payload = bytes | str | dict[str, Any] | list[Any]


class MqttSubscribeError(MqttBusError):
    """The broker refused (or could not confirm) a subscription."""


class MqttTimeout(MqttBusError, TimeoutError):
    """``wait_connected`` or ``flush`` did not finish within its timeout."""


class MqttBusClosed(MqttBusError):
    """The bus was stopped; it cannot publish or subscribe any more."""


@dataclass(frozen=True, slots=True)
class Message:
    """A received message; MQTT 5 properties are filled in when the publisher set them."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class LastWill:
    """What the broker publishes for us when our connection dies without a clean DISCONNECT."""

    topic: str
    payload: Payload
    qos: int = 1
    retain: bool = False


Handler = Callable[[Message], Awaitable[None] | None]


def encode_payload(payload: Payload) -> bytes:
    """bytes as they are, str as UTF-8, dict/list as JSON (orjson)."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, dict | list):
        return orjson.dumps(payload)
    raise TypeError(f"MQTT payload must be bytes, str, dict or list, not {type(payload).__name__}")



def to_message(pm: paho.MQTTMessage) -> tuple[Message, list[int] | None]:
    """A paho message as a :class:`Message`, and the subscription identifiers the broker named."""
    payload = pm.payload if isinstance(pm.payload, bytes) else bytes(pm.payload)
    props = pm.properties
    if props is None:
        return Message(pm.topic, payload, pm.qos, bool(pm.retain)), None
    user = getattr(props, "UserProperty", None)
    msg = Message(
        pm.topic, payload, pm.qos, bool(pm.retain),
        getattr(props, "ResponseTopic", None),
        getattr(props, "CorrelationData", None),
        tuple(user) if user else (),
    )
    return msg, getattr(props, "SubscriptionIdentifier", None)



__all__ = ["Handler", "LastWill", "Message", "MqttBusClosed", "MqttSubscribeError", "MqttTimeout", "Payload",
           "encode_payload", "to_message"]
