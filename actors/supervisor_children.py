"""The actors the supervisor owns, created through Ray: :class:`RayChildren` is what
``SupervisorBody`` uses by default to start (or find again, after its own restart) the alert
manager, the service monitors, the security actors, the observers and the infrastructure checkers.
A unit test gives the body an in-process stand-in with the same methods instead."""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Any, Protocol

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.settings import OperateSettings
from policies.supervision.placement import monitors_per_node, place_monitor

logger = logging.getLogger("sfa_ops.supervisor")


def named(actor_class: Any, name: str, namespace: str, *, detached: bool = False, strategy: Any = "SPREAD",
          **resources: float) -> Any:
    """A named actor's options: the existing one if it is alive (a restarted supervisor finds its
    observers and monitors again), else a new one. ``detached``: it does not die with its creator
    (the supervisor's actors outlive a crash of the supervisor's process; its ``stop`` kills them).
    ``strategy``: Ray's scheduling strategy for a new one (an existing one stays where it is);
    ``resources`` (e.g. ``num_cpus``) override the class's."""
    # SPREAD: on a multi-node cluster losing one node loses a share of the actors, not all of them.
    opts: dict[str, Any] = ({"lifetime": "detached"} if detached else {}) | resources
    return actor_class.options(name=name, namespace=namespace, get_if_exists=True, scheduling_strategy=strategy,
                               **opts)


def child(actor_class: Any, name: str, namespace: str, *, strategy: Any = "SPREAD", **resources: float) -> Any:
    """An actor the supervisor owns: detached, so a kill -9 of the supervisor's process loses none
    of them (the restarted supervisor finds them by name)."""
    return named(actor_class, name, namespace, detached=True, strategy=strategy, **resources)


# Ray (2.60) ignores a soft node affinity for an actor that requests no resources at all (measured
# on a 3-node cluster_utils cluster: num_cpus=0 monitors landed on any node), and honours it for
# one that requests some: a placed monitor asks for a thousandth of a CPU (1,000 monitors: 1 CPU).
PLACED_MONITOR_CPUS = 0.001


def monitor_options(node: str | None) -> dict[str, Any]:
    """Ray options for a monitor placed on ``node`` (``place_monitor``'s decision): a soft node
    affinity, so Ray starts it elsewhere if that node is gone or busy (``_spill_on_unavailable``:
    never waits for that node's CPU) and restarts it on a surviving node when its node is lost;
    SPREAD and the class's resources (none) when there is no decision (a single node)."""
    if node is None:
        return {"strategy": "SPREAD"}
    return {"strategy": NodeAffinitySchedulingStrategy(node, soft=True, _spill_on_unavailable=True),
            "num_cpus": PLACED_MONITOR_CPUS}


def alive_nodes() -> list[str]:
    """The ids of the cluster's alive nodes (one GCS query)."""
    return [n["NodeID"] for n in ray.nodes() if n.get("Alive") and n.get("NodeID")]


def _node_id(_actor: Any) -> str:  # run inside an actor by ``__ray_call__``: the node it runs on
    return ray.get_runtime_context().get_node_id()


class Children(Protocol):
    """Handles to the supervisor's actors (their methods are called as ``handle.method.remote(...)``)."""

    def alertmanager(self) -> Any | None: ...
    def monitor(self, service: str) -> Any: ...
    def security(self) -> dict[str, Any]: ...
    def observer(self, index: int) -> Any: ...
    def checkers(self) -> dict[str, Any]: ...
    def kill(self, handle: Any) -> None: ...


class RayChildren:
    """:class:`Children` as detached named Ray actors of ``settings``' namespace."""

    def __init__(self, settings: OperateSettings) -> None:
        self.settings = settings
        # Where each monitor this supervisor created runs: the node placed on, then the node the
        # monitor reports once (asked at creation, read when it has answered; never per message).
        self.monitor_nodes: dict[Any, str] = {}
        self._asked: dict[Any, concurrent.futures.Future[str]] = {}

    def alertmanager(self) -> Any | None:
        try:
            from actors.alertmanager import AlertManager
        except ImportError:
            logger.warning("alert manager actor not available; alerts are published by the supervisor")
            return None
        s = self.settings
        return child(AlertManager, s.actor_name("alertmanager"), s.namespace).remote(s)

    def monitor(self, service: str) -> Any:
        from actors.monitor import ServiceMonitor

        s = self.settings
        self._learn_monitor_nodes()
        alive = alive_nodes()
        node = place_monitor(alive, monitors_per_node(self.monitor_nodes, alive))
        handle = child(ServiceMonitor, s.actor_name("monitor", service), s.namespace,
                       **monitor_options(node)).remote(s, service)
        if node is not None:
            self.monitor_nodes[handle] = node
        self._asked[handle] = handle.__ray_call__.remote(_node_id).future()
        return handle

    def _learn_monitor_nodes(self) -> None:
        """The nodes the monitors asked at creation have reported so far (without waiting)."""
        for handle, answer in list(self._asked.items()):
            if answer.done():
                del self._asked[handle]
                if answer.exception() is None:
                    self.monitor_nodes[handle] = answer.result()

    def security(self) -> dict[str, Any]:
        """Incident responder first (the analyst hands it alerts), then analyst and audit writer;
        observers find the analyst and the writer by name."""
        from actors.audit_writer import AuditWriter
        from actors.incident_responder import IncidentResponder
        from actors.security_analyst import SecurityAnalyst
        from actors.security_common import SecurityOptions
        from adapters.enforcement.actions import EnforcementConfig

        s = self.settings
        opts = SecurityOptions(enforcement=EnforcementConfig(
            redis_url=s.enforcement_redis, emqx_url=s.emqx_api, emqx_api_key=s.emqx_api_key,
            emqx_api_secret=s.emqx_api_secret))
        me = ray.get_runtime_context().current_actor
        responder = child(IncidentResponder, s.actor_name("responder"), s.namespace).remote(s, opts, supervisor=me)
        analyst = child(SecurityAnalyst, s.actor_name("analyst"), s.namespace).remote(
            s, opts, responder=responder, supervisor=me)
        audit = child(AuditWriter, s.actor_name("audit"), s.namespace).remote(s, opts, supervisor=me)
        return {"responder": responder, "analyst": analyst, "audit": audit}

    def observer(self, index: int) -> Any:
        from actors.observer import Observer

        s = self.settings
        return child(Observer, s.actor_name("observer", str(index)), s.namespace).remote(s, index)

    def checkers(self) -> dict[str, Any]:
        """One InfraChecker per configured component (the broker's always runs)."""
        from actors.infra_checker import InfraChecker, components_for

        s = self.settings
        return {c: child(InfraChecker, s.actor_name("infra", c), s.namespace).remote(s, c) for c in components_for(s)}

    def kill(self, handle: Any) -> None:
        self.monitor_nodes.pop(handle, None)
        self._asked.pop(handle, None)
        ray.kill(handle, no_restart=True)
