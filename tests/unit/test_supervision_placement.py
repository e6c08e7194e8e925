"""Where the supervisor places service monitors (``policies.supervision.placement``), and the Ray
scheduling strategy it turns that decision into (``actors.supervisor_children.monitor_options``)."""

from __future__ import annotations

import itertools
from collections import Counter

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.supervisor_children import PLACED_MONITOR_CPUS, monitor_options
from policies.supervision.placement import monitors_per_node, place_monitor

HEAD, W1, W2 = "aa" * 28, "bb" * 28, "cc" * 28  # Ray node ids: 28 bytes in hex


def place_all(alive: list[str], services: int, placed: dict[str, str] | None = None) -> dict[str, str]:
    """Places ``services`` monitors one after the other, as the supervisor does, each decision
    recorded before the next (monitor name -> node)."""
    placed = dict(placed or {})
    for i in range(len(placed), len(placed) + services):
        node = place_monitor(alive, monitors_per_node(placed, alive))
        assert node is not None
        placed[f"m{i}"] = node
    return placed


def test_least_loaded_node_wins() -> None:
    assert place_monitor([HEAD, W1, W2], {HEAD: 2, W1: 0, W2: 1}) == W1
    assert place_monitor([HEAD, W1, W2], {HEAD: 1, W1: 1}) == W2  # missing: hosts none


def test_ties_broken_by_node_id_whatever_the_order_given() -> None:
    for order in itertools.permutations([W2, HEAD, W1]):
        assert place_monitor(list(order), {}) == HEAD
        assert place_monitor(list(order), {HEAD: 1}) == W1


def test_three_monitors_on_three_nodes_one_each() -> None:
    """The node-loss e2e case: SPREAD once put all three on the head node."""
    assert sorted(place_all([HEAD, W1, W2], 3).values()) == [HEAD, W1, W2]


def test_sixty_monitors_spread_evenly_in_any_node_order() -> None:
    for order in itertools.permutations([HEAD, W1, W2]):
        assert Counter(place_all(list(order), 60).values()) == {HEAD: 20, W1: 20, W2: 20}
    counts = Counter(place_all([HEAD, W1, W2], 61).values())
    assert max(counts.values()) - min(counts.values()) == 1


def test_a_lost_node_no_longer_counts_and_gets_nothing() -> None:
    placed = place_all([HEAD, W1, W2], 6)
    assert monitors_per_node(placed, [HEAD, W2]) == {HEAD: 2, W2: 2}  # W1's two are restarting elsewhere
    after = place_all([HEAD, W2], 4, placed)
    new = Counter(node for name, node in after.items() if name not in placed)
    assert W1 not in new
    assert sum(new.values()) == 4


def test_a_new_node_fills_up_first() -> None:
    placed = place_all([HEAD, W1], 4)
    more = place_all([HEAD, W1, W2], 2, placed)
    assert [more[k] for k in more if k not in placed] == [W2, W2]


def test_monitors_on_unknown_nodes_are_not_counted() -> None:
    assert monitors_per_node({"m1": "dead", "m2": HEAD}, [HEAD, W1]) == {HEAD: 1, W1: 0}


def test_nothing_to_spread_on_one_node_or_none() -> None:
    assert place_monitor([HEAD], {HEAD: 5}) is None
    assert place_monitor([HEAD, HEAD], {}) is None
    assert place_monitor([], {}) is None


def test_options_are_soft_affinity_to_the_chosen_node_else_spread() -> None:
    opts = monitor_options(W1)
    strategy = opts["strategy"]
    assert isinstance(strategy, NodeAffinitySchedulingStrategy)
    assert strategy.node_id == W1 and strategy.soft is True  # soft: Ray may restart it elsewhere
    assert strategy._spill_on_unavailable is True  # never waits for a busy node's CPU
    assert 0 < opts["num_cpus"] == PLACED_MONITOR_CPUS <= 0.01  # some request: else Ray ignores the affinity
    assert monitor_options(None) == {"strategy": "SPREAD"}  # single node: as before
