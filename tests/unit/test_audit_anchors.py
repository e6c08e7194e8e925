"""The pure comparison of audit chains with their anchors (policies.audit.anchors)."""

from __future__ import annotations

from policies.audit.anchors import ChainState, build_anchor, check_anchors, strongest
from protocol.system import MAX_ANCHOR_CHAINS, AuditAnchor, AuditChainAnchor

T0 = 1_800_000_000.0


def state(chain: str = "default", head_id: int = 10, count: int = 10, purged_id: int = 0,
          head_hash: str = "h10", purged_hash: str = "0" * 64) -> ChainState:
    return ChainState(chain=chain, head_id=head_id, head_hash=head_hash, purged_id=purged_id,
                      purged_hash=purged_hash, count=count)


def anchored(*states: ChainState, at: float = T0) -> dict[str, tuple[AuditChainAnchor, float]]:
    return strongest({}, build_anchor(states, "c1", at))


def test_build_anchor_records_each_chain_and_the_total() -> None:
    a = build_anchor([state("meta", 4, 4, head_hash="h4"), state()], "c1", T0)
    assert [c.chain for c in a.chains] == ["default", "meta"]
    assert a.rows == 14 and a.timestamp.timestamp() == T0 and a.cluster_id == "c1"
    assert AuditAnchor.model_validate_json(a.to_json()) == a
    many = build_anchor([state(f"c{i:04d}") for i in range(MAX_ANCHOR_CHAINS + 5)], "c1", T0)
    assert len(many.chains) == MAX_ANCHOR_CHAINS


def test_strongest_keeps_the_highest_count_per_chain() -> None:
    folded = anchored(state(count=10))
    folded = strongest(folded, build_anchor([state(head_id=20, count=20, head_hash="h20")], "c1", T0 + 60))
    folded = strongest(folded, build_anchor([state(count=10)], "c1", T0 + 120))  # an older copy, later
    a, at = folded["default"]
    assert (a.count, a.head_id, a.head_hash, at) == (20, 20, "h20", T0 + 60)
    capped = strongest({}, build_anchor([state("x"), state("y")], "c1", T0), max_chains=1)
    assert list(capped) == ["x"]


def test_intact_and_grown_chains_agree() -> None:
    a = anchored(state())
    assert check_anchors(a, {"default": state()}, {("default", 10): "h10"}) == []
    grown = state(head_id=15, count=15, head_hash="h15")
    assert check_anchors(a, {"default": grown}, {("default", 10): "h10"}) == []


def test_tail_truncated_with_the_head_moved_back() -> None:
    a = anchored(state())
    [p] = check_anchors(a, {"default": state(head_id=7, count=7, head_hash="h7")}, {})
    assert "holds 7 rows but the anchor of" in p and "recorded 10" in p and "tail truncated" in p


def test_truncated_then_refilled_shows_the_anchored_head_gone_or_different() -> None:
    a = anchored(state())
    refilled = state(head_id=14, count=11, head_hash="h14")
    [gone] = check_anchors(a, {"default": refilled}, {})
    assert "row 10" in gone and "that row is gone" in gone
    [other] = check_anchors(a, {"default": refilled}, {("default", 10): "forged"})
    assert "another hash" in other


def test_whole_deletion_and_one_chain_deleted() -> None:
    a = anchored(state(), state("meta", 4, 4, head_hash="h4"))
    [p] = check_anchors(a, {}, {})
    assert "empty but anchors recorded 14 rows in 2 chain(s)" in p and "whole deletion" in p
    [p] = check_anchors(a, {"default": state()}, {("default", 10): "h10"})
    assert "chain 'meta' is gone" in p


def test_anchors_of_empty_chains_do_not_accuse_an_empty_log() -> None:
    assert check_anchors(anchored(state(head_id=0, count=0, head_hash="0" * 64)), {}, {}) == []
    assert check_anchors({}, {"default": state()}, {}) == []


def test_purged_anchored_heads_are_accepted_only_as_the_purge_left_them() -> None:
    a = anchored(state())
    after_purge = state(head_id=30, count=30, purged_id=12, purged_hash="h12", head_hash="h30")
    assert check_anchors(a, {"default": after_purge}, {}) == []
    at_point = state(head_id=30, count=30, purged_id=10, purged_hash="h10", head_hash="h30")
    assert check_anchors(a, {"default": at_point}, {}) == []
    moved = state(head_id=30, count=30, purged_id=10, purged_hash="forged", head_hash="h30")
    [p] = check_anchors(a, {"default": moved}, {})
    assert "purge point" in p
