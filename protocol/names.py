"""Validation of names that go into topic segments, label selectors and commands.

A service name must be a valid Kubernetes label value and a safe topic segment:
letters, digits, ``-``, ``_``, ``.``, starting and ending with a letter or digit, at most 63
characters. Other segments (session ids, user ids, instance ids, event names) may hold more, but
never an MQTT separator or wildcard (``/``, ``+``, ``#``), NUL, or be empty, and are capped.
"""

from __future__ import annotations

import re

from protocol.exceptions import ProtocolError

SERVICE_NAME_MAX = 63
SEGMENT_MAX = 128
_SERVICE_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
_FORBIDDEN = frozenset("/+#\x00")


def is_service_name(name: object) -> bool:
    return isinstance(name, str) and _SERVICE_RE.fullmatch(name) is not None


def check_service_name(name: object, *, field: str = "service") -> str:
    """Return ``name`` if it is a valid service name, else raise ``ProtocolError`` naming ``field``."""
    if not isinstance(name, str):
        raise ProtocolError(field, f"must be a string, got {type(name).__name__}")
    if not _SERVICE_RE.fullmatch(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise ProtocolError(
            field,
            f"{shown!r} is not a valid service name (letters, digits, '-', '_', '.', starting and "
            f"ending with a letter or digit, at most {SERVICE_NAME_MAX} characters)",
        )
    return name


def check_segment(value: object, *, field: str, max_len: int = SEGMENT_MAX) -> str:
    """Return ``value`` if it can be one MQTT topic segment, else raise ``ProtocolError``."""
    if not isinstance(value, str):
        raise ProtocolError(field, f"must be a string, got {type(value).__name__}")
    if not value:
        raise ProtocolError(field, "must not be empty")
    if len(value) > max_len:
        raise ProtocolError(field, f"longer than {max_len} characters")
    bad = _FORBIDDEN.intersection(value)
    if bad:
        raise ProtocolError(field, f"must not contain {' '.join(sorted(repr(c) for c in bad))}")
    if any(ord(c) < 0x20 for c in value):
        raise ProtocolError(field, "must not contain control characters")
    return value


def is_segment(value: object, *, max_len: int = SEGMENT_MAX) -> bool:
    """Whether ``value`` can be one MQTT topic segment (see :func:`check_segment`), without raising."""
    try:
        check_segment(value, field="segment", max_len=max_len)
    except ProtocolError:
        return False
    return True
