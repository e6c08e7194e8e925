"""The signature envelope of what sfa-ops publishes under ``system/`` (no I/O, no keys).

A signed message carries two MQTT 5 user properties:

- ``sfa-key-id``: the first 16 hex digits of SHA-256 over the raw 32-byte Ed25519 public key;
- ``sfa-signature``: base64url (no padding) of the Ed25519 signature over :func:`signed_bytes` —
  a fixed label, the topic and the payload exactly as sent.

The topic is signed so a valid message cannot be replayed on another topic (a breaker state of
one service on another service's topic); the payload's own ``timestamp`` bounds replays in time
(the verifier, ``sdk.trust``, refuses old ones).
"""

from __future__ import annotations

import base64
import hashlib

KEY_ID_PROPERTY = "sfa-key-id"
SIGNATURE_PROPERTY = "sfa-signature"
SIGNED_PREFIX = "system/"
_LABEL = b"sfa-ops system message v1\n"
MAX_SIGNATURE_CHARS = 128  # an Ed25519 signature is 86 base64url characters; anything longer is junk


def signed_bytes(topic: str, payload: bytes) -> bytes:
    """What the signature covers."""
    return _LABEL + topic.encode() + b"\n" + payload


def key_id(raw_public_key: bytes) -> str:
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


def encode_signature(sig: bytes) -> str:
    return base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def decode_signature(text: str) -> bytes | None:
    """The signature bytes, or None when ``text`` is not base64url of a sane length."""
    if not text or len(text) > MAX_SIGNATURE_CHARS:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return None


def is_signed_topic(topic: str) -> bool:
    return topic.startswith(SIGNED_PREFIX)
