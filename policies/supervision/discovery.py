"""Which services get a monitor: bounded by design, as pure code (``now`` passed in).

A service is monitored when it is configured (``--services``), when one of its instances announces
presence (up to ``max_present`` such services; later announcements of new names are refused and
counted in ``presence_refused``), or — for a name seen only in traffic — while fewer than ``max_discovered`` such names are
monitored. Beyond that its calls are refused here (the caller counts them as unknown services): no
monitor, nothing persisted. A traffic-only service without a call for ``idle_retire_s`` retires and
frees its place; configured and present services never retire.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_PRESENT = 1024
"""Services that may become real by announcing presence (configured ones do not count)."""


class ServiceAdmission:
    """Configured, present and discovered (traffic-only) services, the last bounded."""

    __slots__ = ("_discovered", "configured", "idle_retire_s", "max_discovered", "max_present", "presence_refused",
                 "present", "refused")

    def __init__(self, *, configured: Iterable[str] = (), max_discovered: int = 64,
                 idle_retire_s: float = 600.0, max_present: int = MAX_PRESENT) -> None:
        self.configured = frozenset(configured)
        self.present: set[str] = set()
        self._discovered: dict[str, float] = {}
        self.max_discovered = max(0, max_discovered)
        self.idle_retire_s = idle_retire_s
        self.refused = 0
        """Calls to a traffic-only name beyond the cap."""
        self.max_present = max(0, max_present)
        self.presence_refused = 0
        """Presence announcements of a new name beyond ``max_present``."""

    @property
    def discovered(self) -> frozenset[str]:
        return frozenset(self._discovered)

    def monitored(self) -> set[str]:
        return {*self.configured, *self.present, *self._discovered}

    def real(self) -> set[str]:
        """Services known not to be made-up names: configured or announced by an instance."""
        return {*self.configured, *self.present}

    def admit(self, service: str, now: float) -> bool:
        """Whether a call to ``service`` is tracked; admits a new traffic-only name while there is room."""
        if service in self.configured or service in self.present:
            return True
        if service in self._discovered or len(self._discovered) < self.max_discovered:
            self._discovered[service] = now
            return True
        self.refused += 1
        return False

    def restore(self, services: Iterable[str], now: float) -> None:
        """Services monitored before a restart that are not configured: traffic-only until an
        instance announces itself again (so they can retire), kept even beyond the cap."""
        for s in services:
            if s not in self.configured and s not in self.present:
                self._discovered.setdefault(s, now)

    def may_announce(self, service: str) -> bool:
        """Whether a presence of ``service`` is taken: known, or room for one more present service.
        A refusal is counted in ``presence_refused``."""
        if service in self.present or service in self.configured or len(self.present) < self.max_present:
            return True
        self.presence_refused += 1
        return False

    def announce(self, service: str) -> bool:
        """An instance of ``service`` announced presence; True when the service is newly real.
        (Call ``may_announce`` first: this does not check the cap.)"""
        if service in self.present or service in self.configured:
            return False
        self._discovered.pop(service, None)
        self.present.add(service)
        return True

    def retire_idle(self, now: float) -> list[str]:
        """Traffic-only services without a call for ``idle_retire_s``: forgotten here and returned."""
        cutoff = now - self.idle_retire_s
        gone = [s for s, seen in self._discovered.items() if seen <= cutoff]
        for s in gone:
            del self._discovered[s]
        return gone


__all__ = ["ServiceAdmission"]
