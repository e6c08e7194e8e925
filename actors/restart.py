"""The restart path every actor shares: Ray restarts a crashed actor (``max_restarts=-1``) by
running its constructor again, and nothing else. An actor that needs ``start()`` (connections,
loops, state from the store) queues it on itself from the constructor when Ray restarted it."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import ray

logger = logging.getLogger("sfa_ops.restart")


def restarted_by_ray() -> bool:
    """True inside an actor Ray is restarting (its process died); False on first creation or
    outside Ray."""
    try:
        with warnings.catch_warnings():  # Ray 2.60 warns about its own use of a deprecated accessor
            warnings.simplefilter("ignore")
            return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not in an actor (in-process use)
        return False


def start_if_restarted(what: str, *args: Any, method: str = "start") -> bool:
    """From an actor's constructor: when Ray restarted it, queue ``method(*args)`` (default
    ``start``) on itself (it runs right after the constructor), so the actor is whole again without
    anyone asking. Nobody waits for that call: a ``method`` that can fail should retry itself."""
    if not restarted_by_ray():
        return False
    logger.warning("%s was restarted by Ray; starting again", what)
    getattr(ray.get_runtime_context().current_actor, method).remote(*args)
    return True
