"""bench relevance's scoring (pure logic): truth garments of a look, one-to-one matching of predicted garments by box
IoU, detection recall/precision, box and mask IoU, recall@k, mAP@10 and chance per label; ranking-strategy shares;
the segmenter's pixel IoU per garment label."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench.relevance_data import GARMENT_ID0, GroundTruth
from contracts.models import LABEL_IDS, LABELS
from workers.stages.ranking import rank

KS = (1, 5, 10, 20)
TOP_K = 20  # matches asked per garment
STRATEGIES = ("first_place_votes", "lowest_total_distance", "most_common_overall")


def box_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def box_iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


@dataclass
class Truth:
    product_id: str
    label: str
    mask: np.ndarray
    box: tuple[int, int, int, int]


def look_truth(gt: GroundTruth, look: dict, min_pixels: int = 50) -> list[Truth]:
    """The visible garments of a look (a garment fully occluded or out of the frame is not asked for)."""
    ids = gt.truth_map(look)
    out = []
    for g in look["garments"]:
        m = ids == g["id"]
        if m.sum() >= min_pixels:
            out.append(Truth(g["product_id"], g["label"], m, box_of(m)))
    return out


def truth_labels(gt: GroundTruth, look: dict) -> np.ndarray:
    """The truth as a label map (contracts.LABELS ids): body parts as they are, garments by their label."""
    ids = gt.truth_map(look).astype(np.int32)
    out = np.where(ids < GARMENT_ID0, ids, 0).astype(np.uint8)
    for g in look["garments"]:
        out[ids == g["id"]] = LABEL_IDS[g["label"]]
    return out


@dataclass
class Pred:
    label: str
    box: tuple[int, int, int, int]
    products: list[str]  # best first, one per product
    mask: np.ndarray | None = None  # full-image mask (reference only)


def match(truths: list[Truth], preds: list[Pred]) -> list[tuple[Pred | None, float]]:
    """For each truth garment the predicted garment of its label with the best box IoU (one-to-one, greedy)."""
    pairs = sorted(((box_iou(t.box, p.box), ti, pi) for ti, t in enumerate(truths) for pi, p in enumerate(preds)
                    if p.label == t.label), reverse=True)
    used_t, used_p, out = set(), set(), [(None, 0.0)] * len(truths)
    for iou, ti, pi in pairs:
        if ti in used_t or pi in used_p or iou <= 0:
            continue
        used_t.add(ti)
        used_p.add(pi)
        out[ti] = (preds[pi], iou)
    return out


# --------------------------------------------------------------------------- scoring
@dataclass
class Tally:
    garments: int = 0
    detected: int = 0  # IoU >= 0.5
    preds: int = 0
    true_preds: int = 0
    box_iou: list[float] = field(default_factory=list)
    mask_iou: list[float] = field(default_factory=list)
    hits: dict[int, int] = field(default_factory=lambda: {k: 0 for k in KS})
    ap10: float = 0.0
    chance: dict[int, float] = field(default_factory=lambda: {k: 0.0 for k in KS})
    chance_ap10: float = 0.0

    def row(self) -> dict:
        n = max(1, self.garments)
        return {"garments": self.garments, "det_recall": self.detected / n,
                "det_precision": self.true_preds / self.preds if self.preds else None,
                "box_iou": float(np.mean(self.box_iou)) if self.box_iou else None,
                "mask_iou": float(np.mean(self.mask_iou)) if self.mask_iou else None,
                **{f"r@{k}": self.hits[k] / n for k in KS}, "map@10": self.ap10 / n,
                **{f"chance@{k}": self.chance[k] / n for k in KS}, "chance_map@10": self.chance_ap10 / n}


def score(gt: GroundTruth, looks: list[dict], preds_per_look: list[list[Pred]], with_masks: bool = False) -> dict:
    per_label: dict[str, Tally] = {}
    overall = Tally()
    n_label = {}
    for p in gt.products:
        n_label[p.label] = n_label.get(p.label, 0) + 1
    ranks = []
    garments_pred, garments_true = [], []
    for look, preds in zip(looks, preds_per_look):
        truths = look_truth(gt, look)
        garments_pred.append(len(preds))
        garments_true.append(len(truths))
        pairs = match(truths, preds)
        for t, (p, iou) in zip(truths, pairs):
            for tl in (overall, per_label.setdefault(t.label, Tally())):
                tl.garments += 1
                tl.box_iou.append(iou)
                tl.detected += iou >= 0.5
                r = (p.products.index(t.product_id) + 1) if p is not None and t.product_id in p.products else None
                for k in KS:
                    tl.hits[k] += r is not None and r <= k
                    tl.chance[k] += min(1.0, k / n_label[t.label])
                tl.ap10 += (1.0 / r) if r is not None and r <= 10 else 0.0
                tl.chance_ap10 += sum(1.0 / q for q in range(1, min(10, n_label[t.label]) + 1)) / n_label[t.label]
                if with_masks:
                    if p is not None and p.mask is not None:
                        inter = np.logical_and(p.mask, t.mask).sum()
                        tl.mask_iou.append(float(inter / np.logical_or(p.mask, t.mask).sum()))
                    else:
                        tl.mask_iou.append(0.0)
            ranks.append(r)
        # precision: a predicted garment is true if it is some truth garment's IoU >= 0.5 match
        good = {id(p) for p, iou in pairs if p is not None and iou >= 0.5}
        for p in preds:
            for tl in (overall, per_label.setdefault(p.label, Tally())):
                tl.preds += 1
                tl.true_preds += id(p) in good
    return {"overall": overall.row(), "labels": {k: v.row() for k, v in sorted(per_label.items())},
            "ranks": ranks, "garments_per_look": float(np.mean(garments_pred)) if garments_pred else 0.0,
            "true_garments_per_look": float(np.mean(garments_true)) if garments_true else 0.0}


def twins(gt: GroundTruth, looks: list[dict], preds_per_look: list[list[Pred]]) -> dict[str, dict]:
    """Hard distractors, per kind ("colour": another shade; "pattern": same colours, another pattern): of the truth
    garments whose product has such a twin and whose matches list the product or its twin, the share that rank the
    product first. This is the embedder's discrimination alone (detection is left out), where random conv features,
    which keep colour, should beat pretrained ones on shades and lose on patterns."""
    twin = {}
    for p in gt.products:
        if p.sibling_of:
            twin[p.product_id] = (p.sibling_of, p.distractor)
            twin[p.sibling_of] = (p.product_id, p.distractor)
    out: dict[str, dict] = {}
    for look, preds in zip(looks, preds_per_look):
        truths = look_truth(gt, look)
        for t, (p, _iou) in zip(truths, match(truths, preds)):
            if t.product_id not in twin:
                continue
            other, kind = twin[t.product_id]
            tl = out.setdefault(kind, {"garments": 0, "listed": 0, "ahead": 0})
            tl["garments"] += 1
            ranked = p.products if p is not None else []
            mine = ranked.index(t.product_id) if t.product_id in ranked else None
            theirs = ranked.index(other) if other in ranked else None
            if mine is None and theirs is None:
                continue
            tl["listed"] += 1
            tl["ahead"] += mine is not None and (theirs is None or mine < theirs)
    for tl in out.values():
        tl["ahead_share"] = tl["ahead"] / tl["listed"] if tl["listed"] else None
    return dict(sorted(out.items()))


def strategy_shares(gt: GroundTruth, looks: list[dict], replies: list) -> dict:
    """Per strategy: the mean share of a look's products found in the top k of its ranking."""
    from contracts.models import GarmentMatches  # noqa: F401 - replies carry them

    out = {}
    for s in STRATEGIES:
        shares = {k: [] for k in (3, 5, 10, 20)}
        for look, reply in zip(looks, replies):
            want = {t.product_id for t in look_truth(gt, look)}
            if not want:
                continue
            ranked = [r.product_id for r in rank(list(reply.garments), s)] if reply is not None else []
            for k in shares:
                shares[k].append(len(want & set(ranked[:k])) / len(want))
        out[s] = {k: float(np.mean(v)) if v else 0.0 for k, v in shares.items()}
    return out


# --------------------------------------------------------------------------- the pipeline


def semantic_iou(gt: GroundTruth, look_maps: list[np.ndarray]) -> dict[str, float]:
    """Pixel IoU per garment label over all looks (the segmenter's label map vs the truth's)."""
    inter, union = {}, {}
    for look, lm in zip(gt.looks, look_maps):
        tl = truth_labels(gt, look)
        for lab in {g["label"] for g in look["garments"]} | {LABELS[i] for i in np.unique(lm)}:
            if lab not in ("Upper-clothes", "Pants", "Skirt", "Dress", "Hat", "Bag"):
                continue
            i = LABEL_IDS[lab]
            a, b = lm == i, tl == i
            inter[lab] = inter.get(lab, 0) + int(np.logical_and(a, b).sum())
            union[lab] = union.get(lab, 0) + int(np.logical_or(a, b).sum())
    return {lab: inter[lab] / union[lab] for lab in sorted(union) if union[lab]}
