"""A plain MQTT 5 client (paho, its own network thread) for tests that need what the broker
answered: the CONNACK, PUBACK and SUBACK reason codes (``MqttBus`` hides them, by design)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

NOT_AUTHORIZED = 0x87


class PahoProbe:
    """``with PahoProbe(port, user, password, client_id) as c: c.publish(...)``; see the methods."""

    def __init__(self, port: int, username: str | None, password: str | None, client_id: str,
                 timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.messages: list[paho.MQTTMessage] = []
        self._acks: dict[int, Any] = {}
        self._cond = threading.Condition()
        self.connack: ReasonCode | None = None
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        if username is not None:
            c.username_pw_set(username, password)
        c.on_connect = self._on_connect
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c
        c.connect("127.0.0.1", port)
        c.loop_start()
        self._wait(lambda: self.connack is not None, "CONNACK")

    def __enter__(self) -> PahoProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        self.connack = rc
        self._notify()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        self._acks[mid] = rc
        self._notify()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any) -> None:
        self._acks[mid] = rcs
        self._notify()

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.messages.append(msg)
        self._notify()

    def _wait(self, done: Any, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} within {self.timeout}s")
                self._cond.wait(left)

    def publish(self, topic: str, payload: bytes = b"{}", *, retain: bool = False,
                properties: Properties | None = None) -> int:
        """Publish at QoS 1 and return the PUBACK reason code (0x87: not authorized)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        self._wait(lambda: info.mid in self._acks, f"PUBACK for {topic}")
        return int(self._acks.pop(info.mid).value)

    def subscribe(self, topic_filter: str) -> int:
        """Subscribe at QoS 1 and return the SUBACK reason code."""
        _, mid = self.client.subscribe(topic_filter, qos=1)
        assert mid is not None, f"paho did not send SUBSCRIBE {topic_filter}"
        self._wait(lambda: mid in self._acks, f"SUBACK for {topic_filter}")
        return int(self._acks.pop(mid)[0].value)

    def wait_for(self, predicate: Any, what: str = "message") -> list[paho.MQTTMessage]:
        """Wait until ``predicate(messages)`` holds; returns the messages so far."""
        self._wait(lambda: predicate(self.messages), what)
        return list(self.messages)


def assert_login_required(port: int, principal: str) -> None:
    """No credentials, or ``principal`` with a wrong password, get no connection."""
    anon = PahoProbe(port, None, None, f"anon-{os.getpid()}")
    wrong = PahoProbe(port, principal, "not-the-password", f"wrong-{os.getpid()}")
    try:
        assert anon.connack is not None and anon.connack.is_failure
        assert wrong.connack is not None and wrong.connack.is_failure
    finally:
        anon.close()
        wrong.close()
