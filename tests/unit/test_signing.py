"""Signed system messages: the Signer's envelope and SystemTrust's verdicts (real Ed25519 keys)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.mqtt.bus import Message
from adapters.mqtt.signing import Signer, SigningKeyError, ensure_key_pair, load_public_key, public_key_path
from protocol.signing import KEY_ID_PROPERTY, SIGNATURE_PROPERTY
from protocol.system import BreakerState
from sdk.trust import SystemTrust

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TOPIC = "system/prod/circuit-breaker/Users"


def state(at: datetime = NOW, retry_after: float = 30.0) -> bytes:
    return BreakerState(service="Users", state="open", since=at, retry_after=retry_after, timestamp=at).to_json()


def signed(signer: Signer, topic: str = TOPIC, payload: bytes | None = None) -> Message:
    body, props = signer.sign(topic, state() if payload is None else payload)
    return Message(topic, body, 1, True, user_properties=tuple(props))


@pytest.fixture
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


@pytest.fixture
def trust(signer: Signer) -> SystemTrust:
    return SystemTrust([signer.public_key()], clock=NOW.timestamp)


def test_signed_message_is_trusted(signer: Signer, trust: SystemTrust) -> None:
    """A message signed by the key, fresh, over its own topic: believed and counted."""
    msg = signed(signer)
    assert dict(msg.user_properties)[KEY_ID_PROPERTY] == signer.key_id
    assert trust.admit(msg) and trust.counts["trusted"] == 1 and trust.refused == 0


@pytest.mark.parametrize(("case", "verdict"), [
    ("unsigned", "unsigned"),
    ("other_key", "unknown_key"),
    ("tampered_payload", "bad_signature"),
    ("moved_topic", "bad_signature"),
    ("garbage_signature", "bad_signature"),
    ("huge_signature", "bad_signature"),
    ("stale", "stale"),
    ("future", "stale"),
    ("undated", "undated"),
    ("not_json", "undated"),
])
def test_untrusted_messages_are_refused_and_counted(signer: Signer, trust: SystemTrust, case: str,
                                                    verdict: str) -> None:
    """Each way a system message can be forged or replayed gets its own refusal count."""
    good = signed(signer)
    props = dict(good.user_properties)
    msg = {
        "unsigned": Message(TOPIC, state(), 1, True),
        "other_key": signed(Signer(Ed25519PrivateKey.generate())),
        "tampered_payload": Message(TOPIC, state(retry_after=1e9), 1, True, user_properties=good.user_properties),
        "moved_topic": Message("system/prod/circuit-breaker/Orders", good.payload, 1, True,
                               user_properties=good.user_properties),
        "garbage_signature": Message(TOPIC, good.payload, 1, True, user_properties=(
            (KEY_ID_PROPERTY, props[KEY_ID_PROPERTY]), (SIGNATURE_PROPERTY, "!!not base64!!"))),
        "huge_signature": Message(TOPIC, good.payload, 1, True, user_properties=(
            (KEY_ID_PROPERTY, props[KEY_ID_PROPERTY]), (SIGNATURE_PROPERTY, "A" * 10_000))),
        "stale": signed(signer, payload=state(at=NOW - timedelta(hours=2))),
        "future": signed(signer, payload=state(at=NOW + timedelta(hours=2))),
        "undated": signed(signer, payload=orjson.dumps({"type": "circuit_breaker_state"})),
        "not_json": signed(signer, payload=b"\xff\x00"),
    }[case]
    assert not trust.admit(msg)
    assert trust.counts[verdict] == 1 and trust.refused == 1 and trust.counts["trusted"] == 0


def test_presence_and_non_system_topics_are_exempt(trust: SystemTrust) -> None:
    """Instances write presence (the broker ACL guards it); topics outside system/ are not checked."""
    assert trust.admit(Message("system/prod/presence/Users/i1", b'{"status":"online"}'))
    assert trust.admit(Message("session/s1/response", b"{}"))
    assert trust.counts["exempt"] == 2 and trust.refused == 0


def test_sign_replaces_an_earlier_envelope(signer: Signer) -> None:
    """Properties the caller set survive; a stale envelope is replaced, not duplicated."""
    _, props = signer.sign(TOPIC, b"{}", {"traceparent": "00-abc", KEY_ID_PROPERTY: "old"})
    assert [k for k, _ in props] == ["traceparent", KEY_ID_PROPERTY, SIGNATURE_PROPERTY]


def test_key_pair_files(tmp_path: Path) -> None:
    """ensure_key_pair writes a 0600 private key and a readable .pub once; reloading keeps the key id."""
    path = tmp_path / "keys" / "signing.key"
    first = ensure_key_pair(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert public_key_path(path).exists()
    again = ensure_key_pair(path)
    assert again.key_id == first.key_id
    trust = SystemTrust.from_files(public_key_path(path))
    assert trust.key_ids == (first.key_id,)
    assert repr(first) == f"Signer(key_id={first.key_id!r})"  # never the key material


def test_bad_key_files_are_refused(tmp_path: Path) -> None:
    """A missing or wrong key file fails with a message naming the file only."""
    with pytest.raises(SigningKeyError, match="cannot read"):
        Signer.from_file(tmp_path / "missing.key")
    junk = tmp_path / "junk.key"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM private key"):
        Signer.from_file(junk)
    with pytest.raises(SigningKeyError):
        load_public_key(junk)
    with pytest.raises(ValueError):
        SystemTrust([])


def test_operate_checks_its_signing_key_before_starting(tmp_path: Path) -> None:
    """operate --signing-key: a missing key stops startup naming the option; a good one passes."""
    from drivers.operate import OPTIONS, validate
    from drivers.options import OptionError, resolve

    def opts(key: Path) -> dict:
        return resolve(OPTIONS, ["--signing-key", str(key), "--store", f"sqlite:///{tmp_path / 'x.db'}"],
                       prog="t", description="d", env={})

    with pytest.raises(OptionError, match=r"--signing-key: signing key .* cannot read"):
        validate(opts(tmp_path / "missing.key"))
    ensure_key_pair(tmp_path / "good.key")
    validate(opts(tmp_path / "good.key"))
