"""Shared pieces of the wire models: camelCase aliases, RFC 3339 UTC timestamps, and parsing of
raw payloads with size and depth limits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, PlainSerializer, ValidationError, WithJsonSchema
from pydantic.alias_generators import to_camel

from protocol.exceptions import ProtocolError

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_DEPTH = 32


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(ts: datetime) -> str:
    """RFC 3339 UTC with ``Z``; fractional seconds only when present (as the seed writes them)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    ts = ts.astimezone(UTC)
    # Not strftime: its %Y does not zero-pad years before 1000 on every platform (Go's zero time).
    text = f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}T{ts.hour:02d}:{ts.minute:02d}:{ts.second:02d}"
    if ts.microsecond:
        text += f".{ts.microsecond // 1000:03d}"
    return text + "Z"


def rfc3339_from_epoch(seconds: float) -> str:
    """Epoch seconds → the same RFC 3339 text as ``rfc3339``."""
    return rfc3339(datetime.fromtimestamp(seconds, UTC))


_MAX_TIME_TEXT = 64


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 (ISO 8601) time → aware UTC datetime. Accepts ``Z``/``z`` or an offset, up to
    nine fraction digits (Go writes nanoseconds; the rest past microseconds is dropped); a time
    without a zone is taken as UTC. Raises ``ValueError`` on anything else."""
    if not isinstance(text, str) or len(text) > _MAX_TIME_TEXT:
        raise ValueError(f"not an RFC 3339 time: {str(text)[:_MAX_TIME_TEXT]!r}")
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    head, dot, tail = value.partition(".")
    if dot:
        digits = len(tail) - len(tail.lstrip("0123456789"))
        value = f"{head}.{(tail[:digits] + '000000')[:6]}{tail[digits:]}"
    try:
        dt = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 time: {text!r}") from exc
    return _ensure_utc(dt)


def epoch_from_rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 time (see ``parse_rfc3339``)."""
    return parse_rfc3339(text).timestamp()


def _ensure_utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda v: rfc3339(_ensure_utc(v)), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "description": "An instant, RFC 3339 UTC."}),
]
"""An instant: parsed from RFC 3339 (or epoch seconds), written as RFC 3339 UTC by ``rfc3339``."""


class WireModel(BaseModel):
    """Base of every wire message: camelCase on the wire, unknown fields kept (the platform adds
    fields over time; we must pass them through, not fail)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        str_max_length=64 * 1024,
        use_attribute_docstrings=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict: aliases, no unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_wire())


M = TypeVar("M", bound=BaseModel)


def check_depth(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Reject containers nested deeper than ``max_depth`` (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                raise ProtocolError("(payload)", f"nested deeper than {max_depth} levels")
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            if depth > max_depth:
                raise ProtocolError("(payload)", f"nested deeper than {max_depth} levels")
            stack.extend((v, depth + 1) for v in item)


def loads(payload: bytes | str, *, max_bytes: int = MAX_PAYLOAD_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Decode JSON once, with the contract's size and depth limits."""
    size = len(payload)
    if size > max_bytes:
        raise ProtocolError("(payload)", f"{size} bytes is over the {max_bytes}-byte limit")
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("(payload)", f"not valid JSON: {exc}") from exc
    check_depth(doc, max_depth)
    return doc


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "constrained-str", "constrained-int"})


def _is_union_tag(part: object) -> bool:
    """pydantic puts the tried union member into ``loc`` (``dict[str,any]``); users want field names."""
    return isinstance(part, str) and ("[" in part or part in _TYPE_TAGS)


def parse_model(model: type[M], payload: bytes | str | dict[str, Any], **limits: int) -> M:
    """Parse a payload (raw or already decoded) into ``model``; errors name the first bad field."""
    doc = payload if isinstance(payload, dict) else loads(payload, **limits)
    if not isinstance(doc, dict):
        raise ProtocolError("(payload)", f"must be a JSON object, got {type(doc).__name__}")
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p)) or "(payload)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ProtocolError(loc, f"{err['msg']}{more}") from exc
