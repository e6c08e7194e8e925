"""Which system messages an SDK client believes: :class:`SystemTrust` checks the Ed25519 signature
sfa-ops puts on everything it publishes under ``system/`` (envelope: ``protocol.signing``) and the
age of the payload's ``timestamp``. :func:`verified` puts that check in front of a message
handler: the one way every SDK consumer of system topics (``PlatformAwareClient``,
``sdk.enforcement.ActionsEnforcement``) believes what it reads.

::

    trust = SystemTrust.from_files("sfa-ops-signing.key.pub")
    client = PlatformAwareClient(ServiceClient(bus), cluster="prod", trust=trust)
    trust.counts   # {"trusted": …, "unsigned": …, "unknown_key": …, "bad_signature": …, "stale": …, "undated": …}

A message is believed only when it is signed by one of the given keys, over its own topic and
payload, and its ``timestamp`` is at most ``max_age_s`` old (default 15 min, above the breaker's
10 min maximum open timeout: an older retained state no longer matters) and at most
``max_future_s`` ahead of this clock. Presence topics are exempt: service instances write them,
and the broker's ACL (``policies.security.broker_acl``) is what protects them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from adapters.mqtt.bus import Message
from adapters.mqtt.signing import load_public_key, raw_public
from protocol.signing import (
    KEY_ID_PROPERTY,
    SIGNATURE_PROPERTY,
    decode_signature,
    is_signed_topic,
    key_id,
    signed_bytes,
)

logger = logging.getLogger(__name__)

Verdict = Literal["trusted", "exempt", "unsigned", "unknown_key", "bad_signature", "stale", "undated"]
REFUSALS: tuple[Verdict, ...] = ("unsigned", "unknown_key", "bad_signature", "stale", "undated")
DEFAULT_MAX_AGE_S = 900.0
DEFAULT_MAX_FUTURE_S = 60.0


class SystemTrust:
    """Verifies system messages against sfa-ops' public key(s); counts every verdict."""

    def __init__(self, public_keys: Iterable[Ed25519PublicKey], *, max_age_s: float = DEFAULT_MAX_AGE_S,
                 max_future_s: float = DEFAULT_MAX_FUTURE_S, clock: Callable[[], float] = time.time) -> None:
        self._keys = {key_id(raw_public(k)): k for k in public_keys}
        if not self._keys:
            raise ValueError("SystemTrust needs at least one public key")
        self.max_age_s = max_age_s
        self.max_future_s = max_future_s
        self._clock = clock
        self.counts: dict[str, int] = dict.fromkeys(("trusted", "exempt", *REFUSALS), 0)
        self._last_log: dict[str, float] = {}

    @classmethod
    def from_files(cls, *paths: str | Path, **kwargs: float | Callable[[], float]) -> SystemTrust:
        """Keys from PEM files (the ``.pub`` beside sfa-ops' signing key); several during a rotation."""
        return cls([load_public_key(p) for p in paths], **kwargs)  # type: ignore[arg-type]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def check(self, msg: Message) -> Verdict:
        """The verdict on one message (nothing counted)."""
        if not is_signed_topic(msg.topic) or _is_presence(msg.topic):
            return "exempt"
        props = dict(msg.user_properties)
        kid, sig_text = props.get(KEY_ID_PROPERTY), props.get(SIGNATURE_PROPERTY)
        if kid is None or sig_text is None:
            return "unsigned"
        key = self._keys.get(kid)
        if key is None:
            return "unknown_key"
        sig = decode_signature(sig_text)
        if sig is None:
            return "bad_signature"
        try:
            key.verify(sig, signed_bytes(msg.topic, msg.payload))
        except InvalidSignature:
            return "bad_signature"
        at = _timestamp(msg.payload)
        if at is None:
            return "undated"
        age = self._clock() - at
        if age > self.max_age_s or -age > self.max_future_s:
            return "stale"
        return "trusted"

    def admit(self, msg: Message) -> bool:
        """Count the verdict; True when the message may be believed. Refusals are logged (at most
        once a second per kind)."""
        verdict = self.check(msg)
        self.counts[verdict] += 1
        if verdict in ("trusted", "exempt"):
            return True
        now = time.monotonic()
        if now - self._last_log.get(verdict, -1e9) >= 1.0:
            self._last_log[verdict] = now
            logger.warning("ignored a %s message on %s (%d so far)", verdict.replace("_", " "), msg.topic,
                           self.counts[verdict])
        return False

    @property
    def refused(self) -> int:
        return sum(self.counts[v] for v in REFUSALS)


def verified(handler: Callable[[Message], None], trust: SystemTrust | None) -> Callable[[Message], None]:
    """``handler`` behind ``trust.admit`` (refusals counted in ``trust.counts``, by reason); the
    handler itself when ``trust`` is None (the caller chose to believe unsigned messages)."""
    if trust is None:
        return handler

    def admitted(msg: Message) -> None:
        if trust.admit(msg):
            handler(msg)

    return admitted


def _is_presence(topic: str) -> bool:
    parts = topic.split("/", 3)
    return len(parts) > 2 and parts[2] == "presence"


def _timestamp(payload: bytes) -> float | None:
    """The payload's ``timestamp`` (RFC 3339) as epoch seconds, or None."""
    try:
        doc = orjson.loads(payload)
        raw = doc.get("timestamp") if isinstance(doc, dict) else None
        if not isinstance(raw, str) or len(raw) > 64:
            return None
        at = datetime.fromisoformat(raw)
    except (orjson.JSONDecodeError, ValueError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()
