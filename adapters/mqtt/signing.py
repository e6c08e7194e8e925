"""Ed25519 signing of sfa-ops' system messages, and the key files (PEM).

``Signer.from_file(path)`` loads a PKCS#8 private key; :meth:`Signer.sign` adds the envelope of
``protocol.signing`` to one message. :func:`ensure_key_pair` creates a key pair when absent (the
private key 0600, the public key beside it as ``<name>.pub``, for SDK clients).

Errors::

    SigningKeyError   the key file is missing, unreadable or not an Ed25519 private key
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.signing import KEY_ID_PROPERTY, SIGNATURE_PROPERTY, encode_signature, key_id, signed_bytes

UserProperties = Mapping[str, str] | Sequence[tuple[str, str]] | None


class SigningKeyError(ValueError):
    """A signing key file that cannot be used; the message names the file, never its content."""


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Signer:
    """Signs messages with one private key; ``key_id`` names its public key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.key_id = key_id(raw_public(private_key.public_key()))

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"

    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    @classmethod
    def from_file(cls, path: str | Path) -> Signer:
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except OSError as exc:
            raise SigningKeyError(f"signing key {path}: cannot read ({exc.strerror})") from exc
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise SigningKeyError(f"signing key {path}: not an unencrypted PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"signing key {path}: not an Ed25519 key")
        return cls(key)

    def sign(self, topic: str, payload: bytes, user_properties: UserProperties = None
             ) -> tuple[bytes, list[tuple[str, str]]]:
        """``payload`` and the user properties with this key's id and signature (any earlier
        envelope properties replaced)."""
        pairs = user_properties.items() if isinstance(user_properties, Mapping) else (user_properties or ())
        props = [(str(k), str(v)) for k, v in pairs if k not in (KEY_ID_PROPERTY, SIGNATURE_PROPERTY)]
        sig = encode_signature(self._key.sign(signed_bytes(topic, payload)))
        props += [(KEY_ID_PROPERTY, self.key_id), (SIGNATURE_PROPERTY, sig)]
        return payload, props


def public_key_path(private_path: str | Path) -> Path:
    p = Path(private_path)
    return p.with_name(p.name + ".pub")


def ensure_key_pair(private_path: str | Path) -> Signer:
    """Load the key at ``private_path``, creating it (0600) and its ``.pub`` first if absent."""
    path = Path(private_path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    signer = Signer.from_file(path)
    pub = public_key_path(path)
    if not pub.exists():
        pub.write_bytes(signer.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return signer


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (what :func:`ensure_key_pair` writes)."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise SigningKeyError(f"public key {path}: cannot read ({exc.strerror})") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"public key {path}: not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"public key {path}: not an Ed25519 key")
    return key
