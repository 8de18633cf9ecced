"""Contract 1.1 end to end on real services: a product's own garments, several images per product, one result per
product in a search."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from contracts.client import CatalogPublisher, LookClient
from workers.local.sample_catalog import draw_flat, draw_look
from workers.local.ingest import OutcomeWatcher
from workers.adapters.milvus_index import GarmentIndex

from support.pipeline import new_pipeline


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pipeline(services):
    p = new_pipeline(services)
    procs = [p.start_worker(k) for k in ("segmentation", "embedding", "query")]
    for proc in procs:
        p.wait_ready(proc, timeout=90)
    yield p
    p.stop_all()


def _publish(pipeline, events: list[dict]):
    """Upsert each ``dict(product_id=..., **upsert kwargs)``; wait for every outcome; {product_id: IndexedEvent}."""
    s = pipeline.settings
    watcher = OutcomeWatcher(s)
    try:
        with CatalogPublisher(s.bootstrap_servers, topic=s.topic_products) as pub:
            sent = {pub.upsert("acme", e.pop("product_id"), **e).event_id: None for e in events}
            pub.flush()
        watcher.wait(set(sent), 180)
        return {o.product_id: o for o in (watcher.outcomes[e] for e in sent)}
    finally:
        watcher.close()


def _rows(s, product_id):
    with GarmentIndex(s) as index:
        return index.rows(f'tenant == "acme" and product_id == "{product_id}"', ("id", "label", "image_id"))


def test_only_the_products_own_garment_is_indexed(pipeline):
    s = pipeline.settings
    outfit = _jpeg(draw_look(random.Random(3), ("Upper-clothes", "Pants")))
    out = _publish(pipeline, [
        {"product_id": "jeans-1", "image": outfit, "garments": ["Pants"]},
        {"product_id": "outfit-1", "image": outfit},                       # no list: every garment
        {"product_id": "dress-1", "image": outfit, "garments": ["Dress"]},  # not in the picture
    ])
    assert out["jeans-1"].status == "indexed" and out["jeans-1"].labels == ["Pants"]
    assert out["jeans-1"].wanted_labels == ["Pants"]
    assert {"Upper-clothes", "Pants"} <= set(out["jeans-1"].found_labels)
    assert [r["label"] for r in _rows(s, "jeans-1")] == ["Pants"]
    assert {"Upper-clothes", "Pants"} <= set(out["outfit-1"].labels)
    assert out["outfit-1"].wanted_labels is None
    assert {r["label"] for r in _rows(s, "outfit-1")} == set(out["outfit-1"].labels)
    nf = out["dress-1"]
    assert nf.status == "garment_not_found" and nf.labels == [] and nf.garment_ids == []
    assert nf.wanted_labels == ["Dress"] and {"Upper-clothes", "Pants"} <= set(nf.found_labels)
    assert _rows(s, "dress-1") == []


def test_several_images_are_indexed_and_a_search_lists_each_product_once(pipeline):
    s = pipeline.settings
    shots = [_jpeg(draw_flat(random.Random(k), "Upper-clothes")) for k in (10, 11, 12)]
    others = [_jpeg(draw_flat(random.Random(k), "Upper-clothes")) for k in (20, 21)]
    out = _publish(pipeline, [
        {"product_id": "top-multi", "images": shots, "garments": ["Upper-clothes"]},
        {"product_id": "top-a", "image": others[0]},
        {"product_id": "top-b", "image": others[1]},
    ])
    multi = out["top-multi"]
    assert multi.status == "indexed" and len(multi.image_ids) == 3 and len(set(multi.image_ids)) == 3
    assert multi.labels == ["Upper-clothes"] * 3
    rows = _rows(s, "top-multi")
    assert sorted(r["image_id"] for r in rows) == sorted(multi.image_ids)
    with LookClient(s.bootstrap_servers, tenant="acme", request_topic=s.topic_look_requests) as c:
        reply = c.ask(shots[1], top_k=3, garments=["Upper-clothes"], timeout=60)
    assert reply.status.value == "ok", reply.error
    (g,) = reply.garments
    ids = [m.product_id for m in g.matches]
    assert len(ids) == len(set(ids)), ids  # three rows of top-multi, listed once
    assert ids[0] == "top-multi" and g.matches[0].score == pytest.approx(1.0, abs=1e-3)  # its best image
    # three distinct products although top-multi's three rows are the closest: the search over-fetches
    assert len(ids) == 3


def test_a_new_image_set_replaces_the_old_one(pipeline):
    s = pipeline.settings
    a = [_jpeg(draw_flat(random.Random(k), "Skirt")) for k in (30, 31)]
    first = _publish(pipeline, [{"product_id": "skirt-1", "images": a}])["skirt-1"]
    second = _publish(pipeline, [{"product_id": "skirt-1", "image": a[1]}])["skirt-1"]
    assert len(first.image_ids) == 2 and second.image_ids == [first.image_ids[1]]
    assert second.removed == 1
    assert [r["image_id"] for r in _rows(s, "skirt-1")] == [first.image_ids[1]]
