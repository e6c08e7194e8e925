"""The pieces under :class:`adapters.mqtt.bus.MqttBus`'s publish path: the aiomqtt client subclass that
learns the broker's limits and PUBACK reason codes, the :class:`Delivery` a publish returns, the
size of a PUBLISH packet, and the :class:`DeadLetter` kept for a message the bus gave up on.

A :class:`Delivery` is how a caller learns whether the broker took a message: it stays pending
while the message is queued or in flight, then becomes ``acked`` (QoS 1/2: the broker's PUBACK
/PUBCOMP with a success code; QoS 0: written to the connection) or one of the loss outcomes
(``dropped:…``, ``oversized``, ``refused:…``, ``abandoned``). Only an acked delivery may be
recorded as published (an outbox row, for instance).

Received PUBLISH properties are read by :class:`ReceivedProperties` (installed in paho's packet
decoder by :func:`install_received_properties`): the same attributes paho's ``Properties`` would
hold, without its per-object table building and per-character scans.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers, readInt16, writeBytes, writeUTF
from paho.mqtt.reasoncodes import ReasonCode

__all__ = [
    "BusClient", "DeadLetter", "Delivery", "PublishProperties", "ReceivedProperties", "install_received_properties",
    "publish_packet_size",
]

PENDING = "pending"
ACKED = "acked"


class Delivery:
    """What became of one publish; see the module docstring. Cheap: no future unless awaited."""

    __slots__ = ("_event", "outcome")

    def __init__(self, outcome: str = PENDING) -> None:
        self.outcome = outcome
        self._event: asyncio.Event | None = None

    @property
    def done(self) -> bool:
        return self.outcome != PENDING

    @property
    def acked(self) -> bool:
        """True once the broker acknowledged the message."""
        return self.outcome == ACKED

    def settle(self, outcome: str) -> None:
        """Set the final outcome (the first one wins)."""
        if self.outcome != PENDING:
            return
        self.outcome = outcome
        if self._event is not None:
            self._event.set()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until settled (or ``timeout`` s passed); returns :attr:`acked`."""
        if self.outcome == PENDING:
            if self._event is None:
                self._event = asyncio.Event()
            try:
                await asyncio.wait_for(self._event.wait(), timeout)
            except TimeoutError:
                return False
        return self.acked

    def __repr__(self) -> str:
        return f"Delivery({self.outcome})"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the bus gave up on. Kept without its payload (it may hold anything)."""

    topic: str
    size: int  # bytes of the PUBLISH packet
    qos: int
    retain: bool
    reason: str  # oversized | refused:<reason code> | abandoned
    detail: str
    at: float  # time.time()


def _varint_len(n: int) -> int:
    size = 1
    while n >= 128:
        n >>= 7
        size += 1
    return size


class PublishProperties(Properties):
    """PUBLISH properties (Response Topic, Correlation Data, User Properties) packed once, byte for
    byte as paho's ``Properties.pack`` packs them (tested), with paho's own encoders. Paho's generic
    ``Properties`` rebuilds its name tables per object and scans them per attribute and per
    ``pack()`` (done twice a message: size check, send): tens of µs a message, which every call
    carrying a ``traceparent`` would pay. The attributes stay readable as on ``Properties``."""

    def __init__(self, response_topic: str | None = None, correlation_data: bytes | None = None,
                 user_properties: Mapping[str, str] | Sequence[tuple[str, str]] | None = None) -> None:
        attrs = self.__dict__  # paho's __setattr__ is what is slow: bypassed
        attrs["packetType"] = PacketTypes.PUBLISH
        buf = b""
        if response_topic is not None:
            attrs["ResponseTopic"] = response_topic
            buf += b"\x08" + writeUTF(response_topic)
        if correlation_data is not None:
            attrs["CorrelationData"] = correlation_data
            buf += b"\x09" + writeBytes(correlation_data)
        if user_properties:
            items = user_properties.items() if isinstance(user_properties, Mapping) else user_properties
            pairs = [(str(k), str(v)) for k, v in items]
            attrs["UserProperty"] = pairs
            for k, v in pairs:
                buf += b"\x26" + writeUTF(k) + writeUTF(v)
        attrs["_packed"] = bytes(VariableByteIntegers.encode(len(buf)) + buf)

    def pack(self) -> bytes:
        packed: bytes = self.__dict__["_packed"]
        return packed

    def __str__(self) -> str:
        return str({k: v for k, v in self.__dict__.items() if k in ("ResponseTopic", "CorrelationData",
                                                                     "UserProperty")})


_TEMPLATE = Properties(PacketTypes.PUBLISH)
_RESPONSE_TOPIC, _CORRELATION_DATA, _SUBSCRIPTION_ID, _USER_PROPERTY = 0x08, 0x09, 0x0B, 0x26
_NOT_IN_MQTT_STRINGS = ("\x00", "\ufeff")  # paho refuses them (surrogates cannot be decoded at all)


class ReceivedProperties(Properties):
    """The properties of a received packet, as paho's ``Properties`` reads them; a PUBLISH is
    read fast when it holds only Response Topic, Correlation Data, Subscription Identifiers and
    User Properties (what MQTT 5 request/response and W3C trace context use).

    Paho builds its name tables anew for every object and, per property, scans them twice and
    looks at each character of each string in Python: ~14 µs for a PUBLISH without properties,
    ~30 µs with a ``traceparent``, paid for every message received. Here the tables are the
    class's (shared, read-only) and a string is checked with two ``in`` tests. Anything else
    (other property kinds, other packet types, a duplicate, a value paho would refuse, a
    truncated packet) is handed to paho's own code, which decides, and raises, as before."""

    names = _TEMPLATE.names
    types = _TEMPLATE.types
    properties = _TEMPLATE.properties

    def __init__(self, packetType: int) -> None:  # paho's parameter name
        if packetType == PacketTypes.PUBLISH:
            self.__dict__["packetType"] = packetType
        else:
            super().__init__(packetType)

    def unpack(self, buffer: bytes | bytearray) -> tuple[Properties, int]:
        if self.packetType == PacketTypes.PUBLISH:
            try:
                used = self._unpack_publish(buffer)
            except Exception:  # paho decides below, with its own errors
                used = None
            if used is not None:
                return self, used
        return super().unpack(buffer)

    def _unpack_publish(self, buffer: bytes | bytearray) -> int | None:
        """Fills the attributes and returns the bytes used, or ``None`` (leaving none set) when
        paho's reader must decide."""
        length, start = VariableByteIntegers.decode(buffer)
        end = start + length
        if end > len(buffer):
            return None
        found: dict[str, Any] = {}
        i = start
        while i < end:
            ident = buffer[i]
            i += 1
            if ident == _USER_PROPERTY:
                klen = readInt16(buffer[i:i + 2])
                key = bytes(buffer[i + 2:i + 2 + klen]).decode()
                i += 2 + klen
                vlen = readInt16(buffer[i:i + 2])
                value = bytes(buffer[i + 2:i + 2 + vlen]).decode()
                i += 2 + vlen
                if any(c in key or c in value for c in _NOT_IN_MQTT_STRINGS):
                    return None
                found.setdefault("UserProperty", []).append((key, value))
            elif ident == _RESPONSE_TOPIC and "ResponseTopic" not in found:
                tlen = readInt16(buffer[i:i + 2])
                topic = bytes(buffer[i + 2:i + 2 + tlen]).decode()
                i += 2 + tlen
                if any(c in topic for c in _NOT_IN_MQTT_STRINGS):
                    return None
                found["ResponseTopic"] = topic
            elif ident == _CORRELATION_DATA and "CorrelationData" not in found:
                clen = readInt16(buffer[i:i + 2])
                found["CorrelationData"] = bytes(buffer[i + 2:i + 2 + clen])
                i += 2 + clen
            elif ident == _SUBSCRIPTION_ID:
                sub_id, used = VariableByteIntegers.decode(buffer[i:end])
                if not 1 <= sub_id <= 268435455:
                    return None
                i += used
                found.setdefault("SubscriptionIdentifier", []).append(sub_id)
            else:
                return None
            if i > end:
                return None
        self.__dict__.update(found)
        return end


def install_received_properties() -> None:
    """Make paho's packet decoder build :class:`ReceivedProperties` (idempotent; every paho
    client of the process reads its packets through it)."""
    if _packet.Properties is Properties:
        _packet.Properties = ReceivedProperties  # type: ignore[misc]


def publish_packet_size(topic: str, payload: bytes, qos: int, properties: Properties | None) -> int:
    """Bytes of the MQTT 5 PUBLISH packet for this message (what Maximum Packet Size limits)."""
    props_len = len(properties.pack()) if properties is not None else 1
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + props_len + len(payload)
    return 1 + _varint_len(remaining) + remaining


class BusClient(aiomqtt.Client):
    """aiomqtt.Client that hands each received paho message straight to the bus, remembers the
    broker's Maximum Packet Size from CONNACK and reports PUBACK reason codes.

    Why: aiomqtt's ``messages`` iterator creates a task and an ``asyncio.wait`` per message, which
    is most of its per-message cost, and its ``publish`` drops the PUBACK reason code (a broker
    refusing a message looks like success). paho calls these hooks on the event loop thread;
    aiomqtt 2.x (pinned in uv.lock) has kept them stable. test_mqtt_bus.py fails loudly if an
    upgrade breaks this.

    It also closes a hole in aiomqtt's ``__aenter__``: a disconnect that arrives together with the
    CONNACK (a broker kicking us at once, e.g. another client taking over our client id) is
    forgotten there, leaving a connection that looks up but is dead; here it fails the connect.
    """

    def __init__(self, *, sink: Callable[[paho.MQTTMessage], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        install_received_properties()
        self._bus_sink = sink
        self._bus_acks: dict[int, asyncio.Future[int]] = {}
        self.max_packet_size: int | None = None  # from CONNACK; None: the broker named no limit
        self.session_present = False  # from CONNACK: the broker resumed our session
        self.end_session = False  # set before leaving the context: DISCONNECT with Session Expiry 0
        self._bus_lost = False

    async def __aenter__(self) -> BusClient:
        self._bus_lost = False
        await super().__aenter__()
        if self._bus_lost:
            with contextlib.suppress(Exception):
                await self.__aexit__(None, None, None)
            raise aiomqtt.MqttError("the broker closed the connection right after its CONNACK")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if not self.end_session:
            await super().__aexit__(*exc)
            return
        # aiomqtt's __aexit__ sends a bare DISCONNECT: the session would outlive a clean stop. Send
        # it with Session Expiry Interval 0 instead (MQTT 5: allowed when CONNECT set a non-zero one).
        paho_client = self._client
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        original = paho_client.disconnect
        paho_client.disconnect = lambda *a, **k: original(properties=props)  # type: ignore[method-assign]
        try:
            await super().__aexit__(*exc)
        finally:
            paho_client.disconnect = original  # type: ignore[method-assign]

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                       properties: Properties | None = None) -> None:
        self._bus_lost = True
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._bus_sink(message)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                    properties: Properties | None = None) -> None:
        limit = getattr(properties, "MaximumPacketSize", None) if properties is not None else None
        self.max_packet_size = int(limit) if isinstance(limit, int) and limit > 0 else None
        self.session_present = bool(getattr(flags, "session_present", False))
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                    properties: Properties) -> None:
        fut = self._bus_acks.pop(mid, None)
        if fut is None:
            super()._on_publish(client, userdata, mid, reason_code, properties)
        elif not fut.done():
            fut.set_result(reason_code.value if isinstance(reason_code, ReasonCode) else int(reason_code))

    async def publish_acked(self, topic: str, payload: bytes, qos: int, retain: bool,
                            properties: Properties | None) -> tuple[int, str]:
        """Publish and wait for the broker's acknowledgement (QoS ≥ 1) within the client's timeout.

        Returns the PUBACK reason code and its name (0 for QoS 0 and for success). Connection
        problems raise ``aiomqtt.MqttError``; a message paho refuses raises ValueError/TypeError.
        """
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        if qos == 0 or info.is_published():
            return 0, "Success"
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._bus_acks[info.mid] = fut
        try:
            code = await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise aiomqtt.MqttError("PUBACK timed out") from None
        finally:
            self._bus_acks.pop(info.mid, None)
        return code, _reason_name(code)


def _reason_name(code: int) -> str:
    if code == 0:
        return "Success"
    try:
        from paho.mqtt.packettypes import PacketTypes

        return str(ReasonCode(PacketTypes.PUBACK, identifier=code))
    except Exception:
        return f"reason code {code}"
