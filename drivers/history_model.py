"""The synthetic platform history ``drivers.generate`` writes: a pure, seeded model.

Every hour of the history is generated from its own random stream (``seed``, hour), so the same
seed and end time give the same events however the work is chunked. What it holds:

- audit events (``service_call``, ``data_access``, ``auth``, ``authz``, ``data_subject_request``)
  from power-law users with diurnal and weekly patterns, in the live audit writer's shape
  (``policies.audit.schema``: the same kinds and field names, without parameters or compliance);
- per-service, per-minute ``MetricRollup`` rows for the last ``rollup_days``;
- planted anomalies (see :attr:`HistoryModel.planted`), all inside the last 24 hours: a user whose
  volume jumps, one reaching new services, one exfiltrating, a brute-force burst from one IP;
  a service whose latency drifts up, one with errors, one over its concurrency capacity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adapters.store.records import MetricRollup
from policies.analysis.baselines import DAY, HOUR, ZERO_KEY, sketch_keys
from policies.audit import schema
from policies.metrics.sketch_codec import encode_counts

SERVICES = (
    ("UserManagement", "users"), ("OrderService", "orders"), ("PaymentService", "payment_cards"),
    ("InventoryService", "inventory"), ("CatalogService", "catalog_items"),
    ("PatientRecords", "patient_records"), ("NotificationService", "notifications"),
    ("ReportingService", "reports"), ("SearchService", "search_index"), ("ShippingService", "shipments"),
    ("AnalyticsService", "events"), ("AuditService", "audit_log"),
)  # fmt: skip
METHODS = ("get", "list", "create", "update", "delete", "search")
KIND_P = np.array([0.90, 0.06, 0.035, 0.005])  # call, data_access, auth, authz
OPERATIONS = ("read", "update", "create", "delete")
OPERATION_P = np.array([0.7, 0.2, 0.08, 0.02])
BRUTE_FORCE_IP = "203.0.113.66"
MIN_SERVICES = 8
MIN_USERS = 20
_KEY_MIN = ZERO_KEY  # shift keys to be non-negative so (minute, key) packs into one int64
_KEY_SPAN = 2**32


@dataclass(frozen=True, kw_only=True)
class HistoryModel:
    """Parameters of one history; ``end`` is a multiple of an hour (epoch seconds)."""

    events: int
    days: int
    users: int
    services: int
    seed: int
    end: float
    rollup_days: int = 7
    planted: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        if self.users < MIN_USERS or self.services < MIN_SERVICES:
            raise ValueError(f"need at least {MIN_USERS} users and {MIN_SERVICES} services")
        if self.end % HOUR:
            raise ValueError("end must be a whole hour")
        u = self.users
        object.__setattr__(self, "planted", {
            "volume_user": user_name(u // 10), "new_services_user": user_name(u // 5),
            "exfiltration_user": user_name(u // 3), "brute_force_ip": BRUTE_FORCE_IP,
            "latency_service": self.service_names[1], "error_service": self.service_names[2],
            "concurrency_service": self.service_names[3],
        })

    @property
    def start(self) -> float:
        return self.end - self.days * DAY

    @property
    def hours(self) -> int:
        return self.days * 24

    @property
    def service_names(self) -> list[str]:
        names = [s for s, _ in SERVICES]
        return (names + [f"Service{i:02d}" for i in range(len(names), self.services)])[: self.services]

    @property
    def collections(self) -> list[str]:
        cols = [c for _, c in SERVICES]
        return (cols + [f"service{i:02d}_data" for i in range(len(cols), self.services)])[: self.services]


def user_name(i: int) -> str:
    return f"user-{i:05d}"


def intensity(hour_index: np.ndarray) -> np.ndarray:
    """Relative traffic of epoch hours: a diurnal curve peaking mid-afternoon UTC, lower on weekends
    (peak about 1.8x the mean, so a busy normal hour stays under the 3x volume rule)."""
    hod = hour_index % 24
    dow = (hour_index // 24 + 3) % 7  # 0 = Monday
    diurnal = 0.6 + 0.8 * np.exp(-((hod - 14) ** 2) / 18.0)
    return diurnal * np.where(dow >= 5, 0.7, 1.0)


class Population:
    """Users, their weights, typical services and roles (fixed for a seed)."""

    def __init__(self, m: HistoryModel) -> None:
        rng = np.random.default_rng([m.seed, 1])
        self.weights = 1.0 / np.arange(1, m.users + 1) ** 1.1
        self.weights /= self.weights.sum()
        pop = 1.0 / np.arange(1, m.services + 1) ** 0.7
        pop /= pop.sum()
        self.n_typical = rng.integers(1, 4, m.users)
        self.typical = np.stack([rng.choice(m.services, 3, replace=False, p=pop) for _ in range(m.users)])
        names = m.service_names
        self.roles: list[list[str]] = []
        for i in range(m.users):
            mine = {names[s] for s in self.typical[i, : self.n_typical[i]]}
            roles = ["user"]
            if "PatientRecords" in mine and rng.random() < 0.95:
                roles.append("medical_staff")
            if "PaymentService" in mine and rng.random() < 0.95:
                roles.append("payment_processor")
            if rng.random() < 0.02:
                roles.append("admin")
            self.roles.append(roles)
        self.ips = [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(m.users)]
        self.base_ms = rng.uniform(40, 150, m.services)
        self.base_ms[1] = 100.0  # the drifting service: a known start so its drift crosses 5 s p95
        planted = {m.planted[k] for k in ("volume_user", "new_services_user", "exfiltration_user")}
        self.planted_idx = np.array(sorted(int(p.split("-")[1]) for p in planted))

    def expected_per_hour(self, m: HistoryModel, user: int) -> float:
        return float(m.events * self.weights[user] / m.hours)


def planted_events(m: HistoryModel, pop: Population) -> list[dict[str, Any]]:
    """The anomalies of the last 24 hours, as audit events."""
    rng = np.random.default_rng([m.seed, 2])
    names, out = m.service_names, []
    p = m.planted
    vol = int(p["volume_user"].split("-")[1])
    per_hour = max(int(12 * pop.expected_per_hour(m, vol)), 150)
    for h in range(6):  # six hours of a tenfold-plus jump
        t0 = m.end - 20 * HOUR + h * HOUR
        svc = names[int(pop.typical[vol, 0])]
        for t in np.sort(rng.uniform(t0, t0 + HOUR, per_hour)):
            out.append(_call(float(t), p["volume_user"], svc, "list", 60.0, None, 900, pop.ips[vol]))
    new = int(p["new_services_user"].split("-")[1])
    usual = set(pop.typical[new].tolist())
    fresh = [s for s in range(m.services) if s not in usual][:4]
    t0 = m.end - 10 * HOUR
    for j, s in enumerate(fresh):
        for k in range(5):
            out.append(_call(t0 + j * 300 + k * 20, p["new_services_user"], names[s], "get", 80.0, None, 700,
                             pop.ips[new]))
    ex = int(p["exfiltration_user"].split("-")[1])
    for k in range(4):
        out.append(_access(m.end - 6 * HOUR + k * 240, p["exfiltration_user"], names[0], "users", "read", 6000,
                           pop.roles[ex]))
    victim = user_name(3)
    for k in range(25):  # a brute-force burst: 25 failures in about two minutes from one address
        out.append(_auth(m.end - 16 * HOUR + k * 5, victim, BRUTE_FORCE_IP, False))
    return out


def _call(ts: float, user: str, service: str, method: str, ms: float, code: int | None, size: int,
          ip: str) -> dict[str, Any]:
    return {schema.KIND: schema.CALL, schema.EVENT_TYPE: "ServiceFunctionCall", schema.TS: ts, schema.USER_ID: user,
            schema.SERVICE: service, schema.METHOD: method, schema.DURATION_MS: round(ms, 3),
            schema.SUCCESS: code is None, schema.RESULT_CODE: code, schema.PAYLOAD_BYTES: size,
            schema.IP_ADDRESS: ip}


def _access(ts: float, user: str, service: str, collection: str, operation: str, records: int,
            roles: list[str]) -> dict[str, Any]:
    return {schema.KIND: schema.DATA_ACCESS, schema.EVENT_TYPE: "DataAccess", schema.TS: ts, schema.USER_ID: user,
            schema.SERVICE: service, schema.COLLECTION: collection, schema.OPERATION: operation,
            schema.RECORD_COUNT: records, schema.ROLES: roles}


def _auth(ts: float, user: str, ip: str, success: bool) -> dict[str, Any]:
    return {schema.KIND: schema.AUTH, schema.EVENT_TYPE: "Authentication", schema.TS: ts, schema.USER_ID: user,
            schema.IP_ADDRESS: ip, schema.SUCCESS: success, schema.METHOD: "password"}


def hour_counts(m: HistoryModel, planted: int) -> np.ndarray:
    """Normal events per hour of the history: the intensity curve, rounded so they sum exactly."""
    first = int(m.start // HOUR)
    weights = intensity(np.arange(first, first + m.hours))
    want = max(m.events - planted, 0) * weights / weights.sum()
    counts = np.floor(want).astype("int64")
    short = max(m.events - planted, 0) - int(counts.sum())
    counts[np.argsort(counts - want)[:short]] += 1  # largest remainders get the leftovers
    return counts


def latency_factor(m: HistoryModel, service: int, ts: np.ndarray) -> np.ndarray:
    """Latency multiplier: the drifting service climbs from 1x to 80x over the last 72 hours."""
    if service != 1:
        return np.ones_like(ts)
    ramp = np.clip((ts - (m.end - 72 * HOUR)) / (72 * HOUR), 0.0, 1.0)
    return 1.0 + 79.0 * ramp


def error_rate(m: HistoryModel, service: int, ts: np.ndarray) -> np.ndarray:
    """Share of calls failing with an internal error: 15 % for the erroring service in the last day."""
    base = np.full(ts.shape, 0.005)
    if service == 2:
        base = np.where(ts >= m.end - 24 * HOUR, 0.15, base)
    return base


def hour_events(m: HistoryModel, pop: Population, hour: int, n: int) -> list[dict[str, Any]]:
    """The normal events of epoch hour ``hour`` (``n`` of them), ordered by time."""
    if n <= 0:
        return []
    rng = np.random.default_rng([m.seed, 3, hour])
    ts = np.sort(rng.uniform(hour * HOUR, (hour + 1) * HOUR, n))
    users = rng.choice(m.users, n, p=pop.weights)
    kinds = rng.choice(4, n, p=KIND_P)
    pick = rng.integers(0, 3, n) % pop.n_typical[users]
    services = pop.typical[users, pick]
    stray = (rng.random(n) < 0.005) & ~np.isin(users, pop.planted_idx)
    services = np.where(stray, rng.integers(0, m.services, n), services)
    lat = np.exp(rng.normal(0.0, 0.6, n)) * pop.base_ms[services]
    for s in (1,):
        sel = services == s
        lat[sel] *= latency_factor(m, s, ts[sel])
    fail_p = np.where(services == 2, error_rate(m, 2, ts), 0.005)
    draw = rng.random(n)
    codes = np.where(draw < fail_p, -32603, np.where(draw < fail_p + 0.003, -32007,
                                                      np.where(draw < fail_p + 0.013, -32001, 0)))
    sizes = np.exp(rng.normal(7.5, 0.8, n)).astype("int64")
    methods = rng.integers(0, len(METHODS), n)
    ops = rng.choice(len(OPERATIONS), n, p=OPERATION_P)
    records = 1 + rng.geometric(0.4, n)
    auth_ok = rng.random(n) >= 0.03
    names, cols = m.service_names, m.collections
    out: list[dict[str, Any]] = []
    for i, (t, u, k, s) in enumerate(zip(ts.tolist(), users.tolist(), kinds.tolist(), services.tolist(),
                                         strict=True)):
        user = user_name(u)
        if k == 0:
            code = int(codes[i]) or None
            out.append(_call(t, user, names[s], METHODS[methods[i]], float(lat[i]), code, int(sizes[i]),
                             pop.ips[u]))
        elif k == 1:
            out.append(_access(t, user, names[s], cols[s], OPERATIONS[ops[i]], int(records[i]), pop.roles[u]))
        elif k == 2:
            out.append(_auth(t, user, pop.ips[u], bool(auth_ok[i])))
        else:
            out.append({schema.KIND: schema.AUTHZ, schema.EVENT_TYPE: "Authorization", schema.TS: t,
                        schema.USER_ID: user, schema.SERVICE: names[s], schema.METHOD: METHODS[methods[i]],
                        schema.ALLOWED: bool(auth_ok[i]), schema.ROLES: pop.roles[u]})
    return out


def subject_requests(m: HistoryModel) -> list[dict[str, Any]]:
    """GDPR data-subject requests spread over the history (a few still pending or late)."""
    rng = np.random.default_rng([m.seed, 4])
    n = max(5, m.events // 100_000)
    out = []
    for i, t in enumerate(np.sort(rng.uniform(m.start, m.end, n)).tolist()):
        days = float(rng.choice([3, 7, 12, 20, 25, 40]))
        done = t + days * DAY <= m.end
        out.append({schema.KIND: schema.DATA_SUBJECT_REQUEST, schema.EVENT_TYPE: "DataSubjectRequest", schema.TS: t,
                    schema.USER_ID: user_name(int(rng.integers(0, m.users))),
                    schema.REQUEST_TYPE: str(rng.choice(["access", "erasure", "rectification", "portability"])),
                    schema.STATUS: "completed" if done else "received", schema.REQUEST_ID: f"dsr-{m.seed}-{i}",
                    schema.DAYS_TO_COMPLETE: days if done else None})
    return out


def hour_rollups(m: HistoryModel, pop: Population, hour: int) -> list[MetricRollup]:
    """Per-service, per-minute rollups of epoch hour ``hour`` (the traffic the audit log samples)."""
    rng = np.random.default_rng([m.seed, 5, hour])
    lam = float(intensity(np.array([hour]))[0])
    minutes = hour * HOUR + 60.0 * np.arange(60)
    out: list[MetricRollup] = []
    names = m.service_names
    for s in range(m.services):
        calls = rng.poisson(60 * lam, 60)
        total = int(calls.sum())
        minute_of = np.repeat(np.arange(60), calls)
        t = minutes[minute_of] + rng.uniform(0, 60, total)
        lat = np.exp(rng.normal(0.0, 0.6, total)) * pop.base_ms[s] * latency_factor(m, s, t)
        fail = rng.random(total) < error_rate(m, s, t)
        keys = sketch_keys(lat)
        conc = (32.0 if s == 3 else 2.0 + 4.0 * lam) * rng.uniform(0.9, 1.1, 60)
        # One unique over (minute, key) pairs for the whole hour, then split per minute.
        pair = minute_of.astype("int64") * _KEY_SPAN + (keys - _KEY_MIN)
        uniq, n = np.unique(pair, return_counts=True)
        minute_idx, bucket = uniq // _KEY_SPAN, uniq % _KEY_SPAN + _KEY_MIN
        cuts = np.searchsorted(minute_idx, np.arange(61))
        fails = np.bincount(minute_of[fail], minlength=60)
        name = names[s]
        for j in range(60):
            ks, ns = bucket[cuts[j]:cuts[j + 1]].tolist(), n[cuts[j]:cuts[j + 1]].tolist()
            zero = ns.pop(0) if ks and ks[0] == ZERO_KEY else 0
            if zero:
                ks.pop(0)
            failures = int(fails[j])
            outcomes = {"ok": int(calls[j]) - failures}
            if failures:
                outcomes["-32603"] = failures
            out.append(MetricRollup(service=name, minute=float(minutes[j]), calls=int(calls[j]),
                                    outcomes=outcomes, latency_sketch=encode_counts(ks, ns, zero_count=zero),
                                    concurrency_max=math.ceil(conc[j] * 1.5),
                                    concurrency_avg=round(float(conc[j]), 3), timeouts=0))
    return out


def service_resources(m: HistoryModel) -> dict[str, dict[str, Any]]:
    """Instances and utilisation per service (what a Kubernetes metrics check would report)."""
    rng = np.random.default_rng([m.seed, 6])
    out = {}
    for s, name in enumerate(m.service_names):
        doc = {"instances": 2, "cpuUtilisation": round(float(rng.uniform(0.35, 0.6)), 3),
               "memUtilisation": round(float(rng.uniform(0.4, 0.6)), 3)}
        if s == 3:
            doc["cpuUtilisation"] = 0.88
        if s == 7:
            doc.update(instances=4, cpuUtilisation=0.08, memUtilisation=0.15)
        out[name] = doc
    return out
