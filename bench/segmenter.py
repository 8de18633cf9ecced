"""Segmenter quality on held-out rendered street looks: the trained tiny SegFormer vs the colour-rule model.

Run with the model env's python (in-process, the same weights Triton serves; Triton gives the same label maps, see
tests/models/test_offline_models.py):

    .venv-models/bin/python bench/segmenter.py --weights triton_models/segformer/2/weights --n 200

The street looks come from modeltools/segdata.py with a seed the training set never used (random outfits, random
garment colours, backgrounds, scale, lean, light, blur, JPEG 40-90). The colour-rule model is `models init --random
--tiny` (declared random encoder + a classifier fitted to a hue rule), written fresh into a temporary folder.
Per garment label present in a look: detected when the predicted mask of that label has IoU >= 0.5 with the true
one; mean IoU is over every (look, garment label) pair, then per label. Prints a table; --markdown for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "modeltools"))
import segdata  # noqa: E402
from train_segmenter import NON_GARMENT, letterbox_pair, predict  # noqa: E402
from weights import LABELS  # noqa: E402

EVAL_SEED = 424242  # never used for training (the default set renders seed 0)


def street_set(n: int, size: int, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(EVAL_SEED)
    (tmp / "images").mkdir(parents=True)
    (tmp / "labels").mkdir()
    xs, ys = [], []
    from PIL import Image

    for i in range(n):
        img, lab = segdata.street_look(rng, list(segdata.random_outfit(rng).values()))
        ip, lp = tmp / "images" / f"s{i}.jpg", tmp / "labels" / f"s{i}.png"
        img.save(ip, quality=95)
        Image.fromarray(lab).save(lp)
        x, y = letterbox_pair(ip, lp, size)
        xs.append(x)
        ys.append(y)
    return np.stack(xs), np.stack(ys)


def score(pred: np.ndarray, gt: np.ndarray) -> dict:
    per_label: dict[str, list[float]] = {}
    for p, g in zip(pred, gt):
        for i in np.unique(g):
            name = LABELS[int(i)]
            if name in NON_GARMENT:
                continue
            t, q = g == i, p == i
            per_label.setdefault(name, []).append(float((t & q).sum() / (t | q).sum()))
    pairs = [v for vs in per_label.values() for v in vs]
    return {"detection_recall": float(np.mean([v >= 0.5 for v in pairs])), "mean_iou": float(np.mean(pairs)),
            "pairs": len(pairs), "per_label": {k: (len(v), float(np.mean(v)), float(np.mean([x >= 0.5 for x in v])))
                                               for k, v in sorted(per_label.items())}}


def load(weights: Path):
    import torch
    from transformers import SegformerForSemanticSegmentation

    torch.set_num_threads(1)  # as each Triton instance (2 threads on 2 shared cores were several times slower)
    return SegformerForSemanticSegmentation.from_pretrained(str(weights)).eval()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", type=Path, required=True, help="the trained segmenter's weights folder")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=None, help="S (default: as served, the trained model's input_size)")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    t0 = time.time()
    prov = json.loads((a.weights / "lookstream.json").read_text())
    a.size = a.size or int(prov.get("input_size") or 256)
    with tempfile.TemporaryDirectory() as d:
        x, y = street_set(a.n, a.size, Path(d) / "street")
        colour = Path(d) / "colour"
        subprocess.run([sys.executable, str(ROOT / "modeltools" / "weights.py"), "init", "--repo", str(colour),
                        "--random", "--tiny", "--models", "segformer"], check=True, capture_output=True, cwd=str(ROOT))
        rows = {}
        for name, w in (("trained tiny (rendered people)", a.weights),
                        ("colour rule (declared random tiny)", colour / "segformer" / "1" / "weights")):
            rows[name] = score(predict(load(w), x, "cpu"), y)
    steps = prov.get("training", {}).get("steps")
    print(f"\n== segmenter on {a.n} held-out rendered street looks (seed {EVAL_SEED}, S={a.size}); "
          f"{time.time() - t0:.0f} s ==")
    head = "| model | detection recall (IoU >= 0.5) | mean IoU, garment labels | (look, garment) pairs |"
    lines = [head, "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['detection_recall']:.3f} | {r['mean_iou']:.3f} | {r['pairs']} |")
    lines += ["", "| label | n | trained IoU | trained recall | colour-rule IoU | colour-rule recall |", "|---|---|---|---|---|---|"]
    (tn, tr), (cn, cr) = rows.items()
    for label, (n, iou, rec) in tr["per_label"].items():
        c = cr["per_label"].get(label, (0, 0.0, 0.0))
        lines.append(f"| {label} | {n} | {iou:.3f} | {rec:.3f} | {c[1]:.3f} | {c[2]:.3f} |")
    print("\n".join(lines))
    print(f"\ntrained model: {a.weights} ({steps} steps, validation garment mIoU "
          f"{prov.get('validation', {}).get('garment_miou')}, recipe {prov.get('recipe_key', '-')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
