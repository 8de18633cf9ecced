"""The demo's data: a shop catalog with one garment per photo, and a street look that is not in it."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from workers.local.demo import LOOK, write_demo


def test_demo_catalog_and_a_street_look_not_in_it(tmp_path):
    demo = write_demo(tmp_path, n=12, seed=3)
    lines = [json.loads(line) for line in (tmp_path / "catalog.jsonl").read_text().splitlines()]
    assert [e["product_id"] for e in lines] == [f"demo-{i:04d}" for i in range(12)]
    kinds = {e["product_id"]: e["metadata"]["attributes"]["garment"] for e in lines}
    assert set(demo.look_products) == set(LOOK) and all(kinds[p] == k for k, p in demo.look_products.items())
    look = np.asarray(Image.open(demo.look))
    assert look.shape == (384, 256, 3)
    for e in lines:
        shop = np.asarray(Image.open(tmp_path / e["image"]))
        assert shop.shape == look.shape and np.abs(shop.astype(int) - look).mean() > 10  # not a catalog photo
    assert json.loads((tmp_path / "street-look.json").read_text())["wears"] == demo.look_products
    again = write_demo(tmp_path / "again", n=12, seed=3)  # same seed, same bytes
    assert (tmp_path / "again" / "street-look.jpg").read_bytes() == demo.look.read_bytes() and again.look_products == demo.look_products
