"""bench/relevance_trainset.py: the in-domain segmenter training set is in the trainer's DATA format (pure logic)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import relevance_trainset as T
from bench.relevance_data import GARMENT_ID0, products
from contracts.models import LABEL_IDS

ROOT = Path(__file__).resolve().parents[2]


def test_writes_the_trainers_format_with_label_ids_only(tmp_path):
    info = T.write(tmp_path, 8, n_products=30)
    images = sorted((tmp_path / "images").iterdir())
    labels = sorted((tmp_path / "labels").iterdir())
    assert [p.stem for p in images] == [p.stem for p in labels] and len(images) == 8
    assert (info["looks"], info["shop"]) == (6, 2)
    assert json.loads((tmp_path / "trainset.json").read_text())["colour_mode"] == "random"
    seen = set()
    for img, lab in zip(images, labels):
        assert img.suffix == ".jpg" and lab.suffix == ".png"
        im, lm = Image.open(img), Image.open(lab)
        assert lm.mode == "L" and lm.size == im.size
        ids = set(np.unique(np.asarray(lm)).tolist())
        assert ids <= set(LABEL_IDS.values()), ids  # never a renderer slot id (GARMENT_ID0 + i)
        seen |= ids
    garment_ids = {LABEL_IDS[n] for n in ("Upper-clothes", "Pants", "Skirt", "Dress", "Hat", "Bag")}
    assert seen & garment_ids  # garments are labelled, not lost to Background
    # the trainer reads it as it is (find_pairs / letterbox_pair validate names, modes, sizes and ids)
    sys.path.insert(0, str(ROOT / "modeltools"))
    import train_segmenter

    pairs = train_segmenter.find_pairs(tmp_path)
    x, y = train_segmenter.letterbox_pair(pairs[0][1], pairs[0][2], 64)
    assert x.shape == (64, 64, 3) and y.shape == (64, 64)


def test_garment_slots_become_their_products_label_ids():
    worn = [p for p in products(40, seed=50001) if p.label == "Hat"][:1] + \
           [p for p in products(40, seed=50001) if p.label == "Bag"][:1]
    truth = np.array([[0, LABEL_IDS["Face"], GARMENT_ID0, GARMENT_ID0 + 1]], np.uint8)
    out = T.to_label_ids(truth, worn)
    assert out.tolist() == [[0, LABEL_IDS["Face"], LABEL_IDS["Hat"], LABEL_IDS["Bag"]]]
    with pytest.raises(ValueError):  # a slot nobody wears is not a label id
        T.to_label_ids(np.array([[GARMENT_ID0 + 5]], np.uint8), worn)


def test_refuses_the_benchmarks_seeds(tmp_path):
    for seeds in ({"product_seed": 1}, {"look_seed": 1001}, {"shop_seed": 7920}):
        with pytest.raises(ValueError, match="benchmark"):
            T.write(tmp_path, 4, **seeds)
