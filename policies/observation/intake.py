"""The observer's intake of calls, as pure code: every payload becomes exactly one verdict.

- :class:`IntakeCall` — a call sfa-ops tracks (and may answer on ``reply_to``, already checked);
- :class:`Refused` ``malformed`` — not a JSON-RPC call: bad JSON, not an object, no usable ``id``
  (string/integer/null under a length cap) or ``method`` (1..128 characters);
- :class:`Refused` ``rejected`` — a well-formed call whose reply topic sfa-ops will never publish on
  (``protocol.intake.reply_topic_problem``); such a call is counted and never answered by sfa-ops.

With MQTT 5 the Response Topic and Correlation Data properties take precedence over the body's
``replyTo``/``correlationId`` (DESIGN.md §1); a present but unusable Response Topic rejects the call
(it never falls back to the body).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from protocol.intake import CORRELATION_ID_MAX, is_call_id, is_method_name, reply_topic_problem


@dataclass(frozen=True, slots=True)
class IntakeCall:
    doc: dict[str, Any]
    call_id: Any
    method: str
    reply_to: str | None
    correlation_id: str | None


@dataclass(frozen=True, slots=True)
class Refused:
    kind: Literal["malformed", "rejected"]
    why: str
    reply_to: Any = None
    """The reply topic a rejected call named (to pick the observer that counts it)."""


def read_call(payload: bytes, response_topic: str | None = None,
              correlation_data: bytes | None = None) -> IntakeCall | Refused:
    """Classify one payload seen on ``service/{Service}``; never raises."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return Refused("malformed", "not JSON")
    if type(doc) is not dict:
        return Refused("malformed", "not a JSON object")
    if "id" not in doc or not is_call_id(doc["id"]):
        return Refused("malformed", "id must be a string (<= 128 characters), an integer or null")
    method = doc.get("method")
    if not is_method_name(method):
        return Refused("malformed", "method must be a string of 1..128 characters")
    if response_topic is not None:
        reply_to: Any = response_topic
    else:
        reply_to = doc.get("replyTo")
        if reply_to == "":
            reply_to = None  # an empty replyTo asks for no answer, like none
    if reply_to is not None:
        problem = reply_topic_problem(reply_to)
        if problem is not None:
            return Refused("rejected", f"reply topic {problem}", reply_to)
    corr: Any = doc.get("correlationId")
    if correlation_data is not None:
        corr = correlation_data.decode(errors="replace")
    if type(corr) is not str or len(corr) > CORRELATION_ID_MAX or not corr:
        corr = None
    return IntakeCall(doc, doc["id"], method, reply_to, corr)  # type: ignore[arg-type]


__all__ = ["IntakeCall", "Refused", "read_call"]
