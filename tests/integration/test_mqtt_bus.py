"""MqttBus against the real mosquitto (session broker; a private one for the restart test), plus
the pure parts it relies on: URL config and topic matching."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.mqtt.bus import (
    LastWill,
    Message,
    MqttBus,
    MqttConfig,
    MqttConfigError,
    MqttTimeout,
    MqttTopicError,
)
from adapters.mqtt.topics import TopicMatcher, topic_matches
from adapters.runtime.processes import Mosquitto, free_port
from tests.support.broker import HARNESS, child_login
from tests.support.mqtt import Collector, running_bus, unique_prefix, wait_until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


# -- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("http://h:1883", "scheme"),
        ("h:1883", "scheme"),
        ("mqtt://h:99999", "port"),
        ("mqtt://h:abc", "port"),
        ("mqtt://h:0", "port"),
        ("mqtt://:1883", "host"),
        ("mqtt://h:1883/x", "path"),
        ("mqtt://h:1883?tls=1", "query"),
    ],
)
def test_bad_url_raises_config_error_naming_the_part(url: str, names: str) -> None:
    """Each malformed URL raises MqttConfigError whose message names the bad part."""
    with pytest.raises(MqttConfigError, match=names):
        MqttConfig.from_url(url, env={})


def test_url_defaults_credentials_env_and_overrides() -> None:
    """Default ports per scheme; URL credentials beat env ones; env fills gaps; overrides win; repr hides the password."""
    env = {"SFA_OPS_MQTT_USERNAME": "envuser", "SFA_OPS_MQTT_PASSWORD": "envpw",
           "SFA_OPS_MQTT_CA_FILE": "/ca.pem", "SFA_OPS_MQTT_TLS_INSECURE": "yes"}
    plain = MqttConfig.from_url("mqtt://broker", env=env)
    assert (plain.port, plain.tls, plain.username, plain.password, plain.ca_file) == (1883, False, "envuser", "envpw", None)
    tls = MqttConfig.from_url("mqtts://u%40x:p%3Aw@broker", env=env, keepalive_s=5)
    assert (tls.port, tls.tls, tls.username, tls.password) == (8883, True, "u@x", "p:w")
    assert (tls.ca_file, tls.tls_insecure, tls.keepalive_s) == ("/ca.pem", True, 5)
    assert "p:w" not in repr(tls) and "p:w" not in tls.redacted_url


@pytest.mark.parametrize(
    ("url", "env", "overrides", "names"),
    [
        ("mqtt://h", {}, {"nope": 1}, "nope"),
        ("mqtt://h", {}, {"ca_file": "/ca.pem"}, "ca_file"),
        ("mqtts://h", {}, {"key_file": "/k.pem"}, "key_file"),
        ("mqtts://h", {"SFA_OPS_MQTT_TLS_INSECURE": "maybe"}, {}, "TLS_INSECURE"),
        ("mqtt://h", {}, {"reconnect_min_s": 0}, "reconnect"),
        ("mqtts://h", {}, {"ca_file": "/does/not/exist.pem"}, "TLS files"),
    ],
)
def test_bad_options_raise_config_error(url: str, env: dict[str, str], overrides: dict[str, object], names: str) -> None:
    """Unknown keys, TLS files on plain mqtt://, a key without a cert, bad booleans, bad backoff and unreadable CA files are refused by name."""
    with pytest.raises(MqttConfigError, match=names):
        MqttConfig.from_url(url, env=env, **overrides).ssl_context()


# -- topic matching -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flt", "topic", "expected"),
    [
        ("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False), ("a/#", "a", True),
        ("a/#", "a/b/c", True), ("+/+", "a/", True), ("+", "$SYS", False), ("#", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True), ("a/+/c", "a//c", True), ("a/b", "a/b/", False),
    ],
)
def test_topic_matches_table(flt: str, topic: str, expected: bool) -> None:
    """MQTT 5 matching rules, including parent match of '#', empty levels and $-topics."""
    assert topic_matches(flt, topic) is expected


def _reference(flt: str, topic: str) -> bool:
    if topic.startswith("$") and flt[:1] in ("+", "#"):
        return False
    pattern = "/".join("[^/]*" if lv == "+" else ".*" if lv == "#" else re.escape(lv) for lv in flt.split("/"))
    pattern = pattern.replace("/.*", "(/.*)?") if flt.endswith("#") and flt != "#" else pattern
    return re.fullmatch(pattern, topic) is not None


_levels = st.sampled_from(["a", "b", "", "$s"])


@given(st.lists(st.sampled_from(["a", "b", "", "+"]), min_size=1, max_size=4), st.booleans(),
       st.lists(_levels, min_size=1, max_size=5))
def test_topic_matches_agrees_with_regex_reference(levels: list[str], hash_tail: bool, topic: list[str]) -> None:
    """topic_matches and the cached TopicMatcher agree with an independent regex translation of the filter."""
    flt = "/".join([*levels, "#"] if hash_tail else levels)
    t = "/".join(topic)
    assert topic_matches(flt, t) == _reference(flt, t)
    assert (TopicMatcher([(flt, ["h"])]).match(t) == ("h",)) == _reference(flt, t)


# -- bus against the broker ---------------------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1])
async def test_roundtrip(broker_url: str, qos: int) -> None:
    """A dict published at QoS 0/1 arrives once as JSON bytes with its topic and QoS."""
    pre = unique_prefix("roundtrip")
    async with running_bus(broker_url) as bus:
        got = Collector()
        await bus.subscribe(f"{pre}/x", got, qos=qos)
        await bus.publish(f"{pre}/x", {"n": 1}, qos=qos)
        [msg] = await got.wait_for(1)
        await got.assert_quiet(0.1)
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == (f"{pre}/x", b'{"n":1}', qos, False)
    assert bus.stats()["published"] == 1


async def test_retained_message_reaches_late_subscriber(broker_url: str) -> None:
    """A retained message published before anyone subscribed is delivered to a later subscriber, flagged retained."""
    pre = unique_prefix("retained")
    async with running_bus(broker_url) as pub:
        await pub.publish(f"{pre}/state", "on", qos=1, retain=True)
        await pub.flush(5)
        async with running_bus(broker_url) as late:
            got = Collector()
            await late.subscribe(f"{pre}/#", got)
            [msg] = await got.wait_for(1)
        await pub.publish(f"{pre}/state", b"", qos=1, retain=True)  # clear it
    assert (msg.payload, msg.retain) == (b"on", True)


@pytest.mark.parametrize("use_ids", [True, False])
async def test_wildcard_dispatch(broker_url: str, use_ids: bool) -> None:
    """'+' and '#' filters route each message to exactly the matching handlers, with and without subscription ids."""
    pre = unique_prefix("wild")
    plus, hash_, exact = Collector(), Collector(), Collector()
    async with running_bus(broker_url, config={"use_subscription_ids": use_ids}) as bus:
        await bus.subscribe(f"{pre}/a/+/temp", plus)
        await bus.subscribe(f"{pre}/b/#", hash_)
        await bus.subscribe(f"{pre}/c", exact)
        for t in ("a/x/temp", "a/x/y/temp", "a/temp", "b", "b/c/d", "c", "c/d", "d"):
            await bus.publish(f"{pre}/{t}", t, qos=1)
        await hash_.wait_for(2)
        await plus.wait_for(1)
        await exact.wait_for(1)
        await exact.assert_quiet(0.1)  # grace for a copy routed to a handler whose filter does not match
    assert plus.payloads == [b"a/x/temp"]
    assert hash_.payloads == [b"b", b"b/c/d"]
    assert exact.payloads == [b"c"]


async def test_overlapping_filters_each_handler_once(broker_url: str) -> None:
    """With overlapping filters (the broker sends one copy per subscription) each handler still sees a message once."""
    pre = unique_prefix("overlap")
    everything, level1 = Collector(), Collector()
    async with running_bus(broker_url) as bus:
        await bus.subscribe(f"{pre}/#", everything)
        await bus.subscribe(f"{pre}/+", level1)
        await bus.publish(f"{pre}/x", b"1", qos=1)
        await everything.wait_for(1)
        await level1.wait_for(1)
        await level1.assert_quiet(0.1)  # grace for the second copy (one per subscription) reaching a handler twice
    assert everything.payloads == [b"1"] and level1.payloads == [b"1"]


async def test_shared_subscription_splits_messages(broker_url: str) -> None:
    """Two buses in one shared group together get every message exactly once, and both get some."""
    pre = unique_prefix("shared")
    group = pre.rsplit("/", 1)[1]
    a, b = Collector(), Collector()
    async with running_bus(broker_url) as bus_a, running_bus(broker_url) as bus_b, running_bus(broker_url) as pub:
        await bus_a.subscribe(f"{pre}/+", a, shared_group=group)
        await bus_b.subscribe(f"{pre}/+", b, shared_group=group)
        for i in range(60):
            await pub.publish(f"{pre}/m", str(i), qos=1)
        await wait_until(lambda: len(a.messages) + len(b.messages) >= 60)
        await a.assert_quiet(0.1)  # grace for a message delivered to both members
    got_a, got_b = set(a.payloads), set(b.payloads)
    assert len(a.payloads) + len(b.payloads) == 60
    assert got_a | got_b == {str(i).encode() for i in range(60)} and not got_a & got_b
    assert got_a and got_b
    assert all(m.topic == f"{pre}/m" for m in a.messages + b.messages)


_WILL_CHILD = """
import asyncio, sys
from adapters.mqtt.bus import LastWill, MqttBus, MqttConfig
async def main():
    bus = MqttBus(config=MqttConfig.from_url(sys.argv[1]),  # the login from the environment
                  will=LastWill(sys.argv[2], {"status": "offline"}, qos=1))
    await bus.start()
    await bus.wait_connected(5)
    print("ready", flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_last_will_delivered_when_process_killed(broker_url: str) -> None:
    """SIGKILL of a process holding a bus makes the broker publish its Last Will within a second."""
    pre = unique_prefix("will")
    async with running_bus(broker_url) as watcher:
        got = Collector()
        await watcher.subscribe(f"{pre}/presence", got)
        url, login = child_login(broker_url, HARNESS)  # password via env, not argv
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WILL_CHILD, url, f"{pre}/presence", cwd=REPO,
            stdout=asyncio.subprocess.PIPE, env={**os.environ, **login})
        try:
            assert proc.stdout is not None
            assert await asyncio.wait_for(proc.stdout.readline(), 15) == b"ready\n"
            await got.assert_quiet(0.1)
            proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            [msg] = await got.wait_for(1, timeout=5)
            latency = time.monotonic() - killed
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    assert msg.payload == b'{"status":"offline"}'
    assert latency < 1.0


async def test_clean_stop_sends_no_last_will(broker_url: str) -> None:
    """stop() disconnects cleanly, so the broker discards the Last Will."""
    pre = unique_prefix("nowill")
    async with running_bus(broker_url) as watcher:
        got = Collector()
        await watcher.subscribe(f"{pre}/presence", got)
        async with running_bus(broker_url, will=LastWill(f"{pre}/presence", "offline")):
            pass
        await got.assert_quiet(0.3)


async def test_mqtt5_properties_roundtrip(broker_url: str) -> None:
    """Response topic, correlation data and user properties set on publish arrive on the Message."""
    pre = unique_prefix("props")
    async with running_bus(broker_url) as bus:
        got = Collector()
        await bus.subscribe(f"{pre}/call", got)
        await bus.publish(f"{pre}/call", b"{}", qos=1, response_topic=f"{pre}/reply", correlation_data=b"\x00id-1",
                          user_properties={"traceId": "t1", "tenant": "x"})
        await bus.publish(f"{pre}/call", b"{}", qos=1)
        first, second = await got.wait_for(2)
    assert first.response_topic == f"{pre}/reply"
    assert first.correlation_data == b"\x00id-1"
    assert dict(first.user_properties) == {"traceId": "t1", "tenant": "x"}
    assert (second.response_topic, second.correlation_data, second.user_properties) == (None, None, ())


async def test_oversized_payload_dropped_and_counted(broker_url: str) -> None:
    """A payload over max_payload_bytes never reaches a handler and is counted; a normal one passes."""
    pre = unique_prefix("big")
    async with running_bus(broker_url, max_payload_bytes=1024) as bus:
        got = Collector()
        await bus.subscribe(f"{pre}/x", got)
        await bus.publish(f"{pre}/x", b"x" * 1025, qos=1)
        await bus.publish(f"{pre}/x", b"small", qos=1)
        await got.wait_for(1)
        await got.assert_quiet(0.1)
        stats = bus.stats()
    assert got.payloads == [b"small"]
    assert (stats["received"], stats["oversized"], stats["dispatched"]) == (2, 1, 1)


async def test_handler_exception_counted_and_dispatch_continues(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising handler is logged with its traceback and counted; later messages and other handlers still run."""
    pre = unique_prefix("boom")
    seen: list[bytes] = []

    async def fragile(msg: Message) -> None:
        if msg.payload == b"boom":
            raise RuntimeError("handler bug")
        seen.append(msg.payload)

    caplog.set_level(logging.ERROR, logger="sfa_ops.mqtt")
    async with running_bus(broker_url) as bus:
        other = Collector()
        await bus.subscribe(f"{pre}/x", fragile)
        await bus.subscribe(f"{pre}/#", other)
        for p in (b"1", b"boom", b"2"):
            await bus.publish(f"{pre}/x", p, qos=1)
        await other.wait_for(3)
        await wait_until(lambda: len(seen) == 2)
        stats = bus.stats()
    assert seen == [b"1", b"2"] and other.payloads == [b"1", b"boom", b"2"]
    assert stats["handler_errors"] == 1
    assert any(r.exc_info and "handler bug" in str(r.exc_info[1]) for r in caplog.records)


async def test_incoming_queue_overflow_counted(broker_url: str) -> None:
    """With a tiny incoming queue and a slow handler, overflow is counted and every delivery is accounted for."""
    pre = unique_prefix("overflow")
    handled: list[bytes] = []

    async def slow(msg: Message) -> None:
        await asyncio.sleep(0.02)
        handled.append(msg.payload)

    async with running_bus(broker_url, incoming_queue_size=3) as bus, running_bus(broker_url) as pub:
        await bus.subscribe(f"{pre}/x", slow, qos=0)
        for i in range(40):
            pub.publish_nowait(f"{pre}/x", str(i), qos=0)
        await pub.flush(5)
        s = bus.stats
        await wait_until(lambda: s()["received"] == 40 and s()["dispatched"] + s()["incoming_dropped"] == 40)
        await wait_until(lambda: len(handled) == s()["dispatched"])
    assert s()["incoming_dropped"] > 0
    assert handled == sorted(handled, key=int)  # sequential, in arrival order


async def test_broker_down_publish_queues_qos1_drops_qos0_and_never_blocks() -> None:
    """With no broker: publish returns at once; QoS 1 waits in the queue, QoS 0 and queue overflow are counted as dropped."""
    bus = MqttBus(config=MqttConfig.from_url(f"mqtt://127.0.0.1:{free_port()}", env={}), outgoing_queue_size=2)
    async with bus:
        with pytest.raises(MqttTimeout):
            await bus.wait_connected(0.2)
        await asyncio.wait_for(bus.publish("t/x", b"p", qos=0), 0.5)
        assert (bus.stats()["publish_dropped"], bus.stats()["outgoing_pending"]) == (1, 0)
        for _ in range(3):
            await asyncio.wait_for(bus.publish("t/x", b"p", qos=1), 0.5)
        with pytest.raises(MqttTimeout):
            await bus.flush(0.1)
        with pytest.raises(MqttTopicError):
            await bus.publish("t/+", b"p")
        stats = bus.stats()
    assert (stats["publish_queued"], stats["publish_dropped"], stats["outgoing_pending"]) == (2, 2, 2)
    assert bus.stats()["publish_dropped"] == 4  # the two still queued at stop are counted too


async def test_broker_restart_mid_traffic_loses_nothing_published_after_the_kill() -> None:
    """Broker SIGKILLed and restarted under continuous QoS-1 traffic.

    Proves: (1) the publisher drops nothing (publish_dropped == 0), queues while down
    (publish_queued > 0) and gets every message acknowledged (published == all sent) after one
    reconnect; (2) the subscriber reconnects and resubscribes by itself; (3) every message whose
    publish() was called after the broker died reaches the subscriber. (3) relies on the subscriber
    being resubscribed before the publisher reconnects (the publisher's backoff is longer); the test
    checks that ordering instead of assuming it. Messages the broker had acknowledged but not yet
    delivered when it died are lost (no broker persistence) and are not claimed; duplicates are
    allowed (at least once).
    """
    pre = unique_prefix("restart")
    broker = Mosquitto()
    svc = broker.start()
    try:
        async with running_bus(svc.url, config={"reconnect_min_s": 0.02, "reconnect_max_s": 0.1}) as sub, \
                running_bus(svc.url, config={"reconnect_min_s": 1.5, "reconnect_max_s": 3.0}) as pub:
            got = Collector()
            await sub.subscribe(f"{pre}/seq", got, qos=1)
            sent = 0
            running = True

            async def produce() -> None:
                nonlocal sent
                while running:
                    await pub.publish(f"{pre}/seq", str(sent), qos=1)
                    sent += 1
                    await asyncio.sleep(0.001)

            producer = asyncio.create_task(produce())
            await got.wait_for(100)
            svc.kill()
            first_after_kill = sent
            await wait_until(lambda: not sub.connected)
            await asyncio.sleep(0.3)  # the producer keeps publishing while the broker is down
            svc = await asyncio.to_thread(broker.restart)
            await wait_until(lambda: sub.connected, timeout=10)
            pub_was_connected = pub.connected
            await pub.wait_connected(10)
            await asyncio.sleep(0.3)  # and for a while after it is back
            running = False
            await producer
            await pub.flush(10)
            expected = {str(i).encode() for i in range(first_after_kill, sent)}
            await wait_until(lambda: expected <= set(got.payloads), timeout=10)
            p, s = pub.stats(), sub.stats()
    finally:
        svc.stop()
    assert not pub_was_connected, "publisher reconnected before the subscriber resubscribed"
    assert (p["publish_dropped"], p["reconnects"], p["published"]) == (0, 1, sent)
    assert p["publish_queued"] > 0
    assert (s["reconnects"], s["incoming_dropped"]) == (1, 0)
    assert sent - first_after_kill > 100
