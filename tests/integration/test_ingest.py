"""The ingest pipeline end to end on real services: broker, tritonserver, Milvus, Redis, worker processes."""

from __future__ import annotations

import io
import json
import signal

import pytest
import redis
from PIL import Image

from contracts import codec, topics
from contracts.client import CatalogPublisher
from contracts.models import DeadLetter, ProductEvent
from workers.ingest import OutcomeWatcher, ingest, read_catalog
from workers.store import GarmentIndex, MetadataCache

from conftest import wait_for


def start_ingest_workers(pipeline, segmentation: int = 1):
    procs = [pipeline.start_worker("segmentation") for _ in range(segmentation)]
    procs.append(pipeline.start_worker("embedding"))
    for p in procs:
        pipeline.wait_ready(p, timeout=90)
    return procs


def milvus_rows(s, tenant):
    with GarmentIndex(s) as index:  # closed: leaked gRPC channels pile up on the one Milvus Lite server
        return index.rows(f'tenant == "{tenant}"', ("id", "product_id", "label"))


def test_catalog_becomes_searchable_exactly_once(pipeline, sample_catalog):
    root, products = sample_catalog
    s = pipeline.settings
    start_ingest_workers(pipeline)
    entries = read_catalog(root)
    assert len(entries) == 50
    report = ingest(s, entries, "acme", timeout=300)
    assert report.missing == [] and report.failed == {}
    # every product event ended in exactly one IndexedEvent, with the garments drawn in the picture
    assert report.indexed == 50
    by_product = {o.product_id: o for o in report.outcomes.values()}
    exact = 0
    for p in products:  # every garment drawn is found (the tiny test model may add a small border blob)
        assert set(p.garments) <= set(by_product[p.product_id].labels), p.product_id
        exact += sorted(by_product[p.product_id].labels) == sorted(p.garments)
    assert exact >= 45, f"only {exact}/50 products segmented exactly"
    # Milvus holds exactly the garments the IndexedEvents announced, once each
    rows = milvus_rows(s, "acme")
    expected = {g for o in by_product.values() for g in o.garment_ids}
    assert len(rows) == len(expected) == sum(len(o.labels) for o in by_product.values())
    assert {r["id"] for r in rows} == expected
    # metadata cached in Redis
    cache = MetadataCache(s)
    cached = cache.get_many("acme", [p.product_id for p in products])
    assert {k: v.brand for k, v in cached.items()} == {p.product_id: p.metadata["brand"] for p in products}

    # replaying the same events (the same bytes, again) changes nothing
    report2 = ingest(s, entries, "acme", timeout=300)
    assert report2.indexed == 50
    assert {r["id"] for r in milvus_rows(s, "acme")} == expected


def test_update_replaces_garments_and_delete_removes_everything(pipeline, sample_catalog):
    root, products = sample_catalog
    s = pipeline.settings
    start_ingest_workers(pipeline)
    look = next(p for p in products if len(p.garments) >= 3)
    flat = next(p for p in products if len(p.garments) == 1 and p.garments[0] not in look.garments
                and p.metadata["attributes"]["garments"] == p.garments[0])
    index = GarmentIndex(s)
    watcher = OutcomeWatcher(s)
    try:
        with CatalogPublisher(s.bootstrap_servers, topic=s.topic_products) as pub:
            e1 = pub.upsert("acme", "sku-1", image=look.path.read_bytes(), metadata={"title": "v1", "price": 10})
            pub.flush()
            watcher.wait({e1.event_id}, 120)
            first = watcher.outcomes[e1.event_id]
            assert set(look.garments) <= set(first.labels)
            # a new image for the same product: its garments replace the old ones
            e2 = pub.upsert("acme", "sku-1", image=flat.path.read_bytes(), metadata={"title": "v2", "price": 12})
            pub.flush()
            watcher.wait({e2.event_id}, 120)
            out2 = watcher.outcomes[e2.event_id]
            assert out2.labels == list(flat.garments)
            assert out2.removed == len(first.labels)
            rows = milvus_rows(s, "acme")
            assert [r["label"] for r in rows if r["product_id"] == "sku-1"] == list(flat.garments)
            assert MetadataCache(s).get_many("acme", ["sku-1"])["sku-1"].title == "v2"
            # the search index answers with it; after the delete it never does
            from contracts.models import Filters
            import numpy as np

            probe = np.ones((1, 2048), np.float32) / np.sqrt(2048)
            hits = index.search("acme", flat.garments[0], probe, 10, Filters())[0]
            assert "sku-1" in {h.product_id for h in hits}
            e3 = pub.delete("acme", "sku-1")
            pub.flush()
            watcher.wait({e3.event_id}, 120)
            out3 = watcher.outcomes[e3.event_id]
            assert out3.status == "deleted" and out3.removed == 1
            hits = index.search("acme", flat.garments[0], probe, 10, Filters())[0]
            assert "sku-1" not in {h.product_id for h in hits}
            assert [r for r in milvus_rows(s, "acme") if r["product_id"] == "sku-1"] == []
            assert MetadataCache(s).get_many("acme", ["sku-1"]) == {}
    finally:
        watcher.close()
        index.close()


def _jpeg(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def test_bad_inputs_are_dead_lettered_and_the_partition_moves_on(pipeline, sample_catalog, collector_factory):
    root, products = sample_catalog
    s = pipeline.settings
    start_ingest_workers(pipeline)
    good = products[0]
    png = io.BytesIO()
    Image.new("RGB", (20000, 20000)).save(png, format="PNG")  # 400 MP declared: over the pixel limit
    bad_images = {
        "corrupt": b"\xff\xd8\xff\xe0 definitely not a jpeg",
        "truncated": _jpeg((400, 400))[:300],
        "not-an-image": b"%PDF-1.4 a pdf pretending",
        "over-pixel-limit": png.getvalue(),
    }
    dlq = collector_factory(s, [topics.dlq(s.topic_products)])
    watcher = OutcomeWatcher(s)
    producer = CatalogPublisher(s.bootstrap_servers, topic=s.topic_products)
    try:
        # all records go to one partition, so the good one comes after every bad one (each keyed by its product)
        key = b"acme:same-partition"
        sent = {}
        for name, data in bad_images.items():
            ev = ProductEvent(tenant="acme", product_id=name, image={"bytes": data})
            producer.producer.send(s.topic_products, key=ev.key.encode(), value=codec.encode(ev), partition=0)
            sent[ev.event_id] = name
        for name, raw in {"invalid-schema": b'{"tenant": "acme", "product_id": 7}',
                          "zero-size": b"",
                          "not-json": b"\x00\x01binary",
                          "future-version": json.dumps({"schema_version": "2.0", "tenant": "acme",
                                                        "product_id": "x", "event_id": "fv-1",
                                                        "image": {"uri": "file:///x.jpg"}}).encode()}.items():
            producer.producer.send(s.topic_products, key=key, value=raw, headers=[("case", name.encode())], partition=0)
        ok = ProductEvent(tenant="acme", product_id=good.product_id, image={"bytes": good.path.read_bytes()})
        producer.producer.send(s.topic_products, key=ok.key.encode(), value=codec.encode(ok), partition=0)
        producer.flush()
        watcher.wait({ok.event_id, *sent}, 120)
        assert watcher.outcomes[ok.event_id].status == "indexed"  # the partition was not blocked
        letters = wait_for(lambda: len(dlq.of(topics.dlq(s.topic_products))) >= 8 and dlq.of(topics.dlq(s.topic_products)),
                           60, "8 dead letters")
        decoded = [codec.decode(DeadLetter, r.value) for r in letters]
        assert len(decoded) == 8
        reasons = {sent.get(d.event_id) or dict(d.headers).get("case", b"").decode(): d for d in decoded}
        assert set(reasons) == set(bad_images) | {"invalid-schema", "zero-size", "not-json", "future-version"}
        assert "pixel limit" in reasons["over-pixel-limit"].reason
        assert "truncated" in reasons["truncated"].reason or "corrupt" in reasons["truncated"].reason
        assert "not a recognised image" in reasons["not-an-image"].reason
        assert "product_id" in reasons["invalid-schema"].reason
        assert "empty record" in reasons["zero-size"].reason
        assert "unsupported schema_version '2.0'" in reasons["future-version"].reason
        for d in decoded:
            assert d.stage == "segmentation" and d.source_topic == s.topic_products and d.attempts >= 1
        assert reasons["corrupt"].value  # the original bytes are kept
        assert codec.decode(ProductEvent, reasons["corrupt"].value).product_id == "corrupt"
    finally:
        producer.close()
        watcher.close()


def test_two_segmentation_workers_share_the_partitions(pipeline, sample_catalog):
    root, products = sample_catalog
    s = pipeline.settings
    start_ingest_workers(pipeline, segmentation=2)
    entries = read_catalog(root)[:30]
    report = ingest(s, entries, "duo", timeout=300)
    assert report.indexed == 30 and not report.missing
    rows = milvus_rows(s, "duo")
    announced = {g for o in report.outcomes.values() for g in o.garment_ids}
    assert len(rows) == len(announced) and {r["id"] for r in rows} == announced
    # both workers did part of the work (4 partitions, keys spread across them)
    import urllib.request

    seg = [p for p in pipeline.procs if "segmentation" in p.name]
    done = []
    for p in seg:
        text = urllib.request.urlopen(p.metrics_url + "/metrics").read().decode()
        done.append(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                        if line.startswith("lookstream_messages_total{") and 'outcome="ok"' in line))
    assert sum(done) == 30 and all(d > 0 for d in done), done


def test_sigterm_mid_batch_loses_and_duplicates_nothing(pipeline, sample_catalog):
    root, products = sample_catalog
    s = pipeline.settings
    seg, emb = start_ingest_workers(pipeline)
    entries = read_catalog(root)[:40]
    watcher = OutcomeWatcher(s)
    try:
        with CatalogPublisher(s.bootstrap_servers, topic=s.topic_products) as pub:
            ids = {pub.publish(ev) and ev.event_id for ev in
                   (ProductEvent(tenant="term", product_id=e.product_id, image={"bytes": e.image.read_bytes()})
                    for e in entries)}
        wait_for(lambda: sum(1 for e in ids if e in watcher.outcomes) >= 5, 120, "first products indexed")
        seg.stop(sig=signal.SIGTERM, timeout=30)  # finishes its batch, commits, leaves the group
        emb.stop(sig=signal.SIGTERM, timeout=30)
        assert seg.pid() is None and emb.pid() is None
        start_ingest_workers(pipeline)
        watcher.wait(ids, 240)
        assert all(e in watcher.outcomes for e in ids)
    finally:
        watcher.close()
    rows = milvus_rows(s, "term")
    announced = {g for e in ids for g in watcher.outcomes[e].garment_ids}
    assert len(rows) == len(announced) and {r["id"] for r in rows} == announced
