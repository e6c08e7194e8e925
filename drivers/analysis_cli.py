"""What the analysis drivers (generate, baselines, recommend, report) share: time options,
joining Ray, opening the store with a clear exit-2 message, the closing summary, and the one
``job_main`` the batch jobs (baselines, recommend, report) run as their ``main()``."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from adapters.runtime.logs import ray_logging_config
from adapters.store import Store, StoreConfigError, StoreError, StoreUnavailable, open_store, redact_url
from drivers.options import Option, OptionError, configure_logs, fail, resolve, seconds
from protocol.base import epoch_from_rfc3339, rfc3339_from_epoch

REPO_ROOT = Path(__file__).resolve().parent.parent
REPORTS_DIR = Path("var/reports")


def parse_time(value: str) -> float:
    """Epoch seconds from ``now``, epoch seconds, ``2024-03-01`` or ``2024-03-01T12:00:00Z``
    (a time without a zone is UTC)."""
    text = value.strip()
    if text == "now":
        return time.time()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number) or number < 0:
            raise ValueError("epoch seconds must be a finite non-negative number")
        return number
    try:
        return epoch_from_rfc3339(text)
    except ValueError as exc:
        raise ValueError("expected a date like 2024-03-01, 2024-03-01T12:00:00Z, epoch seconds or 'now'") from exc


def duration(value: str | float) -> float:
    """Seconds from an option value: a converted number, or a default written as ``30d``/``24h``."""
    return float(value) if isinstance(value, int | float) else seconds(value)


def iso(ts: float) -> str:
    """RFC 3339 UTC (``protocol.base``'s one format)."""
    return rfc3339_from_epoch(ts)


def ensure_ray(address: str | None, *, num_cpus: int | None = None, logs: Mapping[str, Any] | None = None) -> str:
    """Join ``address`` (or start a local Ray) unless Ray is already up in this process; returns
    a one-line description for the summary. ``logs``: the resolved --log-level/--log-format, for
    the job's workers too."""
    import ray

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": False}
        if logs is not None:
            kwargs["logging_config"] = ray_logging_config(logs["log_level"], logs["log_format"])
        if address:
            kwargs["address"] = address
            if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:  # outside `ray job submit`: ship the code
                kwargs["runtime_env"] = {"working_dir": str(REPO_ROOT),
                                         "excludes": ["var/", ".venv/", ".git/", "**/__pycache__/"]}
        else:
            # A fresh local Ray, never whatever `ray start` cluster happens to run on this machine
            # (use --ray-address auto to join that one).
            kwargs["address"] = "local"
            if num_cpus is not None:
                kwargs["num_cpus"] = num_cpus
        ray.init(**kwargs)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = ray.cluster_resources().get("CPU", 0)
    return f"{len(nodes)} node(s), {cpus:g} CPU"


async def open_checked(url: str) -> Store:
    """The opened store; OptionError (exit 2) with the reason when the URL is wrong or the
    database cannot be reached."""
    try:
        store = open_store(url)
    except StoreConfigError as exc:
        raise OptionError(f"--store: {exc}") from exc
    try:
        await store.open()
    except StoreUnavailable as exc:
        raise OptionError(f"--store {redact_url(url)}: cannot reach the database ({exc})") from exc
    except StoreError as exc:
        raise OptionError(f"--store {redact_url(url)}: {exc}") from exc
    return store


def print_summary(title: str, rows: list[tuple[str, Any]]) -> None:
    """The closing summary on stdout: a title and aligned ``key: value`` lines."""
    width = max((len(k) for k, _ in rows), default=0)
    print(f"\n{title}")
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")


Summary = tuple[str, list[tuple[str, Any]]]


def job_main(
    argv: Sequence[str] | None, *, prog: str, description: str, options: Sequence[Option],
    run: Callable[[dict[str, Any]], dict[str, Any]], summary: Callable[[dict[str, Any]], Summary],
    usage: str | None = None,
) -> int:
    """A batch job's ``main()``: options (``usage`` is the program name argparse shows), logs, ``run``,
    then the closing summary; bad options and a failing store exit 2 with one line on stderr."""
    try:
        opts = resolve(options, argv, prog=usage or prog, description=description)
        configure_logs(opts)
        out = run(opts)
    except OptionError as exc:
        fail(prog, str(exc))
    except StoreError as exc:
        fail(prog, f"the store failed: {exc}")
    title, rows = summary(out)
    print_summary(title, rows)
    return 0
