"""Ranking a look from per-garment matches: the three strategies, ties and missing garments."""

from __future__ import annotations

import pytest

from contracts.models import BBox, GarmentMatches, Match, ProductMetadata
from workers.stages.ranking import MISSING_DISTANCE, rank


def g(label: str, *matches: tuple[str, float]) -> GarmentMatches:
    return GarmentMatches(
        label=label, bbox=BBox(x0=0, y0=0, x1=10, y1=10), mask_fraction=0.1,
        matches=[Match(product_id=p, score=s, metadata=ProductMetadata(), metadata_source="redis") for p, s in matches],
    )


def table(ranked) -> list[tuple[str, float, list[str]]]:
    return [(r.product_id, r.score, r.labels) for r in ranked]


LOOK = [
    g("Upper-clothes", ("p1", 0.90), ("p2", 0.80), ("p3", 0.10)),
    g("Pants", ("p2", 0.95), ("p1", 0.70)),
    g("Bag", ("p1", 0.60), ("p4", 0.50)),
    g("Hat"),  # a garment with no matches at all
]


def test_first_place_votes():
    assert table(rank(LOOK, "first_place_votes")) == [
        ("p1", 2.0, ["Bag", "Pants", "Upper-clothes"]),  # labels: every garment the product matched
        ("p2", 1.0, ["Pants", "Upper-clothes"]),
    ]  # p3 and p4 never matched a garment first: no votes, not ranked


def test_first_place_votes_ties_by_best_score_then_id():
    look = [
        g("Hat", ("b", 0.90), ("c", 0.99)),   # c's best score comes from a non-first place
        g("Skirt", ("a", 0.90)),
        g("Bag", ("c", 0.80)),
        g("Scarf", ("d", 0.95)),
    ]
    assert table(rank(look, "first_place_votes")) == [
        ("c", 1.0, ["Bag", "Hat"]),   # best 0.99
        ("d", 1.0, ["Scarf"]),        # best 0.95
        ("a", 1.0, ["Skirt"]),        # best 0.90, id a < b
        ("b", 1.0, ["Hat"]),
    ]


def test_lowest_total_distance_counts_missing_garments_as_worst():
    assert MISSING_DISTANCE == 2.0
    got = table(rank(LOOK, "lowest_total_distance"))
    # p1: 0.10 + 0.30 + 0.40 + 2 (Hat)      = 2.8
    # p2: 0.20 + 0.05 + 2 (Bag) + 2 (Hat)   = 4.25
    # p4: 2 + 2 + 0.50 + 2                  = 6.5
    # p3: 0.90 + 2 + 2 + 2                  = 6.9
    assert [p for p, _, _ in got] == ["p1", "p2", "p4", "p3"]
    assert [s for _, s, _ in got] == [pytest.approx(2.8), pytest.approx(4.25), pytest.approx(6.5), pytest.approx(6.9)]
    assert got[0][2] == ["Bag", "Pants", "Upper-clothes"]


def test_lowest_total_distance_missing_beats_nothing():
    look = [g("Dress", ("a", 0.9), ("b", 0.2)), g("Bag", ("b", 0.1))]
    # a: 0.1 + 2.0 (missing Bag) = 2.1 ; b: 0.8 + 0.9 = 1.7 -> matching both garments badly still wins
    assert table(rank(look, "lowest_total_distance")) == [
        ("b", pytest.approx(1.7), ["Bag", "Dress"]), ("a", pytest.approx(2.1), ["Dress"])]


def test_lowest_total_distance_ties_by_best_score_then_id():
    look = [
        g("Dress", ("x", 0.9), ("y", 0.5), ("v", 0.8), ("u", 0.8)),
        g("Bag", ("y", 0.7), ("x", 0.3), ("u", 0.6), ("v", 0.6)),
    ]
    # x: 0.1 + 0.7 = 0.8 ; y: 0.5 + 0.3 = 0.8 (equal after rounding float noise) -> best 0.9 beats 0.7
    # u, v: 0.2 + 0.4 = 0.6 each, same best 0.8 -> by id
    got = table(rank(look, "lowest_total_distance"))
    assert [p for p, _, _ in got] == ["u", "v", "x", "y"]
    assert got[2][1] == got[3][1] == 0.8  # rounded, so the float noise does not break the tie


def test_most_common_overall():
    got = table(rank(LOOK, "most_common_overall"))
    assert got == [
        ("p1", 3.0, ["Bag", "Pants", "Upper-clothes"]),
        ("p2", 2.0, ["Pants", "Upper-clothes"]),
        ("p4", 1.0, ["Bag"]),    # best 0.50 beats p3's 0.10
        ("p3", 1.0, ["Upper-clothes"]),
    ]


def test_most_common_overall_ties_by_best_score_then_id():
    look = [g("Hat", ("m", 0.5), ("k", 0.5), ("z", 0.6)), g("Bag", ("k", 0.4), ("m", 0.3), ("z", 0.2))]
    assert [p for p, _, _ in table(rank(look, "most_common_overall"))] == ["z", "k", "m"]


@pytest.mark.parametrize("strategy", ["first_place_votes", "lowest_total_distance", "most_common_overall"])
def test_limit_and_empty(strategy):
    full = rank(LOOK, strategy)
    assert rank(LOOK, strategy, limit=1) == full[:1]
    assert rank(LOOK, strategy, limit=None) == full
    assert rank([], strategy) == []
    assert rank([g("Hat"), g("Bag")], strategy) == []


def test_unknown_strategy_raises():
    with pytest.raises(ValueError, match="unknown strategy 'best_guess'"):
        rank(LOOK, "best_guess")


def test_best_per_product_keeps_each_products_best_hit_in_order():
    from types import SimpleNamespace as H

    from workers.stages.ranking import best_per_product

    hits = [H(product_id=p, score=s) for p, s in
            [("a", 0.9), ("a", 0.8), ("b", 0.7), ("a", 0.6), ("c", 0.5), ("b", 0.4), ("d", 0.3)]]
    assert [(h.product_id, h.score) for h in best_per_product(hits, 3)] == [("a", 0.9), ("b", 0.7), ("c", 0.5)]
    assert [h.product_id for h in best_per_product(hits, 10)] == ["a", "b", "c", "d"]
    assert best_per_product([], 3) == []
