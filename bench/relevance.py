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
names). The embedding dimension is read from the vectors. ``--int8-reference`` also scores the embedder's dynamic INT8
ONNX graph in-process on the same crops (its recall cost against the FP32 reference).

This module runs the pipeline and the reference; the scoring is bench/relevance_score.py (pure logic), the tables
and bench/RESULTS.md sections bench/relevance_report.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench import harness as h
from bench.relevance_data import GroundTruth, generate
from bench.relevance_report import report
from bench.relevance_score import TOP_K, Pred, score, semantic_iou, strategy_shares, twins
from contracts.models import IndexedEvent
from workers.media.garments import GarmentRules, as_indexed, extract_garments, letterbox, unletterbox
from workers.stages.ranking import best_per_product

TENANT = "rel"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- geometry
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
        base = model.removesuffix("_int8")  # an INT8 variant: its FP32 model's folder
        weights = self.src / base / str(model_repo.served_version(self.src, base)) / "weights"  # what Triton serves
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
    # the stack serves a.embedder (BenchStack(embedder=...)); the workers must embed with it too
    ns.env.update({"LOOKSTREAM_SEGFORMER_MODEL": a.segmenter, "LOOKSTREAM_EMBED_MODEL": a.embedder,
                   "LOOKSTREAM_BLANK_BACKGROUND": "true" if a.blank_background else "false"})
    ns.start_workers(["segmentation", "embedding", "query"])
    s = ns.settings
    log("  pipeline: publishing the products (their shop images and own garment label)")
    ing = publish_products(ns, gt)
    log(f"  pipeline: asking {len(gt.looks)} street looks ({a.rel_clients} clients)")
    replies, ask_wall = ask_looks(ns, gt, a.rel_clients)
    ns.stop_all()
    pipe_preds = [reply_preds(r) for r in replies]
    pipe = score(gt, gt.looks, pipe_preds)
    twin_shares = twins(gt, gt.looks, pipe_preds)
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
                       "variant": ", ".join(t for t in (a.variant, "masked crops" if a.blank_background else "") if t),
                       "distractors": sum(1 for p in gt.products if p.sibling_of)},
           "models": {"segmenter": a.segmenter, "embedder": a.embedder, "dim": rr["dim"],
                      "weights": b.weights.detail},
           "ingest": ing, "ask_wall_s": ask_wall, "reply_status": statuses, "pipeline": pipe, "reference": refs,
           "reference_int8": int8,
           "semantic_iou": sem, "strategies": shares, "twins": twin_shares, "rules": sweep, "rank_agreement": agree,
           "reference_notes": ref.notes, "wall_s": time.monotonic() - t_start}
    for d in (out["pipeline"], out["reference"]):
        d.pop("ranks")
    report(b, out, load)
    return out
