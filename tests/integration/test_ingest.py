"""The ingest pipeline end to end on real services: broker, tritonserver, Milvus, Redis, worker processes."""

from __future__ import annotations

import io
import json
import signal
import time

import pytest
import redis
from PIL import Image

from contracts import codec, topics
from contracts.client import CatalogPublisher
from contracts.models import DeadLetter, GarmentsEvent, IndexedEvent, ProductEvent
from workers.local.ingest import OutcomeWatcher, ingest, read_catalog
from workers.adapters.milvus_index import GarmentIndex
from workers.adapters.product_state import MetadataCache

from support.waits import count_by_event, frozen, metric, rewind_group, settled, terminate, wait_for

GRACE_S = 20  # the worker's SIGTERM budget (Kubernetes terminationGracePeriodSeconds is larger)


def start_ingest_workers(pipeline, segmentation: int = 1):
    procs = [pipeline.start_worker("segmentation") for _ in range(segmentation)]
    procs.append(pipeline.start_worker("embedding"))
    for p in procs:
        pipeline.wait_ready(p, timeout=90)
    return procs


def milvus_rows(s, tenant):
    with GarmentIndex(s) as index:  # closed: leaked gRPC channels pile up on the one Milvus Lite server
        return index.rows(f'tenant == "{tenant}"', ("id", "product_id", "label"))


def test_catalog_becomes_searchable_exactly_once(pipeline, sample_catalog, collector_factory):
    root, products = sample_catalog
    s = pipeline.settings
    workers = start_ingest_workers(pipeline)
    col = collector_factory(s, [s.topic_garments, s.topic_indexed])
    entries = read_catalog(root)
    assert len(entries) == 50
    report = ingest(s, entries, "acme", timeout=300)
    assert report.missing == [] and report.failed == {}
    # every product event ended in exactly one IndexedEvent (every record counted), after one GarmentsEvent
    assert report.indexed == 50
    events = set(report.outcomes)
    settled(lambda: len(col.of(s.topic_indexed)))
    indexed = count_by_event(col.of(s.topic_indexed), IndexedEvent)
    garments = count_by_event(col.of(s.topic_garments), GarmentsEvent)
    assert indexed == garments == {e: 1 for e in events}
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

    # a real replay: the workers stop, the segmentation group is rewound to offset 0, the very same
    # product records are consumed again (and their GarmentsEvents again by the embedding worker).
    # Each event gets a second outcome; Milvus keeps exactly the same rows.
    for w in workers:
        assert terminate(w, 20)[0] == 0
    rewind_group(s, f"{s.group_id_prefix}-segmentation", s.topic_products)
    start_ingest_workers(pipeline)
    wait_for(lambda: len(col.of(s.topic_indexed)) >= 100, 300, "a second outcome for every event")
    settled(lambda: len(col.of(s.topic_indexed)), quiet=2)
    assert count_by_event(col.of(s.topic_indexed), IndexedEvent) == {e: 2 for e in events}
    assert count_by_event(col.of(s.topic_garments), GarmentsEvent) == {e: 2 for e in events}
    replayed = [codec.decode(IndexedEvent, r.value) for r in col.of(s.topic_indexed)][50:]
    assert all(o.status == "indexed" and set(o.garment_ids) == set(report.outcomes[o.event_id].garment_ids)
               for o in replayed)
    rows = milvus_rows(s, "acme")
    assert len(rows) == len(expected) and {r["id"] for r in rows} == expected
    with GarmentIndex(s) as index:
        assert index.count('tenant == "acme"') == len(expected)


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

            dim = index.embedder.dim  # the served embedder's width
            probe = np.ones((1, dim), np.float32) / np.sqrt(dim)
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


def test_sigterm_mid_batch_finishes_the_batch_commits_and_exits_0(pipeline, sample_catalog, collector_factory):
    """SIGTERM while a batch is provably in flight: the worker finishes that batch (its outputs appear after
    the signal), commits, leaves the group and exits 0 by itself; the restarted worker replays nothing."""
    root, products = sample_catalog
    s = pipeline.settings
    seg, emb = start_ingest_workers(pipeline)
    col = collector_factory(s, [s.topic_garments, s.topic_indexed])
    entries = read_catalog(root)[:40]
    with CatalogPublisher(s.bootstrap_servers, topic=s.topic_products) as pub:
        ids = set()
        for e in entries:
            ev = ProductEvent(tenant="term", product_id=e.product_id, image={"bytes": e.image.read_bytes()})
            pub.publish(ev)
            ids.add(ev.event_id)
    wait_for(lambda: len(col.of(s.topic_garments)) >= 5, 120, "first products segmented")
    triton = pipeline.services.services["triton"].proc
    with frozen(triton):  # every Triton call blocks: the batch the worker holds now stays in flight
        in_flight = wait_for(lambda: metric(seg, "lookstream_in_flight", worker="segmentation") or None, 30,
                             "a segmentation batch in flight")
        before = settled(lambda: len(col.of(s.topic_garments)))  # nothing leaves a worker blocked on Triton
        seg._popen.send_signal(signal.SIGTERM)  # the pid we started, signalled while its batch is held
        time.sleep(0.5)
        assert seg._popen.poll() is None, "the worker died on SIGTERM instead of finishing its batch"
    rc = seg._popen.wait(timeout=GRACE_S)  # raises if it does not exit by itself within the grace time
    seg.pid_file.unlink(missing_ok=True)
    assert rc == 0, seg.tail(30)
    # the held batch was finished: exactly its records came out after the signal
    wait_for(lambda: len(col.of(s.topic_garments)) >= before + in_flight, 30, "the in-flight batch's outputs")
    assert len(col.of(s.topic_garments)) == before + in_flight
    log = seg.log_file.read_text(errors="replace")
    assert log.index("stop requested; finishing the current batch") < log.index("segmentation: closed")
    rc, _ = terminate(emb, GRACE_S)
    assert rc == 0, emb.tail(30)

    start_ingest_workers(pipeline)
    wait_for(lambda: set(count_by_event(col.of(s.topic_indexed), IndexedEvent)) >= ids, 240, "every outcome")
    time.sleep(2)  # a replay of the committed batch would land now: long after its first outputs
    # every record counted: one GarmentsEvent and one IndexedEvent per product event, no replay
    garments = count_by_event(col.of(s.topic_garments), GarmentsEvent)
    indexed = count_by_event(col.of(s.topic_indexed), IndexedEvent)
    assert set(garments) == set(indexed) == ids
    assert max(garments.values()) == 1 and max(indexed.values()) == 1, (garments, indexed)
    rows = milvus_rows(s, "term")
    announced = {g for r in col.of(s.topic_indexed) for g in codec.decode(IndexedEvent, r.value).garment_ids}
    assert len(rows) == len(announced) and {r["id"] for r in rows} == announced
