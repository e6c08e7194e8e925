"""Call↔response correlation: the observer's per-message work, done in-process.

An observer feeds every call and response it sees into a :class:`Correlator` and, once per tick,
drains per-service :class:`ServiceDelta` batches for the service monitors. Nothing here reads the
clock or does I/O; ``now`` (epoch seconds) is passed in and answers to send come back as data.

- A call is pending under ``(reply topic, id)`` until its response arrives or its call timeout
  passes (then it counts as :data:`policies.breaker.outcomes.UNANSWERED`).
- The pending table is bounded (``pending_cap``); a call beyond it is counted in
  ``pending_overflow`` and not tracked, never silently.
- A call to B made while a call to A with the same correlationId is pending teaches A → B.
- While a service's breaker is open, a new call is refused at once with -32503 "Circuit Breaker
  Open" (``Answer``); in half-open only the permitted number of trial calls pass.
- Everything keyed by caller-chosen values is capped, each cap with a count in ``Counters.capped``:
  distinct methods and presence instances per service per tick, distinct error codes outside the
  contract's table (beyond :data:`MAX_UNKNOWN_CODES` they are recorded as -32603, which counts the
  same way).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from policies.breaker.outcomes import UNANSWERED
from protocol.errors import ERROR_SPECS, ErrorCode

MAX_METHODS_PER_DELTA = 200
MAX_INSTANCES_PER_DELTA = 256
MAX_UNKNOWN_CODES = 32


@dataclass(slots=True)
class Pending:
    service: str
    method: str
    started: float
    deadline: float
    call_id: Any
    reply_to: str
    correlation_id: str | None
    user_id: str | None
    trial: bool = False
    done: bool = False
    call: dict[str, Any] | None = None
    """The parsed call, kept only when audit records are wanted (params, userContext)."""
    trace: tuple[tuple[str, str], ...] = ()
    """The call's W3C trace headers (already bounded), copied into a -32503 answer."""


@dataclass(slots=True)
class ServiceDelta:
    """What one service saw during one tick; shipped to its monitor and merged there."""

    service: str
    calls: int = 0
    responses: int = 0
    fast_failed: int = 0
    answered_unavailable: int = 0
    """Pending calls sfa-ops answered -32503 because the service went down (no outcome of their own)."""
    outcomes: list[tuple[float, int | None]] = field(default_factory=list)
    """(duration seconds, error code or None) per finished call, in finish order."""
    trials: list[tuple[float, int | None]] = field(default_factory=list)
    """The same for half-open trial calls (kept apart: only they decide a half-open breaker)."""
    presence: dict[str, bool] | None = None
    """Instance → online, for instances whose presence changed this tick."""
    methods: dict[str, int] = field(default_factory=dict)
    max_inflight: int = 0
    inflight: int = 0
    last_success: float | None = None

    def merge(self, later: ServiceDelta) -> None:
        """Fold a later tick's delta into this one (kept while the service's monitor starts)."""
        self.calls += later.calls
        self.responses += later.responses
        self.fast_failed += later.fast_failed
        self.answered_unavailable += later.answered_unavailable
        self.outcomes.extend(later.outcomes)
        self.trials.extend(later.trials)
        for m, n in later.methods.items():
            self.methods[m] = self.methods.get(m, 0) + n
        self.max_inflight = max(self.max_inflight, later.max_inflight)
        self.inflight = later.inflight
        if later.last_success is not None:
            self.last_success = max(self.last_success or 0.0, later.last_success)
        if later.presence:
            self.presence = {**(self.presence or {}), **later.presence}

    @property
    def timeouts(self) -> int:
        return sum(1 for _, c in self.outcomes if c == UNANSWERED) + sum(
            1 for _, c in self.trials if c == UNANSWERED
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """A -32503 answer to publish on ``reply_to`` on the service's behalf."""

    kind: str  # "circuit_open" | "unavailable"
    service: str
    reply_to: str
    call_id: Any
    correlation_id: str | None
    retry_after_s: float
    trace: tuple[tuple[str, str], ...] = ()
    """The call's W3C trace headers, copied into the answer's user properties."""


@dataclass(slots=True)
class BreakerView:
    """The observer's copy of a breaker, refreshed each tick from the monitor."""

    state: str = "closed"
    open_until: float = 0.0
    trial_permits: int = 0
    epoch: int = -1


@dataclass(slots=True)
class Counters:
    calls: int = 0
    responses: int = 0
    timeouts: int = 0
    unmatched_responses: int = 0
    pending_overflow: int = 0
    fast_failed: int = 0
    capped: int = 0
    """Keys not kept because a per-service or per-code cap was full."""


class Correlator:
    """Bounded pending table, per-service deltas, learned dependencies, fast-fail decisions."""

    def __init__(self, *, call_timeout_s: float, per_service_timeout_s: dict[str, float] | None = None,
                 pending_cap: int = 100_000, audit: bool = False, audit_cap: int = 50_000,
                 activity_cap: int = 100_000) -> None:
        self.call_timeout_s = call_timeout_s
        self.per_service_timeout_s = dict(per_service_timeout_s or {})
        self.pending_cap = pending_cap
        self.pending: dict[tuple[str, Any], Pending] = {}
        # One FIFO per distinct timeout: deadlines in each are non-decreasing, so expiry is O(1).
        self._expiry: dict[float, deque[Pending]] = {}
        self._by_correlation: dict[str, list[Pending]] = {}
        self._inflight: dict[str, int] = {}
        self.deltas: dict[str, ServiceDelta] = {}
        self.edges: dict[tuple[str, str], int] = {}
        self.breakers: dict[str, BreakerView] = {}
        self.counters = Counters()
        self.audit_enabled = audit
        self.audit_cap = audit_cap
        self.activity_cap = activity_cap
        self.audit: list[dict[str, Any]] = []
        self.audit_dropped = 0
        self.activity: dict[str, dict[str, int]] = {}
        self.activity_dropped = 0
        self._unknown_codes: set[int] = set()

    # -- inputs -------------------------------------------------------------------------------

    def _delta(self, service: str) -> ServiceDelta:
        d = self.deltas.get(service)
        if d is None:
            d = self.deltas[service] = ServiceDelta(service)
        return d

    def on_call(self, service: str, call: dict[str, Any], reply_to: str | None, correlation_id: str | None,
                now: float, trace: tuple[tuple[str, str], ...] = ()) -> Answer | None:
        """Record a call seen on ``service/{service}``; returns a fast-fail answer when refused.
        ``trace`` (the call's bounded W3C headers) is kept opaque, for the answers."""
        self.counters.calls += 1
        d = self._delta(service)
        d.calls += 1
        method = call.get("method")
        method = method if isinstance(method, str) else "?"
        if method in d.methods or len(d.methods) < MAX_METHODS_PER_DELTA:
            d.methods[method] = d.methods.get(method, 0) + 1
        else:
            self.counters.capped += 1
        call_id = call.get("id")
        trial = False
        view = self.breakers.get(service)
        if view is not None and view.state != "closed":
            refused, trial = self._gate(view, now)
            if refused:
                self.counters.fast_failed += 1
                d.fast_failed += 1
                if reply_to is None:
                    return None
                return Answer("circuit_open", service, reply_to, call_id, correlation_id,
                              max(1.0, view.open_until - now), trace)
        if reply_to is None:
            return None
        if correlation_id:
            for other in self._by_correlation.get(correlation_id, ()):
                if not other.done and other.service != service:
                    edge = (other.service, service)
                    self.edges[edge] = self.edges.get(edge, 0) + 1
        if len(self.pending) >= self.pending_cap:
            self.counters.pending_overflow += 1
            return None
        timeout = self.per_service_timeout_s.get(service, self.call_timeout_s)
        user = call.get("userContext")
        user_id = user.get("userId") if isinstance(user, dict) else None
        if not isinstance(user_id, str):
            user_id = None
        else:
            self._count_activity(user_id, service)
        p = Pending(service, method, now, now + timeout, call_id, reply_to, correlation_id, user_id, trial,
                    call=call if self.audit_enabled else None, trace=trace)
        key = (reply_to, call_id)
        old = self.pending.get(key)
        if old is not None:  # a duplicate id: the older call can no longer be matched
            self._finish(old, now, UNANSWERED)
        self.pending[key] = p
        q = self._expiry.get(timeout)
        if q is None:
            q = self._expiry[timeout] = deque()
        q.append(p)
        if correlation_id:
            self._by_correlation.setdefault(correlation_id, []).append(p)
        n = self._inflight.get(service, 0) + 1
        self._inflight[service] = n
        if n > d.max_inflight:
            d.max_inflight = n
        return None

    def _gate(self, view: BreakerView, now: float) -> tuple[bool, bool]:
        """(refused, trial) for a call while the breaker is not closed."""
        state = view.state
        if state in ("disabled", "metrics_only"):
            return False, False
        if state == "forced_open":
            return True, False
        if state == "open" and now < view.open_until:
            return True, False
        # open past its timeout, or half-open: let the permitted trial calls through.
        if view.trial_permits > 0:
            view.trial_permits -= 1
            return False, True
        return True, False

    def on_response(self, reply_topic: str, response: dict[str, Any], now: float) -> Pending | None:
        """Match a response to its pending call; returns the call, or ``None`` when unknown."""
        p = self.pending.pop((reply_topic, response.get("id")), None)
        if p is None:
            self.counters.unmatched_responses += 1
            return None
        self.counters.responses += 1
        err = response.get("error")
        code: int | None = None
        if err is not None:
            raw = err.get("code") if isinstance(err, dict) else None
            code = self._code(raw)
        d = self._delta(p.service)
        d.responses += 1
        if code is None:
            d.last_success = now
        self._finish(p, now, code, popped=True)
        return p

    def _code(self, raw: Any) -> int:
        """The outcome code to record: unknown codes are kept apart up to a cap, then folded."""
        if type(raw) is not int or raw == UNANSWERED:  # a response is never "unanswered"
            return ErrorCode.INTERNAL_ERROR.value
        if raw in ERROR_SPECS or raw in self._unknown_codes:
            return raw
        if len(self._unknown_codes) < MAX_UNKNOWN_CODES:
            self._unknown_codes.add(raw)
            return raw
        self.counters.capped += 1
        return ErrorCode.INTERNAL_ERROR.value

    def _count_activity(self, user_id: str, service: str) -> None:
        per_user = self.activity.get(user_id)
        if per_user is None:
            if len(self.activity) >= self.activity_cap:
                self.activity_dropped += 1
                return
            per_user = self.activity[user_id] = {}
        per_user[service] = per_user.get(service, 0) + 1

    def _audit(self, p: Pending, now: float, code: int | None) -> None:
        if len(self.audit) >= self.audit_cap:
            self.audit_dropped += 1
            return
        call = p.call or {}
        user = call.get("userContext")
        user = user if isinstance(user, dict) else {}
        parts = p.reply_to.split("/")
        self.audit.append({
            "ts": p.started, "service": p.service, "method": p.method, "userId": p.user_id,
            "sessionId": parts[1] if len(parts) == 3 and parts[0] == "session" else None,
            "correlationId": p.correlation_id, "durationMs": round((now - p.started) * 1000.0, 3),
            "code": code, "ipAddress": user.get("ipAddress"), "userAgent": user.get("userAgent"),
            "params": call.get("params"),
        })

    def _finish(self, p: Pending, now: float, code: int | None, *, popped: bool = False) -> None:
        if p.done:
            return
        p.done = True
        if self.audit_enabled:
            self._audit(p, now, code)
            p.call = None
        if not popped:
            self.pending.pop((p.reply_to, p.call_id), None)
        d = self._delta(p.service)
        (d.trials if p.trial else d.outcomes).append((now - p.started, code))
        self._inflight[p.service] = self._inflight.get(p.service, 1) - 1
        if p.correlation_id:
            group = self._by_correlation.get(p.correlation_id)
            if group is not None:
                group[:] = [x for x in group if not x.done]
                if not group:
                    del self._by_correlation[p.correlation_id]

    def expire(self, now: float) -> int:
        """Time out every call past its deadline; returns how many."""
        n = 0
        for q in self._expiry.values():
            while q and (q[0].done or q[0].deadline <= now):
                p = q.popleft()
                if not p.done:
                    self._finish(p, now, UNANSWERED)
                    n += 1
        self.counters.timeouts += n
        return n

    def take_pending(self, service: str, now: float) -> list[Pending]:
        """Remove and return every pending call of ``service`` (to answer them -32503)."""
        taken = [p for p in self.pending.values() if p.service == service and not p.done]
        for p in taken:
            p.done = True
            del self.pending[(p.reply_to, p.call_id)]
            self._inflight[service] = self._inflight.get(service, 1) - 1
            if p.trial:  # the service never answered its trial: the half-open breaker must hear of it
                self._delta(service).trials.append((now - p.started, UNANSWERED))
            else:
                self._delta(service).answered_unavailable += 1
        return taken

    def set_breaker(self, service: str, state: str, open_until: float, trial_permits: int, epoch: int = 0) -> None:
        """Refresh the view; trial permits are handed out afresh only when the monitor's ``epoch``
        moved (a transition, or a stalled half-open), never on every tick."""
        view = self.breakers.get(service)
        if view is None:
            view = self.breakers[service] = BreakerView()
        if epoch != view.epoch:
            view.trial_permits = trial_permits
            view.epoch = epoch
        view.state = state
        view.open_until = open_until

    def on_presence(self, service: str, instance: str, online: bool) -> None:
        d = self._delta(service)
        if d.presence is None:
            d.presence = {}
        if instance in d.presence or len(d.presence) < MAX_INSTANCES_PER_DELTA:
            d.presence[instance] = online
        else:
            self.counters.capped += 1

    def inflight(self) -> dict[str, int]:
        """Calls awaiting an answer now, per service with any (bounded by the admitted services)."""
        return {s: n for s, n in self._inflight.items() if n > 0}

    def has_inflight(self, service: str) -> bool:
        return self._inflight.get(service, 0) > 0

    def forget(self, service: str) -> None:
        """Drop what is kept about a retired service (it had no pending call for a long time)."""
        self.breakers.pop(service, None)
        self._inflight.pop(service, None)
        self.deltas.pop(service, None)

    # -- outputs ------------------------------------------------------------------------------

    def drain_security(self) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
        """Per-user calls per service and the audit records of finished calls since the last drain."""
        activity, audit = self.activity, self.audit
        self.activity, self.audit = {}, []
        return activity, audit

    def drain(self) -> tuple[dict[str, ServiceDelta], dict[tuple[str, str], int]]:
        """Per-service deltas and learned edges since the last drain (then reset)."""
        deltas, edges = self.deltas, self.edges
        for name, d in deltas.items():
            d.inflight = self._inflight.get(name, 0)
        self.deltas, self.edges = {}, {}
        for name, n in self._inflight.items():
            if n:
                self._delta(name).max_inflight = n
        return deltas, edges
