"""Log output of the drivers and of their Ray workers: ``text`` (the default) or ``json`` (one
object per line, Ray's encoding: ``asctime``, ``levelname``, ``message``, ``filename``, ``lineno``,
and in workers the job, node, worker, actor and task ids), at one level for all of them.

One configuration (Ray's ``LoggingConfig``) serves both: ``ray.init(logging_config=…)`` applies it
to every worker of the job and to the driver; :func:`configure` applies it to the driver before
Ray starts (and to drivers that never start Ray).
"""

from __future__ import annotations

import logging
from typing import Any

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")


def log_level(value: str) -> str:
    """``--log-level``: one of LEVELS, any case."""
    level = value.strip().upper()
    if level not in LEVELS:
        raise ValueError(f"one of {', '.join(LEVELS).lower()}")
    return level


def log_format(value: str) -> str:
    """``--log-format``: text or json."""
    fmt = value.strip().lower()
    if fmt not in FORMATS:
        raise ValueError("text or json")
    return fmt


def ray_logging_config(level: str, fmt: str) -> Any:
    """The job's logging configuration, for ``ray.init(logging_config=…)``."""
    import ray

    return ray.LoggingConfig(encoding=fmt.upper(), log_level=level)


def configure(level: str, fmt: str) -> None:
    """This process's root logger, as Ray configures its workers' (Ray 2.60's ``_apply``: the
    method ``ray.init`` itself calls on the driver). Idempotent: it replaces the root's handlers, so
    calling it again after ``ray.init`` (which adds its own) leaves one."""
    logging.getLogger().handlers.clear()
    ray_logging_config(level, fmt)._apply()
