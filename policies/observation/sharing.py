"""Observers sharing the load, as pure code: who owns a call/response pair, what is forwarded to
the owner and when, and how a response that reaches its owner before its call is held.

With several observers, calls and responses arrive through MQTT 5 shared subscriptions: each
message reaches exactly one observer, chosen by the broker. A pair must still meet in one place,
so it is *owned* by the observer that the CRC-32 of its reply topic names (:func:`owner_of`): a
response's topic is that reply topic (known without parsing), and a call names it in its Response
Topic property (known without parsing) or in its body. An observer that receives a half it does
not own appends a :class:`Half` (the raw message fields and the time it was received, so the
recorded latency does not include the forwarding delay) to that owner's batch in
:class:`ForwardBatches`; the actor sends each owner's batch in one call every few milliseconds.
Batches are bounded (a half beyond the cap is counted in ``dropped``) and at most
``max_inflight`` sends per owner are outstanding (a slow owner makes batches grow, not calls).

Forwarding lags, so a response may reach its owner before its call: :class:`EarlyResponses`
holds it (bounded, for ``hold_s``) and gives it back when the call arrives; one that no call
claims in time is counted unmatched by the caller, as before.

Nothing here reads the clock or does I/O; ``now`` is passed in.
"""

from __future__ import annotations

import pickle
import zlib
from collections import deque
from typing import Any, NamedTuple


def owner_of(reply_topic: str, count: int) -> int:
    """The index of the observer (of ``count``) that owns every pair answered on ``reply_topic``."""
    if count <= 1:
        return 0
    return zlib.crc32(reply_topic.encode("utf-8", "surrogatepass")) % count


class Half(NamedTuple):
    """One half of a pair, forwarded to its owner as received (the owner parses it, once)."""

    is_call: bool
    received: float
    """When the receiving observer got it (epoch seconds): the call's start or the response's end."""
    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None
    trace: tuple[tuple[str, str], ...] = ()
    """The call's W3C trace headers, already bounded by the receiver."""


def encode_batch(halves: list[Half]) -> bytes:
    """One batch as bytes, for one actor call: plain tuples through the C pickler. Handing Ray the
    list itself costs ~45 µs of CPU per half (its pickler visits every object in Python)."""
    return pickle.dumps([tuple(h) for h in halves], protocol=pickle.HIGHEST_PROTOCOL)


def decode_batch(data: bytes) -> list[Half]:
    """The halves of :func:`encode_batch`'s bytes. Only ever fed what a peer observer encoded
    (Ray unpickles every actor call's arguments the same way)."""
    return [Half(*t) for t in pickle.loads(data)]


class ForwardBatches:
    """Per-owner outgoing batches: bounded, flushed together, at most ``max_inflight`` outstanding
    sends per owner."""

    def __init__(self, *, index: int, count: int, max_batch: int = 50_000, max_inflight: int = 4) -> None:
        self.index = index
        self.count = max(1, count)
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._batches: dict[int, list[Half]] = {}
        self._inflight: dict[int, int] = {}
        self.forwarded = 0
        """Halves handed to a send."""
        self.dropped = 0
        """Halves refused because their owner's batch was full."""

    def add(self, owner: int, half: Half) -> bool:
        """Queue ``half`` for ``owner``; ``False`` (counted in ``dropped``) when its batch is full."""
        batch = self._batches.get(owner)
        if batch is None:
            batch = self._batches[owner] = []
        if len(batch) >= self.max_batch:
            self.dropped += 1
            return False
        batch.append(half)
        return True

    def queued(self) -> int:
        return sum(len(b) for b in self._batches.values())

    def take(self) -> dict[int, list[Half]]:
        """The batches to send now (each owner with something queued and a free send slot); the
        caller must call :meth:`sent` once each send finished, successfully or not."""
        out: dict[int, list[Half]] = {}
        for owner, batch in self._batches.items():
            if batch and self._inflight.get(owner, 0) < self.max_inflight:
                out[owner] = batch
                self._inflight[owner] = self._inflight.get(owner, 0) + 1
                self.forwarded += len(batch)
        for owner in out:
            self._batches[owner] = []
        return out

    def sent(self, owner: int) -> None:
        """A send to ``owner`` finished: its slot is free again."""
        self._inflight[owner] = max(0, self._inflight.get(owner, 0) - 1)


class EarlyResponses:
    """Responses held until their call arrives (bounded; expire after ``hold_s``)."""

    def __init__(self, *, hold_s: float = 2.0, cap: int = 50_000) -> None:
        self.hold_s = hold_s
        self.cap = cap
        self._held: dict[tuple[str, Any], tuple[float, float, dict[str, Any]]] = {}
        """key → (hold deadline, received, response)."""
        self._order: deque[tuple[float, tuple[str, Any]]] = deque()
        self.matched = 0
        """Held responses a later call claimed."""

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, key: tuple[str, Any], received: float, response: dict[str, Any], now: float) -> bool:
        """Keep ``response`` (received at ``received``) under ``key`` = (reply topic, id); ``False``
        when full or when a response with that key is already held (the caller counts it unmatched)."""
        if len(self._held) >= self.cap or key in self._held:
            return False
        deadline = now + self.hold_s
        self._held[key] = (deadline, received, response)
        self._order.append((deadline, key))
        return True

    def take(self, key: tuple[str, Any]) -> tuple[float, dict[str, Any]] | None:
        """The response held under ``key`` (received time, document), removed; ``None`` when none."""
        got = self._held.pop(key, None)
        if got is None:
            return None
        self.matched += 1
        return got[1], got[2]

    def expire(self, now: float) -> int:
        """Drop responses held past their time; returns how many (to count as unmatched)."""
        n = 0
        while self._order and self._order[0][0] <= now:
            deadline, key = self._order.popleft()
            got = self._held.get(key)
            if got is not None and got[0] == deadline:  # not a later response held under the same key
                del self._held[key]
                n += 1
        return n


__all__ = ["EarlyResponses", "ForwardBatches", "Half", "decode_batch", "encode_batch", "owner_of"]
