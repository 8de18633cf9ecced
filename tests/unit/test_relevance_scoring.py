"""bench relevance's scoring (pure logic): box IoU, one-to-one matching, recall@k / mAP@10 / chance, shares."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from bench import relevance_score as R
from bench.relevance_data import GARMENT_ID0, products, street_look


def test_box_iou():
    assert R.box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert R.box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert R.box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_match_is_one_to_one_and_label_bound():
    m = np.zeros((4, 4), bool)
    truths = [R.Truth("a", "Hat", m, (0, 0, 10, 10)), R.Truth("b", "Hat", m, (20, 0, 30, 10)),
              R.Truth("c", "Bag", m, (0, 0, 10, 10))]
    p1, p2 = R.Pred("Hat", (1, 0, 10, 10), []), R.Pred("Hat", (0, 0, 9, 10), [])
    out = R.match(truths, [p1, p2, R.Pred("Skirt", (0, 0, 10, 10), [])])
    assert out[0][0] is not None and out[1] == (None, 0.0) and out[2] == (None, 0.0)  # b overlaps nothing
    assert {id(out[0][0])} <= {id(p1), id(p2)}


class _GT:
    """A two-look ground truth with known masks, without rendering."""

    def __init__(self):
        self.products = [SimpleNamespace(product_id=f"t{i}", label="Upper-clothes") for i in range(10)] + \
                        [SimpleNamespace(product_id=f"h{i}", label="Hat") for i in range(4)]
        a = np.zeros((50, 50), np.uint8)
        a[10:30, 10:30] = GARMENT_ID0
        a[0:5, 12:24] = GARMENT_ID0 + 1  # 60 px: visible (>= 50)
        b = np.zeros((50, 50), np.uint8)
        b[20:40, 20:40] = GARMENT_ID0
        self.maps = {"l0": a, "l1": b}
        self.looks = [{"look_id": "l0", "garments": [{"product_id": "t3", "label": "Upper-clothes", "id": 100},
                                                     {"product_id": "h1", "label": "Hat", "id": 101}]},
                      {"look_id": "l1", "garments": [{"product_id": "t7", "label": "Upper-clothes", "id": 100}]}]

    def truth_map(self, look):
        return self.maps[look["look_id"]]


def test_score_counts_ranks_misses_and_chance():
    gt = _GT()
    preds = [[R.Pred("Upper-clothes", (10, 10, 30, 30), ["t1", "t3", "t0"]),      # t3 at rank 2
              R.Pred("Bag", (40, 40, 50, 50), ["x"])],                            # a false garment; hat missed
             [R.Pred("Upper-clothes", (20, 20, 40, 40), ["t7"] + [f"t{i}" for i in range(7)])]]  # rank 1
    sc = R.score(gt, gt.looks, preds)
    o = sc["overall"]
    assert o["garments"] == 3 and o["det_recall"] == pytest.approx(2 / 3) and o["det_precision"] == pytest.approx(2 / 3)
    assert o["r@1"] == pytest.approx(1 / 3) and o["r@5"] == pytest.approx(2 / 3) and o["r@20"] == pytest.approx(2 / 3)
    assert o["map@10"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    # chance: k / products of the label (10 tops, 4 hats), capped at 1
    assert o["chance@1"] == pytest.approx((0.1 + 0.25 + 0.1) / 3)
    assert o["chance@5"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert sc["labels"]["Hat"]["det_recall"] == 0.0 and sc["labels"]["Bag"]["det_precision"] == 0.0
    assert sc["garments_per_look"] == 1.5 and sc["true_garments_per_look"] == 1.5
    assert sc["ranks"] == [2, None, 1]


def test_strategy_shares_use_the_replies_matches():
    gt = _GT()
    match = lambda pid, s: SimpleNamespace(product_id=pid, score=s)  # noqa: E731
    reply = SimpleNamespace(garments=[
        SimpleNamespace(label="Upper-clothes", matches=[match("t3", 0.9), match("t1", 0.8)]),
        SimpleNamespace(label="Hat", matches=[match("h0", 0.7), match("h1", 0.6)])])
    shares = R.strategy_shares(gt, gt.looks, [reply, None])
    assert shares["first_place_votes"][3] == pytest.approx((0.5 + 0.0) / 2)  # t3 voted first; h1 never first
    assert shares["most_common_overall"][5] == pytest.approx((1.0 + 0.0) / 2)


def test_a_street_look_keeps_the_truth_of_every_visible_garment():
    worn = [p for p in products(40, seed=3) if p.label in ("Upper-clothes", "Pants")][:1] + \
           [p for p in products(40, seed=3) if p.label == "Pants"][:1]
    data, truth, info = street_look(random.Random(5), worn)
    assert data[:2] == b"\xff\xd8" and 40 <= info["jpeg_quality"] <= 90
    for i in range(len(worn)):
        assert (truth == GARMENT_ID0 + i).sum() > 500


def test_variant_rows_are_kept_per_tag(tmp_path, monkeypatch):
    """Two runs of the same model names under another --variant tag keep two rows; the same tag replaces its row."""
    from bench import relevance_report, report

    monkeypatch.setattr(report, "RESULTS", tmp_path / "RESULTS.md")
    overall = {"det_recall": 0.5, "det_precision": 0.5, "box_iou": 0.5, "mask_iou": 0.4, "r@1": 0.1, "r@10": 0.3,
               "r@20": 0.4, "map@10": 0.2, "chance@10": 0.1}

    def out(variant, r10):
        return {"pipeline": {"overall": {**overall, "r@10": r10}}, "reference": {"overall": {**overall, "r@10": r10}},
                "models": {"segmenter": "segformer", "embedder": "efficientnet_lite0", "dim": 1280},
                "dataset": {"products": 300, "looks": 300, "colour_mode": "random", "variant": variant},
                "semantic_iou": {"Dress": 0.2}}

    ctx = {"weights": "pulled", "machine": {"date": "2026-12-02 15:00 UTC"}}
    relevance_report.update_variants("relevance-x-3000_steps", ctx, out("3000 steps", 0.61))
    relevance_report.update_variants("relevance-x-6000_steps", ctx, out("6000 steps", 0.72))
    relevance_report.update_variants("relevance-x-6000_steps", ctx, out("6000 steps", 0.73))
    text = report.RESULTS.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| segformer")]
    assert len(rows) == 2, rows
    assert "colours random, 3000 steps" in rows[0] and "0.610" in rows[0]
    assert "colours random, 6000 steps" in rows[1] and "0.730" in rows[1] and "0.720" not in text


def test_twins_count_who_ranks_first_per_distractor_kind():
    """A product ranked above its twin counts; its twin alone listed does not; neither listed is left out."""
    gt = _GT()
    gt.products = [SimpleNamespace(product_id=p, label="Upper-clothes", sibling_of=s, distractor=k)
                   for p, s, k in (("t3", "", ""), ("t9", "t3", "colour"), ("t7", "", ""), ("t8", "t7", "pattern"))]
    gt.products += [SimpleNamespace(product_id="h1", label="Hat", sibling_of="", distractor="")]
    preds = [[R.Pred("Upper-clothes", (10, 10, 30, 30), ["t1", "t3", "t9"])],  # t3 above its twin t9
             [R.Pred("Upper-clothes", (20, 20, 40, 40), ["t8", "t0"])]]        # only t7's twin t8 is listed
    tw = R.twins(gt, gt.looks, preds)
    assert tw["colour"] == {"garments": 1, "listed": 1, "ahead": 1, "ahead_share": 1.0}
    assert tw["pattern"] == {"garments": 1, "listed": 1, "ahead": 0, "ahead_share": 0.0}
    none = R.twins(gt, gt.looks, [[], [R.Pred("Upper-clothes", (20, 20, 40, 40), ["t0"])]])
    assert none["colour"]["listed"] == 0 and none["colour"]["ahead_share"] is None and none["pattern"]["listed"] == 0
