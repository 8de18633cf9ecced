"""The seed's way, model half (run with the MODEL env's python: it imports torch): one process, per image
decode -> SegFormer in-process (batch 1) -> masks -> boxes -> crops; crops embedded by the served embedder
(ResNet50 by default; its dimension is the collection's) in batches of 128.

Driven by ``python -m bench baseline`` over stdin/stdout (JSON lines), which inserts each batch of vectors
into Milvus before this process goes on (the seed was one sequential loop) and flushes at the end:

    -> {"ready": load_s, "threads": n}          (models loaded and warmed up; waits for "go")
    -> {"batch": k, "file": "...npy", "rows": [[product_index, label, [x0, y0, x1, y1]], ...]}   (waits for "ok")
    -> {"done": true, "images": n, "garments": g, "seconds": {...}}

The same models (modeltools/reference.py, the same weights as Triton serves) and the same garment extraction as
the workers (workers/media/garments.py: letterbox to S, masks_to_boxes semantics, 256x256 crops), so the work per image
is identical; only the process structure differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def say(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def wait_for(word: str) -> None:
    line = sys.stdin.readline().strip()
    if line != word:
        raise SystemExit(f"expected {word!r} on stdin, got {line!r}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segformer", type=Path, required=True)
    ap.add_argument("--embedder", default="resnet50", help="the served embedder's model name (modeltools/reference.py)")
    ap.add_argument("--embedder-weights", "--resnet", dest="embedder_weights", type=Path, required=True)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--images", type=Path, required=True, help="JSON list of image paths")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--embed-batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--min-mask-fraction", type=float, default=0.005)
    ap.add_argument("--open-fraction", type=float, default=0.02)
    a = ap.parse_args()

    import torch
    from PIL import Image

    from contracts.models import DEFAULT_NON_GARMENT_LABELS, LABELS
    from modeltools.reference import load
    from workers.media.garments import extract_garments, letterbox, unletterbox

    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    segment = load("segformer", a.segformer)
    embed = load(a.embedder, a.embedder_weights)
    segment(np.zeros((1, a.size, a.size, 3), np.uint8))  # warm-up, as the Triton models are warm
    embed(np.zeros((2, 256, 256, 3), np.uint8))
    say({"ready": time.perf_counter() - t0, "threads": torch.get_num_threads()})
    wait_for("go")

    garment_ids = frozenset(i for i, n in enumerate(LABELS) if n not in DEFAULT_NON_GARMENT_LABELS)
    paths = json.loads(a.images.read_text())
    a.work.mkdir(parents=True, exist_ok=True)
    sec = {"decode": 0.0, "segment": 0.0, "crop": 0.0, "embed": 0.0, "wait_insert": 0.0}
    crops: list[np.ndarray] = []
    rows: list = []
    batches = 0
    garments = 0

    def flush_batch() -> None:
        nonlocal batches, crops, rows
        if not crops:
            return
        t = time.perf_counter()
        vec = embed(np.stack(crops))
        sec["embed"] += time.perf_counter() - t
        f = a.work / f"batch-{batches:05d}.npy"
        np.save(f, vec)
        say({"batch": batches, "file": str(f), "rows": rows})
        t = time.perf_counter()
        wait_for("ok")
        sec["wait_insert"] += time.perf_counter() - t
        batches += 1
        crops, rows = [], []

    for idx, p in enumerate(paths):
        t = time.perf_counter()
        img = Image.open(p)
        img.load()
        img = img.convert("RGB")
        canvas, lb = letterbox(img, a.size)
        sec["decode"] += time.perf_counter() - t
        t = time.perf_counter()
        labels = segment(canvas[None])[0]
        sec["segment"] += time.perf_counter() - t
        t = time.perf_counter()
        found = extract_garments(img, unletterbox(labels, lb), garment_label_ids=garment_ids,
                                 min_mask_fraction=a.min_mask_fraction, crop_size=256, open_fraction=a.open_fraction)
        sec["crop"] += time.perf_counter() - t
        for g in found:
            crops.append(g.crop)
            rows.append([idx, g.label, [g.bbox.x0, g.bbox.y0, g.bbox.x1, g.bbox.y1]])
            garments += 1
            if len(crops) >= a.embed_batch:
                flush_batch()
    flush_batch()
    say({"done": True, "images": len(paths), "garments": garments, "batches": batches, "seconds": sec})
    return 0


if __name__ == "__main__":
    sys.exit(main())
