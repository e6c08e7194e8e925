"""Ray tasks of the analysis jobs: each reads one time partition of the audit log from the store
(its own connection, opened from the URL) and returns small partial results plus what it cost.

``run_partitions`` fans the partitions out as Ray tasks, folds the results as they arrive (so the
driver holds one running total, not every partial) and reports progress. ``compute_local`` is the
same computation in the calling process without Ray (the benchmark's single-process baseline).

Every partition function is ``fn(url, since, until) -> result``; peak memory of a worker follows
its partition (rows read), not the history.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from adapters.store import open_store
from adapters.store.analysis import Field, audit_frame
from policies.analysis.baselines import Partials, partials
from policies.audit import schema
from policies.breaker.outcomes import is_failure

T = TypeVar("T")
R = TypeVar("R")

CALL_KIND = schema.CALL
ACCESS_KIND = schema.DATA_ACCESS
BASELINE_FIELDS = (
    Field(name="user", key=schema.USER_ID), Field(name="service", key=schema.SERVICE),
    Field(name="duration_ms", key=schema.DURATION_MS, type="float"),
    Field(name="code", key=schema.RESULT_CODE, type="float"),
    Field(name="records", key=schema.RECORD_COUNT, type="float"),
)


def rss_peak_mb() -> float:
    """This process's resident-set high-water mark (VmHWM) in MiB; NaN where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


@dataclass(frozen=True, kw_only=True)
class TaskStats:
    """What one partition cost and where it ran."""

    since: float
    until: float
    rows: int
    seconds: float
    rss_peak_mb: float
    pid: int
    node_id: str


def read_frame(url: str, since: float, until: float, kinds: Sequence[str], fields: Sequence[Field]) -> pd.DataFrame:
    """One partition of audit events as a frame (opens and closes its own store connection)."""

    async def read() -> pd.DataFrame:
        store = open_store(url, pool_min_size=1, pool_max_size=1, command_timeout=3600.0)
        await store.open()
        try:
            return await audit_frame(store, since=since, until=until, kinds=kinds, fields=fields)
        finally:
            await store.close()

    return asyncio.run(read())


def failure_flags(codes: pd.Series) -> np.ndarray:
    """Which error codes count against the service (NaN is a success), one lookup per distinct code."""
    values = codes.to_numpy(dtype="float64")
    out = np.zeros(len(values), dtype=bool)
    present = ~np.isnan(values)
    for code in np.unique(values[present]):
        if is_failure(int(code)):
            out[values == code] = True
    return out


def baseline_partials(url: str, since: float, until: float) -> Partials:
    """The baselines job's partial aggregates of ``[since, until)``."""
    frame = read_frame(url, since, until, (CALL_KIND, ACCESS_KIND), BASELINE_FIELDS)
    return partials_of_frame(frame)


def partials_of_frame(frame: pd.DataFrame) -> Partials:
    """Split a frame of call and data-access rows and aggregate it."""
    is_call = (frame["kind"] == CALL_KIND).to_numpy()
    calls = frame.loc[is_call, ["ts", "user", "service", "duration_ms", "code"]].reset_index(drop=True)
    calls["failure"] = failure_flags(calls["code"])
    calls["duration_ms"] = calls["duration_ms"].fillna(0.0)
    access = frame.loc[~is_call, ["ts", "user", "records"]].reset_index(drop=True)
    access["records"] = access["records"].fillna(0).astype("int64")
    return partials(calls, access)


def _run_one(fn: Callable[[str, float, float], T], url: str, since: float, until: float) -> tuple[T, TaskStats]:
    started = time.perf_counter()
    result = fn(url, since, until)
    try:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    except Exception:
        node = "local"
    rows = int(getattr(result, "rows", 0) or 0)
    return result, TaskStats(since=since, until=until, rows=rows, seconds=time.perf_counter() - started,
                             rss_peak_mb=rss_peak_mb(), pid=os.getpid(), node_id=node)


def run_partitions(
    fn: Callable[[str, float, float], T], url: str, parts: Sequence[tuple[float, float]],
    fold: Callable[[R | None, list[T]], R], *, on_done: Callable[[TaskStats], None] | None = None,
    max_in_flight: int | None = None, fold_every: int = 8,
) -> tuple[R | None, list[TaskStats]]:
    """Run ``fn`` over each partition as a Ray task (one CPU each) and fold results as they finish.

    At most ``max_in_flight`` tasks are submitted at once (default: twice the cluster's CPUs), so
    finished partials never pile up in the object store. Results are folded ``fold_every`` at a
    time: one group-by over several partials costs about what one over two does, and the driver's
    folding competes with the workers for CPU.
    """
    import ray

    remote: Any = ray.remote(num_cpus=1, max_retries=2)(_run_one)
    limit = max_in_flight or max(2, int(ray.cluster_resources().get("CPU", 1)) * 2)
    todo = list(parts)
    running: list[Any] = []
    total: R | None = None
    stats: list[TaskStats] = []
    pending: list[T] = []
    while todo or running:
        while todo and len(running) < limit:
            since, until = todo.pop(0)
            running.append(remote.remote(fn, url, since, until))
        done, running = ray.wait(running, num_returns=1)
        result, st = ray.get(done[0])
        pending.append(result)
        if len(pending) >= fold_every or not (todo or running):
            total, pending = fold(total, pending), []
        stats.append(st)
        if on_done is not None:
            on_done(st)
    return total, stats


def compute_local(
    fn: Callable[[str, float, float], T], url: str, since: float, until: float
) -> tuple[T, TaskStats]:
    """``fn`` over the whole range in this process (no Ray): the single-process baseline."""
    return _run_one(fn, url, since, until)


def fold_partials(total: Partials | None, new: list[Partials]) -> Partials:
    """``fold`` for ``run_partitions`` over baseline partials."""
    from policies.analysis.baselines import combine

    return combine(*([] if total is None else [total]), *new)


MESSAGE_FIELDS = (
    Field(name="user", key=schema.USER_ID), Field(name="service", key=schema.SERVICE),
    Field(name="payload_bytes", key=schema.PAYLOAD_BYTES, type="float"),
)


@dataclass(frozen=True, kw_only=True)
class MessagePartials:
    """Per-topic traffic of a partition: messages per (service, user) and payload-size sketch
    buckets per service (sizes bucketed like latencies, 1 byte standing for 1 ms)."""

    publishers: pd.DataFrame  # service, user -> n
    sizes: pd.DataFrame  # service, key -> n
    rows: int = 0


def message_partials(url: str, since: float, until: float) -> MessagePartials:
    """The recommend job's message-pattern partials of ``[since, until)``."""
    from policies.analysis.baselines import sketch_keys

    frame = read_frame(url, since, until, (CALL_KIND,), MESSAGE_FIELDS)
    pubs = frame.groupby(["service", "user"]).size().rename("n").reset_index()
    sizes = pd.DataFrame({"service": frame["service"].to_numpy(),
                          "key": sketch_keys(frame["payload_bytes"].fillna(0).to_numpy())})
    size_counts = sizes.groupby(["service", "key"]).size().rename("n").reset_index()
    return MessagePartials(publishers=pubs, sizes=size_counts, rows=len(frame))


def fold_messages(total: MessagePartials | None, new: list[MessagePartials]) -> MessagePartials:
    """``fold`` for ``run_partitions`` over message partials (group-by sums)."""
    parts = ([] if total is None else [total]) + new
    pubs = pd.concat([p.publishers for p in parts]).groupby(["service", "user"])["n"].sum().reset_index()
    sizes = pd.concat([p.sizes for p in parts]).groupby(["service", "key"])["n"].sum().reset_index()
    return MessagePartials(publishers=pubs, sizes=sizes, rows=sum(p.rows for p in parts))


REPORT_KINDS = (schema.DATA_ACCESS, schema.AUTH, schema.AUTHZ, schema.DATA_SUBJECT_REQUEST)
REPORT_FIELDS = (
    Field(name="user", key=schema.USER_ID), Field(name="service", key=schema.SERVICE),
    Field(name="collection", key=schema.COLLECTION), Field(name="operation", key=schema.OPERATION),
    Field(name="records", key=schema.RECORD_COUNT, type="float"), Field(name="roles", key=schema.ROLES),
    Field(name="ip", key=schema.IP_ADDRESS), Field(name="success", key=schema.SUCCESS, type="bool"),
    Field(name="allowed", key=schema.ALLOWED, type="bool"), Field(name="method", key=schema.METHOD),
    Field(name="request_type", key=schema.REQUEST_TYPE), Field(name="status", key=schema.STATUS),
    Field(name="days_to_complete", key=schema.DAYS_TO_COMPLETE, type="float"),
    Field(name="request_id", key=schema.REQUEST_ID),
)
ACTIVITY_BUCKET_S = 300.0


@dataclass(frozen=True, kw_only=True)
class ReportPartials:
    """Compliance and security inputs of a partition: the (rare) security-relevant events as
    rows, and calls per (user, 5-minute bucket, service) for the activity rules."""

    events: pd.DataFrame
    activity: pd.DataFrame  # user, bucket, service -> n
    rows: int = 0


def report_partials(url: str, since: float, until: float) -> ReportPartials:
    """The report job's partials of ``[since, until)``."""
    events = read_frame(url, since, until, REPORT_KINDS, REPORT_FIELDS)
    calls = read_frame(url, since, until, (CALL_KIND,), (Field(name="user", key=schema.USER_ID),
                                                       Field(name="service", key=schema.SERVICE)))
    bucket = np.floor(calls["ts"].to_numpy() / ACTIVITY_BUCKET_S).astype("int64")
    activity = (pd.DataFrame({"user": calls["user"].to_numpy(), "bucket": bucket,
                              "service": calls["service"].to_numpy()})
                .groupby(["user", "bucket", "service"]).size().rename("n").reset_index())
    return ReportPartials(events=events, activity=activity, rows=len(events) + len(calls))


def fold_report(total: ReportPartials | None, new: list[ReportPartials]) -> ReportPartials:
    """``fold`` for ``run_partitions`` over report partials."""
    parts = ([] if total is None else [total]) + new
    activity = (pd.concat([p.activity for p in parts])
                .groupby(["user", "bucket", "service"])["n"].sum().reset_index())
    return ReportPartials(events=pd.concat([p.events for p in parts], ignore_index=True), activity=activity,
                          rows=sum(p.rows for p in parts))
