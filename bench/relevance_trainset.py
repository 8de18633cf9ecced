"""An in-domain segmenter training set: bench/relevance_data.py's renderer, written in the trainer's DATA format.

    .venv/bin/python -m bench.relevance_trainset OUT [--n 1200]
    lookstream train segmenter OUT --steps 1500 --size 128 ...

The same street looks and shop shots the relevance benchmark draws, with ``colour_mode="random"`` (garments in any
hue, colourful backgrounds): a segmenter trained on it must learn shapes, not hues. Three in four images are street
looks (what the benchmark asks), one in four a product's shop shot (mannequin front/back or flat: what it indexes).

Folder (modeltools/train_segmenter.py's documented format): ``OUT/images/<name>.jpg`` and ``OUT/labels/<name>.png``
(8-bit, same size, pixel = one of the 18 label ids; the renderer's garment slots ``GARMENT_ID0 + i`` become the worn
product's label id, body parts keep theirs), plus ``OUT/trainset.json`` (seeds, colour mode, counts).

Seeds are disjoint from every seed the benchmark uses: it renders products from ``--render-seed`` (default 1; shop
shots from ``seed * 7919 + 1``) and looks from ``--look-seed`` (default 1001); the unit tests use seed 3. This set
takes products from 50001, shop shots from 50002 and looks from 60001 (``check_disjoint`` refuses the benchmark's).
The products themselves are other products (another seed): no benchmark garment is in the training set.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bench.relevance_data import GARMENT_ID0, _outfit, draw_flat, draw_wearing, products, street_look
from contracts.models import LABEL_IDS

PRODUCT_SEED, SHOP_SEED, LOOK_SEED = 50001, 50002, 60001
BENCH_SEEDS = {1, 1 * 7919 + 1, 1001, 3}  # relevance_data.generate's defaults (products, shop rng, looks), unit tests
COLOUR_MODE = "random"


def check_disjoint(*seeds: int) -> None:
    used = set(seeds) & BENCH_SEEDS
    if used:
        raise ValueError(f"seeds {sorted(used)} are the relevance benchmark's: a training set must not share them")


def to_label_ids(truth: np.ndarray, worn) -> np.ndarray:
    """The renderer's truth map (0, body label ids, GARMENT_ID0 + slot) -> the 18 label ids."""
    out = truth.copy()
    for i, p in enumerate(worn):
        out[truth == GARMENT_ID0 + i] = LABEL_IDS[p.label]
    bad = np.setdiff1d(np.unique(out), list(LABEL_IDS.values()))
    if bad.size:
        raise ValueError(f"truth ids {bad.tolist()} are not label ids")
    return out


def write(out: Path, n: int, n_products: int = 300, product_seed: int = PRODUCT_SEED, shop_seed: int = SHOP_SEED,
          look_seed: int = LOOK_SEED) -> dict:
    """``n`` images (3/4 street looks, 1/4 shop shots) into ``out`` in the trainer's DATA format."""
    check_disjoint(product_seed, shop_seed, look_seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    prods = products(n_products, product_seed, COLOUR_MODE)
    by_label: dict = {}
    for p in prods:
        by_label.setdefault(p.label, []).append(p)
    n_shop = n // 4
    counts = {"looks": 0, "shop": 0}
    srng = random.Random(shop_seed)
    for i in range(n_shop):  # shop shots, product by product, each in one of the benchmark's three kinds
        p = prods[i % len(prods)]
        kind = srng.choice(["front", "back", "flat"])
        if kind == "flat":
            img, truth = draw_flat(srng, p)
        else:
            img, truth = draw_wearing(srng, [p], mannequin=True, flip=(kind == "back"))
        name = f"s{i:05d}-{kind}"
        img.save(out / "images" / f"{name}.jpg", format="JPEG", quality=92)
        Image.fromarray(to_label_ids(truth, [p])).save(out / "labels" / f"{name}.png")
        counts["shop"] += 1
    lrng = random.Random(look_seed)
    for i in range(n - n_shop):
        worn = _outfit(lrng, by_label)
        data, truth, _ = street_look(lrng, worn, background_sat=0.8)  # as generate() does for colour_mode="random"
        name = f"l{i:05d}"
        (out / "images" / f"{name}.jpg").write_bytes(data)
        Image.fromarray(to_label_ids(truth, worn)).save(out / "labels" / f"{name}.png")
        counts["looks"] += 1
    info = {"renderer": "bench/relevance_data.py", "colour_mode": COLOUR_MODE, "images": n, **counts,
            "products": n_products, "seeds": {"products": product_seed, "shop": shop_seed, "looks": look_seed}}
    (out / "trainset.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.relevance_trainset", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=1200, help="images (default 1200, as the default recipe)")
    ap.add_argument("--products", type=int, default=300, help="products the looks and shop shots wear (default 300)")
    a = ap.parse_args(argv)
    print(json.dumps(write(a.out, a.n, a.products)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
