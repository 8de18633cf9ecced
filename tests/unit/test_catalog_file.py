"""catalog.jsonl lines may name several images and the product's own garments (contracts 1.1)."""

from __future__ import annotations

import json

from contracts.models import ProductEvent
from workers.local.ingest import read_catalog


def test_jsonl_images_and_garments_become_product_event_fields(tmp_path):
    for name in ("a.jpg", "a-back.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"\xff\xd8" + name.encode())
    lines = [{"product_id": "dress-1", "image": "a.jpg", "images": ["a-back.jpg"], "garments": ["Dress"],
              "metadata": {"title": "Dress"}},
             {"product_id": "look-1", "image": "b.jpg"}]
    (tmp_path / "catalog.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    a, b = read_catalog(tmp_path)
    assert a.more_images == (tmp_path / "a-back.jpg",) and a.garments == ("Dress",)
    ev = ProductEvent(tenant="t", product_id=a.product_id, metadata=a.metadata, **a.event_fields())
    assert [i.data for i in ev.all_images] == [b"\xff\xd8a.jpg", b"\xff\xd8a-back.jpg"] and ev.garments == ["Dress"]
    ev = ProductEvent(tenant="t", product_id=b.product_id, **b.event_fields())
    assert ev.image.data == b"\xff\xd8b.jpg" and ev.images is None and ev.garments is None
