"""Where the supervisor places the next service monitor: on the alive node hosting the fewest
monitors, ties broken by node id, so monitors spread evenly over the nodes whatever order Ray
reports them in (Ray's own ``SPREAD`` strategy is best effort and can put them all on one node).

Pure: the caller passes the alive nodes and where the monitors it created run; the decision is a
node id (or ``None``: leave the placement to Ray, as on a single node)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping


def monitors_per_node(placed: Mapping[str, str], alive: Iterable[str]) -> dict[str, int]:
    """Monitors per alive node, from ``placed`` (monitor -> the node it runs on). Every alive node is
    present (0 when it hosts none); a monitor on a node no longer alive is not counted (Ray is
    restarting it somewhere, not yet known)."""
    counts = Counter(placed.values())
    return {node: counts.get(node, 0) for node in alive}


def place_monitor(alive: Iterable[str], hosted: Mapping[str, int]) -> str | None:
    """The node for the next monitor: among ``alive`` nodes, the one with the fewest monitors in
    ``hosted`` (missing: none), the smallest node id among equals. ``None`` with fewer than two alive
    nodes: there is nothing to spread, and Ray places the actor as it always did."""
    nodes = sorted(set(alive))
    if len(nodes) < 2:
        return None
    return min(nodes, key=lambda n: (hosted.get(n, 0), n))
