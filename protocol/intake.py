"""Limits and checks for what callers put in a call that sfa-ops acts on (no I/O).

sfa-ops answers calls on a service's behalf with its own broker rights, so the reply topic a caller
names is checked before anything is published there: it must be a valid MQTT publish topic (no
wildcard, no NUL or control character, not empty, at most :data:`REPLY_TOPIC_MAX` characters) and lie
outside every topic other programs trust — ``$…`` (broker topics) and the contract's own trees
(``system/``, ``service/``, ``security/``, ``audit/``, ``ui/``), the same set the SDK's executor
refuses to answer on.
"""

from __future__ import annotations

import re
from typing import Final

REPLY_TOPIC_MAX: Final[int] = 256
CALL_ID_MAX: Final[int] = 128
METHOD_MAX: Final[int] = 128
CORRELATION_ID_MAX: Final[int] = 256

RESERVED_ROOTS: Final[frozenset[str]] = frozenset({"system", "service", "security", "audit", "ui"})
"""First topic levels a reply may never go to: other programs trust what is published there."""

_INT_MIN: Final[int] = -(2**63)
_INT_MAX: Final[int] = 2**63 - 1
_BAD_CHARS = re.compile(r"[+#\x00-\x1f\x7f]")


def reply_topic_problem(topic: object) -> str | None:
    """Why ``topic`` may not receive an answer from sfa-ops, or ``None`` when it may."""
    if not isinstance(topic, str):
        return "not a string"
    if not topic:
        return "empty"
    if len(topic) > REPLY_TOPIC_MAX:
        return f"longer than {REPLY_TOPIC_MAX} characters"
    if _BAD_CHARS.search(topic):
        return "holds a wildcard, NUL or control character"
    if topic[0] == "$":
        return "a broker ($) topic"
    if topic.split("/", 1)[0] in RESERVED_ROOTS:
        return "a reserved platform topic"
    if not topic.isascii():
        try:
            topic.encode("utf-8")
        except UnicodeEncodeError:
            return "not valid UTF-8"
    return None


def usable_reply_topic(topic: object) -> str | None:
    """``topic`` if sfa-ops may publish an answer there, else ``None``."""
    return topic if reply_topic_problem(topic) is None else None  # type: ignore[return-value]


def is_call_id(value: object) -> bool:
    """A JSON-RPC id sfa-ops can echo: a string of at most :data:`CALL_ID_MAX` characters, a
    64-bit integer (not a boolean), or ``null``."""
    if value is None:
        return True
    kind = type(value)
    if kind is str:
        return len(value) <= CALL_ID_MAX  # type: ignore[arg-type]
    if kind is int:
        return _INT_MIN <= value <= _INT_MAX  # type: ignore[operator]
    return False


def is_method_name(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= METHOD_MAX


__all__ = [
    "CALL_ID_MAX",
    "CORRELATION_ID_MAX",
    "METHOD_MAX",
    "REPLY_TOPIC_MAX",
    "RESERVED_ROOTS",
    "is_call_id",
    "is_method_name",
    "reply_topic_problem",
    "usable_reply_topic",
]
