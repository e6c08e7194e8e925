"""Whether a service instance's ``offline`` presence is believed yet (pure).

A stopping broker publishes every client's Last Will as it shuts down: to an observer those offlines
look exactly like crashes, and taking them for crashes publishes ``service_unavailable`` (and opens
breakers) for services that are alive and reconnect a moment later. So an offline is believed only
once the broker proves it is still up after sending it:

- **echo**: the observer publishes a tiny QoS-0 echo to its own private topic and holds the offline
  until the echo comes back on the same connection (about 1 ms on a live broker). A broker that is
  going down never returns it. An echo that does not return within ``echo_timeout`` while the
  connection stays up is not waited for any longer: the offline is believed (a slow broker must not
  stop detection).
- **broker away**: if the connection dropped (or was replaced) before the echo returned, or the
  offline arrived while disconnected, the offline waits for the reconnect, then ``recheck`` more
  seconds in which live instances announce themselves again; an ``online`` from that instance
  cancels it, otherwise it is believed then.
- **settling**: an offline received within ``settle`` seconds after a reconnect (a resumed session
  may deliver Wills the broker queued for us while stopping, and the dispatcher may still be working
  through them) or a retained one (the broker's stored state, not an event) also waits ``recheck``
  seconds for its instance's ``online``.

An offline of an instance not online in the observer's view is no event and passes at once, as do
onlines (which also cancel a held offline of the same instance). Held offlines are bounded
(``MAX_HELD``); beyond it an offline passes at once, counted. Nothing here reads a clock: ``now`` and
the connection's state (``connected``, and ``epoch``, the number of connections made so far) are
passed in, and released offlines are returned as data for the observer to apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAX_HELD = 10_000

Stage = Literal["echo", "away", "settle"]


@dataclass(frozen=True, slots=True)
class Offline:
    """A believed offline: apply it as if it had just arrived."""

    service: str
    instance: str
    received: float


@dataclass(slots=True)
class _Held:
    offline: Offline
    stage: Stage
    token: int  # the echo that confirms it ("echo" stage)
    deadline: float | None  # None: waiting for a reconnect


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one offline: ``release`` it now, or hold it (then ``echo`` is the token to
    publish, or None when it waits for a reconnect or a settling window)."""

    release: bool
    echo: int | None = None


PASS = Decision(True)


class OfflineHold:
    """The offlines an observer has received but does not believe yet."""

    def __init__(self, *, echo_timeout: float, recheck: float, settle: float = 1.0) -> None:
        self.echo_timeout = echo_timeout
        self.recheck = recheck
        self.settle = settle
        self.held: dict[tuple[str, str], _Held] = {}
        self.epoch = 0
        self.connected = False
        self.settle_until = 0.0
        self._token = 0
        self.confirmed = 0
        """Believed after their echo came back."""
        self.believed_late = 0
        """Believed without an echo: the echo timed out on a live connection, or the recheck window passed."""
        self.cancelled = 0
        """Taken back by the instance's own ``online``: the offlines a stopping broker sent."""
        self.overflow = 0
        self.holds = 0

    def link(self, connected: bool, epoch: int, now: float) -> None:
        """The connection's state now (call before every other method). A lost or replaced
        connection sends every held offline to wait for the next connection (an echo sent on the old
        one never returns); once connected again, they and every offline received in the next
        ``recheck`` seconds wait until that window ends."""
        new_link = epoch != self.epoch
        if new_link or (self.connected and not connected):
            for h in self.held.values():
                h.stage, h.deadline = "away", None
        if connected and (new_link or not self.connected):
            if epoch > 1:  # a re-connect: the first connection has nothing to settle
                self.settle_until = now + self.settle
            for h in self.held.values():
                if h.deadline is None:
                    h.deadline = now + self.recheck
        self.epoch = epoch
        self.connected = connected

    def offline(self, service: str, instance: str, now: float, *, was_online: bool,
                retained: bool = False) -> Decision:
        """One offline received at ``now`` (call :meth:`link` first)."""
        if not was_online:
            return PASS
        key = (service, instance)
        if key in self.held:
            return Decision(False)  # already held: the first one decides
        if len(self.held) >= MAX_HELD:
            self.overflow += 1
            return PASS
        off = Offline(service, instance, now)
        self.holds += 1
        if not self.connected:
            self.held[key] = _Held(off, "away", 0, None)
            return Decision(False)
        if retained or now < self.settle_until:
            self.held[key] = _Held(off, "settle", 0, now + self.recheck)
            return Decision(False)
        self._token += 1
        self.held[key] = _Held(off, "echo", self._token, now + self.echo_timeout)
        return Decision(False, self._token)

    def online(self, service: str, instance: str) -> bool:
        """The instance announced itself online: its held offline (if any) is dropped. True if one was."""
        if self.held.pop((service, instance), None) is None:
            return False
        self.cancelled += 1
        return True

    def echoed(self, token: int) -> list[Offline]:
        """Echo ``token`` came back (on the current connection: call :meth:`link` first): the
        offlines it, or an earlier echo, was sent for are believed."""
        out = [k for k, h in self.held.items() if h.stage == "echo" and h.token <= token]
        self.confirmed += len(out)
        return [self.held.pop(k).offline for k in out]

    def due(self, now: float) -> list[Offline]:
        """Offlines whose wait is over (an echo timed out on a live connection, a window passed)."""
        out = [k for k, h in self.held.items() if h.deadline is not None and now >= h.deadline]
        self.believed_late += len(out)
        return [self.held.pop(k).offline for k in out]

    def next_deadline(self) -> float | None:
        return min((h.deadline for h in self.held.values() if h.deadline is not None), default=None)

    def forget(self, service: str) -> None:
        for key in [k for k in self.held if k[0] == service]:
            del self.held[key]

    def counters(self) -> dict[str, int]:
        return {"offlineHeld": self.holds, "offlineConfirmed": self.confirmed, "offlineCancelled": self.cancelled,
                "offlineBelievedLate": self.believed_late, "offlineHoldOverflow": self.overflow,
                "offlineHeldNow": len(self.held)}


__all__ = ["MAX_HELD", "PASS", "Decision", "Offline", "OfflineHold"]
