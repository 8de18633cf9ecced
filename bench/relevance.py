"""``python -m bench relevance``: is the jacket returned like the shopper's jacket? Measured on a rendered ground truth.

1. A ground-truth set (bench/relevance_data.py): products with 1-3 shop images each, hard distractors, and street
   looks from a held-out rendering seed with the product and mask of every garment.
2. Through the real pipeline (Kafka -> segmentation -> Triton -> embedding -> Milvus/Redis; LookRequests through the
   query worker): every product is published with its shop images and its own garment label
   (``ProductEvent.images`` + ``garments``), then every street look is asked (top 20 per garment).
3. In-process reference: the same weights run in this machine's model env (modeltools/reference.py, torch, no
   Triton), the same garment extraction, an exact cosine search in numpy, best image per product. Pipeline fidelity =
   pipeline recall@k minus reference recall@k.
4. Reports per garment label and overall: detection recall/precision (box IoU >= 0.5, same label), mean box IoU,
   mask IoU, recall@1/5/10/20, mAP@10, the chance level; per ranking strategy the share of a look's products in its
   top-k ranking; garment rules (workers/media/garments.py) compared on the reference label maps.

Models: the Triton model source repository (declared random tiny weights by default, ``--use-repo-weights`` or
``--models DIR``), and which of its models are the segmenter/embedder (``--segmenter`` / ``--embedder``: Triton model
names). The embedding dimension is read from the vectors.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bench import harness as h
from bench import report as rep
from bench.relevance_data import GARMENT_ID0, GroundTruth, generate
from contracts.models import LABEL_IDS, LABELS, IndexedEvent
from workers.media.garments import GarmentRules, as_indexed, extract_garments, letterbox, unletterbox
from workers.stages.ranking import best_per_product, rank

KS = (1, 5, 10, 20)
TOP_K = 20
STRATEGIES = ("first_place_votes", "lowest_total_distance", "most_common_overall")
TENANT = "rel"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- geometry
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
def publish_products(ns: h.Namespace, gt: GroundTruth, timeout: float = 7200) -> dict:
    from contracts.client import CatalogPublisher
    from contracts.models import ProductEvent
    from workers.local.ingest import OutcomeWatcher

    s = ns.settings
    watcher = OutcomeWatcher(s)
    extra = {k: v for k, v in s.kafka_common().items() if k != "bootstrap_servers"}
    ids = []
    try:
        t0 = time.monotonic()
        with CatalogPublisher(s.bootstrap_servers, topic=s.topic_products, **extra) as pub:
            for p in gt.products:
                ev = ProductEvent(tenant=TENANT, product_id=p.product_id, garments=[p.label],
                                  images=[{"bytes": f.read_bytes()} for f in gt.shop[p.product_id]],
                                  metadata={"title": f"{p.label} {p.product_id}", "category": p.label})
                pub.publish(ev)
                ids.append(ev.event_id)
        last = [0.0]

        def show(done: int) -> None:
            if time.monotonic() - last[0] > 10 or done == len(ids):
                last[0] = time.monotonic()
                log(f"    {done}/{len(ids)} products indexed after {time.monotonic() - t0:.0f} s")

        watcher.wait(set(ids), timeout, show)
        wall = time.monotonic() - t0
        outs = [watcher.outcomes.get(e) for e in ids]
    finally:
        watcher.close()
    idx = [o for o in outs if isinstance(o, IndexedEvent)]
    return {"products": len(ids), "images": sum(len(v) for v in gt.shop.values()), "wall_s": wall,
            "indexed": sum(o.status == "indexed" for o in idx),
            "garment_not_found": sum(o.status == "garment_not_found" for o in idx),
            "no_garments": sum(o.status == "no_garments" for o in idx),
            "rows": sum(len(o.garment_ids) for o in idx), "other": len(outs) - len(idx)}


def ask_looks(ns: h.Namespace, gt: GroundTruth, clients: int, timeout: float = 900) -> tuple[list, float]:
    from contracts.client import LookClient

    s = ns.settings
    looks = gt.looks
    replies: list = [None] * len(looks)
    nxt = [0]
    lock = threading.Lock()
    t0 = time.monotonic()
    with LookClient(s.bootstrap_servers, tenant=TENANT, request_topic=s.topic_look_requests) as client:
        def loop() -> None:
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= len(looks):
                    return
                try:
                    replies[i] = client.ask(looks[i]["image"].read_bytes(), top_k=TOP_K, timeout=timeout)
                except Exception as e:  # noqa: BLE001 - counted as a look with no answer
                    log(f"    look {i}: {e}")
                if i % 25 == 0:
                    log(f"    look {i}/{len(looks)} asked after {time.monotonic() - t0:.0f} s")

        threads = [threading.Thread(target=loop) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return replies, time.monotonic() - t0


def reply_preds(reply) -> list[Pred]:
    if reply is None or reply.status.value not in ("ok", "partial"):
        return []
    return [Pred(g.label, (g.bbox.x0, g.bbox.y0, g.bbox.x1, g.bbox.y1), [m.product_id for m in g.matches])
            for g in reply.garments]


# --------------------------------------------------------------------------- the in-process reference
class Reference:
    """The same weights in this machine's model env (torch, no Triton), in a few subprocess calls."""

    def __init__(self, src: Path, segmenter: str, embedder: str, work: Path, triton_url: str, size: int):
        self.src, self.segmenter, self.embedder, self.work = src, segmenter, embedder, work
        self.triton_url, self.size = triton_url, size
        self.notes: list[str] = []
        work.mkdir(parents=True, exist_ok=True)

    def _run(self, model: str, arrays: list[np.ndarray], chunk: int) -> np.ndarray:
        from workers.local import model_repo

        files = []
        for i in range(0, len(arrays), chunk):
            f = self.work / f"{model}-{len(list(self.work.iterdir()))}-{i}.npy"
            np.save(f, np.stack(arrays[i: i + chunk]))
            files.append(f)
        py = model_repo.env_python(model_repo.default_env_path())
        weights = self.src / model.removesuffix("_int8") / "1" / "weights"  # an INT8 variant: its FP32 model's folder
        proc = subprocess.run([str(py), str(h.ROOT / "bench" / "relevance_ref.py"), model, str(weights),
                               *map(str, files)],
                              capture_output=True, text=True)
        if proc.returncode == 3 and model.endswith("_int8"):
            raise SystemExit(f"reference {model}: no INT8 variant in-process ({proc.stdout[-500:]})")
        if proc.returncode == 3:  # the reference does not know this model: Triton directly, declared
            note = f"{model}: no in-process reference; Triton called directly (no Kafka/workers/Milvus)"
            if note not in self.notes:
                self.notes.append(note)
            return self._triton(model, arrays)
        if proc.returncode != 0:
            raise SystemExit(f"reference {model} failed: {proc.stderr[-2000:]}")
        out = np.concatenate([np.load(f.with_suffix(".out.npy")) for f in files])
        for f in files:
            f.unlink()
            f.with_suffix(".out.npy").unlink()
        return out

    def _triton(self, model: str, arrays: list[np.ndarray]) -> np.ndarray:
        from workers.adapters.triton_client import TritonModels

        with TritonModels(self.triton_url, segformer_model=self.segmenter, resnet_model=self.embedder,
                          timeout_s=600) as tm:
            fn = tm.segment if model == self.segmenter else tm.embed
            return np.concatenate([fn(np.stack(arrays[i: i + 16])) for i in range(0, len(arrays), 16)])

    def segment(self, images: list[Image.Image]) -> list[np.ndarray]:
        boxes = [letterbox(img, self.size) for img in images]
        maps = self._run(self.segmenter, [c for c, _ in boxes], 96)
        return [unletterbox(m, lb) for m, (_, lb) in zip(maps, boxes)]

    def embed(self, crops: list[np.ndarray], embedder: str | None = None) -> np.ndarray:
        """``embedder``: another reference model on the same weights (e.g. ``efficientnet_lite0_int8``)."""
        if not crops:
            return np.zeros((0, 1), np.float32)
        return self._run(embedder or self.embedder, crops, 256)


def reference_run(ref: Reference, gt: GroundTruth, s, rules: GarmentRules) -> dict:
    from workers.media.images import decode_image

    def extract(img, lm, only=None):
        return extract_garments(img, lm, garment_label_ids=s.garment_label_ids, min_mask_fraction=s.min_mask_fraction,
                                crop_size=s.crop_size, blank_background=s.blank_background,
                                open_fraction=s.mask_open_fraction, only=only, rules=rules)

    t0 = time.monotonic()
    shop = [(p, decode_image(f.read_bytes(), s)) for p in gt.products for f in gt.shop[p.product_id]]
    log(f"  reference: segmenting {len(shop)} shop images in-process")
    shop_maps = ref.segment([img for _, img in shop])
    crops, owners = [], []
    for (p, img), lm in zip(shop, shop_maps):
        for g in extract(img, lm, only={p.label}):
            crops.append(as_indexed(g.crop))  # the embedding worker embeds the decoded JPEG crop
            owners.append((p.product_id, g.label))
    log(f"  reference: embedding {len(crops)} shop crops")
    shop_vecs = ref.embed(crops)
    looks = [decode_image(lk["image"].read_bytes(), s) for lk in gt.looks]
    log(f"  reference: segmenting {len(looks)} looks")
    look_maps = ref.segment(looks)
    found = [extract(img, lm) for img, lm in zip(looks, look_maps)]
    qcrops = [as_indexed(g.crop) for f in found for g in f]
    log(f"  reference: embedding {len(qcrops)} look crops")
    qvecs = ref.embed(qcrops)
    out = {"preds": search_preds(looks, found, owners, shop_vecs, qvecs), "look_maps": look_maps, "looks": looks,
           "dim": int(shop_vecs.shape[1]), "shop_crops": len(crops), "wall_s": time.monotonic() - t0}
    out["reembed"] = lambda embedder: search_preds(looks, found, owners, ref.embed(crops, embedder),
                                                   ref.embed(qcrops, embedder))
    return out


@dataclass(frozen=True)
class _Hit:
    product_id: str


def search_preds(looks, found, owners, shop_vecs: np.ndarray, qvecs: np.ndarray) -> list[list[Pred]]:
    """Exact cosine search of every look garment among the shop crops of its label, best image per product."""
    labels = np.array([lab for _, lab in owners])
    pids = [pid for pid, _ in owners]
    preds_per_look, k = [], 0
    for img, f in zip(looks, found):
        preds = []
        for g in f:
            v = qvecs[k]
            k += 1
            sel = np.flatnonzero(labels == g.label)
            order = sel[np.argsort(-(shop_vecs[sel] @ v), kind="stable")] if len(sel) else sel
            hits = best_per_product([_Hit(pids[i]) for i in order], TOP_K)
            b = g.bbox
            full = np.zeros(img.size[::-1], bool)
            full[b.y0: b.y1, b.x0: b.x1] = g.mask
            preds.append(Pred(g.label, (b.x0, b.y0, b.x1, b.y1), [x.product_id for x in hits], full))
        preds_per_look.append(preds)
    return preds_per_look


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


RULE_VARIANTS = {
    "label_sum (the seed: one box over every pixel of the label)": GarmentRules(mode="label_sum",
                                                                                   small_min_fraction=1.0),
    "components, largest region only (gap 0)": GarmentRules(merge_gap_fraction=0.0),
    "components, merge gap 1 %": GarmentRules(merge_gap_fraction=0.01),
    "components, merge gap 2 %, small-label minimum 0.3 % (default)": GarmentRules(),
    "components, merge gap 4 %": GarmentRules(merge_gap_fraction=0.04),
    "components, merge gap 8 %": GarmentRules(merge_gap_fraction=0.08),
    "components, gap 2 %, no small-label minimum (0.5 % for all)": GarmentRules(small_min_fraction=1.0),
    "components, gap 2 %, small-label minimum 0.05 %": GarmentRules(small_min_fraction=0.0005),
    "components, gap 2 %, small-label minimum 0.15 %": GarmentRules(small_min_fraction=0.0015),
}


def rules_sweep(gt: GroundTruth, s, looks: list[Image.Image], look_maps: list[np.ndarray]) -> list[dict]:
    rows = []
    for name, rules in RULE_VARIANTS.items():
        preds_per_look = []
        for img, lm in zip(looks, look_maps):
            found = extract_garments(img, lm, garment_label_ids=s.garment_label_ids,
                                     min_mask_fraction=s.min_mask_fraction, crop_size=8,
                                     open_fraction=s.mask_open_fraction, rules=rules)
            preds_per_look.append([Pred(g.label, (g.bbox.x0, g.bbox.y0, g.bbox.x1, g.bbox.y1), []) for g in found])
        sc = score(gt, gt.looks, preds_per_look)
        o = sc["overall"]
        rows.append({"rules": name, "box_iou": o["box_iou"], "det_recall": o["det_recall"],
                     "det_precision": o["det_precision"], "garments_per_look": sc["garments_per_look"],
                     "true_garments_per_look": sc["true_garments_per_look"]})
    return rows


# --------------------------------------------------------------------------- the run
def run(b) -> dict:
    a = b.a
    n_products, n_looks = (a.products, a.looks) if not a.quick else (min(a.products, 24), min(a.looks, 12))
    t_start = time.monotonic()
    gt = generate(h.OUT / "relevance", n_products, n_looks, seed=a.render_seed, look_seed=a.look_seed,
                  colour_mode=a.colour_mode)
    n_images = sum(len(v) for v in gt.shop.values())
    log(f"relevance: {len(gt.products)} products ({n_images} shop images), {len(gt.looks)} street looks "
        f"in {gt.root.relative_to(h.ROOT)}")
    meter = b.meter()
    ns = b.stack.namespace("rel")
    ns.env.update({"LOOKSTREAM_SEGFORMER_MODEL": a.segmenter, "LOOKSTREAM_RESNET_MODEL": a.embedder})
    ns.start_workers(["segmentation", "embedding", "query"])
    s = ns.settings
    log("  pipeline: publishing the products (their shop images and own garment label)")
    ing = publish_products(ns, gt)
    log(f"  pipeline: asking {len(gt.looks)} street looks ({a.rel_clients} clients)")
    replies, ask_wall = ask_looks(ns, gt, a.rel_clients)
    ns.stop_all()
    pipe = score(gt, gt.looks, [reply_preds(r) for r in replies])
    shares = strategy_shares(gt, gt.looks, replies)
    statuses = {}
    for r in replies:
        key = r.status.value if r is not None else "no reply"
        statuses[key] = statuses.get(key, 0) + 1

    ref = Reference(b.weights.src, a.segmenter, a.embedder, b.stack.state / "reference", s.triton_url,
                    s.segformer_size)
    rr = reference_run(ref, gt, s, s.garment_rules)
    refs = score(gt, gt.looks, rr["preds"], with_masks=True)
    sem = semantic_iou(gt, rr["look_maps"])
    sweep = rules_sweep(gt, s, rr["looks"], rr["look_maps"])
    agree = sum(x == y for x, y in zip(pipe["ranks"], refs["ranks"])) / max(1, len(pipe["ranks"]))
    int8 = None
    if a.int8_reference:  # the same crops, the embedder's dynamic INT8 ONNX graph (onnxruntime, in-process)
        log(f"  reference: embedding the same crops with {a.embedder}_int8")
        int8 = score(gt, gt.looks, rr["reembed"](f"{a.embedder}_int8"))
        int8.pop("ranks")
    load = meter.done()
    out = {"dataset": {"products": len(gt.products), "shop_images": n_images, "looks": len(gt.looks),
                       "truth_garments": pipe["overall"]["garments"], "render_seed": a.render_seed,
                       "look_seed": a.look_seed, "colour_mode": a.colour_mode,
                       "distractors": sum(1 for p in gt.products if p.sibling_of)},
           "models": {"segmenter": a.segmenter, "embedder": a.embedder, "dim": rr["dim"],
                      "weights": b.weights.detail},
           "ingest": ing, "ask_wall_s": ask_wall, "reply_status": statuses, "pipeline": pipe, "reference": refs,
           "reference_int8": int8,
           "semantic_iou": sem, "strategies": shares, "rules": sweep, "rank_agreement": agree,
           "reference_notes": ref.notes, "wall_s": time.monotonic() - t_start}
    for d in (out["pipeline"], out["reference"]):
        d.pop("ranks")
    report(b, out, load)
    return out


def _f(v, nd=3):
    return "-" if v is None else f"{v:.{nd}f}"


def report(b, out: dict, load: dict) -> None:
    pipe, refs = out["pipeline"], out["reference"]
    head = ["label", "garments", "det recall", "det precision", "box IoU", "mask IoU", "R@1", "R@5", "R@10", "R@20",
            "mAP@10", "chance R@10", "chance mAP@10"]

    def row(name, p, r):
        return [name, str(p["garments"]), _f(p["det_recall"]), _f(p["det_precision"]), _f(p["box_iou"]),
                _f(r["mask_iou"]), _f(p["r@1"]), _f(p["r@5"]), _f(p["r@10"]), _f(p["r@20"]), _f(p["map@10"]),
                _f(p["chance@10"]), _f(p["chance_map@10"])]

    rows = [row(lab, p, refs["labels"].get(lab, {"mask_iou": None})) for lab, p in pipe["labels"].items()]
    rows.append(row("**overall**", pipe["overall"], refs["overall"]))
    fhead = ["", *[f"R@{k}" for k in KS], "mAP@10", "det recall", "det precision"]
    frows = [["pipeline (Kafka, Triton, Milvus)", *[_f(pipe["overall"][f"r@{k}"]) for k in KS],
              _f(pipe["overall"]["map@10"]), _f(pipe["overall"]["det_recall"]), _f(pipe["overall"]["det_precision"])],
             ["in-process reference (torch, numpy search)", *[_f(refs["overall"][f"r@{k}"]) for k in KS],
              _f(refs["overall"]["map@10"]), _f(refs["overall"]["det_recall"]), _f(refs["overall"]["det_precision"])],
             ["gap, points", *[f"{100 * (pipe['overall'][f'r@{k}'] - refs['overall'][f'r@{k}']):+.1f}" for k in KS],
              f"{100 * (pipe['overall']['map@10'] - refs['overall']['map@10']):+.1f}",
              f"{100 * (pipe['overall']['det_recall'] - refs['overall']['det_recall']):+.1f}", "-"]]
    q8 = out.get("reference_int8")
    if q8:
        frows += [["in-process reference, INT8 embedder (dynamic quantisation, onnxruntime)",
                   *[_f(q8["overall"][f"r@{k}"]) for k in KS], _f(q8["overall"]["map@10"]),
                   _f(q8["overall"]["det_recall"]), _f(q8["overall"]["det_precision"])],
                  ["INT8 cost vs FP32 reference, points",
                   *[f"{100 * (q8['overall'][f'r@{k}'] - refs['overall'][f'r@{k}']):+.1f}" for k in KS],
                   f"{100 * (q8['overall']['map@10'] - refs['overall']['map@10']):+.1f}", "-", "-"]]
    shead = ["strategy", "top-3", "top-5", "top-10", "top-20"]
    srows = [[s, *[_f(v[k]) for k in (3, 5, 10, 20)]] for s, v in out["strategies"].items()]
    rhead = ["garment rules", "mean box IoU", "det recall", "det precision", "garments / look", "true / look"]
    rrows = [[r["rules"], _f(r["box_iou"]), _f(r["det_recall"]), _f(r["det_precision"]),
              _f(r["garments_per_look"], 2), _f(r["true_garments_per_look"], 2)] for r in out["rules"]]
    sem = out["semantic_iou"]
    d, m, ing = out["dataset"], out["models"], out["ingest"]
    rep.print_tables(("relevance: per garment label (pipeline; mask IoU from the in-process label maps)", head, rows),
                     ("relevance: pipeline fidelity", fhead, frows),
                     ("relevance: ranking strategies (share of a look's products in its top k)", shead, srows),
                     ("relevance: garment rules on the same label maps", rhead, rrows))
    ctx = b.ctx(load)
    ctx["variant"] = f"segmenter {m['segmenter']} + embedder {m['embedder']} ({m['dim']}-d)"
    body = (
        f"Models: segmenter `{m['segmenter']}`, embedder `{m['embedder']}` ({m['dim']}-d); {m['weights']}.\n\n"
        f"Ground truth (bench/relevance_data.py, rendered with workers/local/sample_catalog.py's painter): {d['products']} products "
        f"({d['distractors']} of them hard distractors: same shape in another shade, or same colours with another "
        f"pattern), {d['shop_images']} shop images (mannequin front/back, flat), {d['looks']} street looks from the "
        f"held-out seed {d['look_seed']} with {d['truth_garments']} visible garments (2-4 products each; backgrounds, "
        f"scale, position, rotation, light, colour cast, blur, JPEG 40-90, occlusion); garment colours "
        f"`{d['colour_mode']}`.\n\n"
        f"Pipeline: {ing['products']} ProductEvents (`images` + `garments=[label]`) -> {ing['indexed']} indexed, "
        f"{ing['garment_not_found']} garment_not_found, {ing['no_garments']} no_garments, {ing['rows']} Milvus rows, "
        f"in {ing['wall_s']:.0f} s; {d['looks']} LookRequests (top {TOP_K}) answered in {out['ask_wall_s']:.0f} s, "
        f"statuses {out['reply_status']}. A garment counts as detected when a reply garment of its label has box IoU "
        f">= 0.5; recall@k = its product among that garment's first k matches (one per product: best of its "
        f"images), over all visible truth garments (a missed garment is a miss). mAP@10 = mean 1/rank (one relevant "
        f"product). Chance = k / products of the label.\n\n"
        + rep.md_table(head, rows) +
        "\n\nSegmenter pixel IoU per garment label (label maps vs truth, all looks): "
        + ", ".join(f"{k} {v:.3f}" for k, v in sem.items())
        + (f"; mean {np.mean(list(sem.values())):.3f}" if sem else "") +
        "\n\nPipeline fidelity: the same weights in-process (modeltools/reference.py in the model env, no Triton), the "
        "same garment extraction and JPEG hop, an exact numpy cosine search, best image per product. "
        f"Same rank for {100 * out['rank_agreement']:.1f}% of truth garments."
        + (" Notes: " + "; ".join(out["reference_notes"]) if out["reference_notes"] else "") + "\n\n"
        + rep.md_table(fhead, frows) +
        "\n\nRanking strategies (workers/stages/ranking.py on the replies' per-garment matches): mean share of a look's "
        "products in the first k of the ranking:\n\n" + rep.md_table(shead, srows) +
        "\n\nGarment rules (workers/media/garments.py), each applied to the same in-process label maps of the looks; the "
        "default is the one the pipeline ran:\n\n" + rep.md_table(rhead, rrows) +
        f"\n\nTotal {out['wall_s']:.0f} s.")
    name = "relevance-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{m['segmenter']}-{m['embedder']}-{b.weights.origin}")
    if b.a.quick:  # machinery runs (tests) never touch the committed results
        jp = rep.write_json(name + "-quick", {"context": ctx, **out})
        print(f"\n[{rep.context_line(ctx)}]\nwrote {jp} (--quick: bench/RESULTS.md left alone)\n")
        return
    chart = [(f"R@{k} pipeline", pipe["overall"][f"r@{k}"], _f(pipe["overall"][f"r@{k}"])) for k in KS]
    chart += [(f"R@{k} chance", pipe["overall"][f"chance@{k}"], _f(pipe["overall"][f"chance@{k}"])) for k in KS]
    b.finish(name, f"relevance: {ctx['variant']}", ctx, out, body, chart, "recall")
    update_variants(name, ctx, out)
    if q8:  # same crops, INT8 embedder, in-process: its own row (no pipeline run of its own, so no fidelity)
        update_variants(name + "-int8", ctx, {**out, "pipeline": q8}, suffix=" INT8 (in-process, same crops)")


VARIANT_HEAD = ["models (segmenter + embedder)", "weights", "products / looks", "det recall", "det precision",
                "box IoU", "mask IoU", "seg pixel IoU", "R@1", "R@10", "R@20", "mAP@10", "chance R@10",
                "fidelity R@10 (pts)", "date"]


def update_variants(name: str, ctx: dict, out: dict, suffix: str = "") -> None:
    """The model-variants table in bench/RESULTS.md: one row per variant, kept across runs (rows live in the file)."""
    text = rep.RESULTS.read_text() if rep.RESULTS.exists() else rep.RESULTS_HEAD
    start, end = "<!-- bench:relevance-variants -->", "<!-- /bench:relevance-variants -->"
    rows = dict(re.findall(r"<!-- variant (\S+) (\[.*?\]) -->", text))
    p, r, m, d = out["pipeline"]["overall"], out["reference"]["overall"], out["models"], out["dataset"]
    sem = list(out["semantic_iou"].values())
    rows[name] = json.dumps([f"{m['segmenter']} + {m['embedder']} ({m['dim']}-d){suffix}", ctx["weights"],
                             f"{d['products']} / {d['looks']}", _f(p["det_recall"]), _f(p["det_precision"]),
                             _f(p["box_iou"]), _f(r["mask_iou"]), _f(float(np.mean(sem)) if sem else None),
                             _f(p["r@1"]), _f(p["r@10"]), _f(p["r@20"]), _f(p["map@10"]), _f(p["chance@10"]),
                             "-" if suffix else f"{100 * (p['r@10'] - r['r@10']):+.1f}", ctx["machine"]["date"]])
    table = rep.md_table(VARIANT_HEAD, [json.loads(v) for v in rows.values()])
    section = (f"{start}\n## relevance: model variants\n\nOne row per model variant, each from its own "
               f"`python -m bench relevance` run (its own section has the command, machine and load).\n\n"
               f"{table}\n\n" + "\n".join(f"<!-- variant {k} {v} -->" for k, v in rows.items()) + f"\n{end}")
    pat = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pat.sub(lambda _m: section, text) if pat.search(text) else text.rstrip() + "\n\n" + section + "\n"
    rep.RESULTS.write_text(text)
