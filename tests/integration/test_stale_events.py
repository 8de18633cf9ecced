"""Old events never overwrite newer state (issue 12 item 8), end to end through the real workers: a replayed
older update is skipped (IndexedEvent ``stale``), and a replayed upsert after a delete does not bring the
product back."""

from __future__ import annotations

from datetime import timedelta

from contracts.client import CatalogPublisher
from contracts.models import ImageRef, ProductEvent, ProductMetadata, utc_now
from workers.local.ingest import OutcomeWatcher
from workers.adapters.milvus_index import GarmentIndex
from workers.adapters.product_state import MetadataCache


def test_replayed_old_events_are_stale(pipeline, sample_catalog):
    _root, products = sample_catalog
    s = pipeline.settings
    for kind in ("segmentation", "embedding"):
        pipeline.wait_ready(pipeline.start_worker(kind), timeout=90)
    a, b = products[0], products[1]
    now = utc_now()

    def event(image, title, minutes_ago, op="upsert"):
        return ProductEvent(tenant="acme", product_id="sku-s", op=op,
                            image=ImageRef(data=image.path.read_bytes()) if op == "upsert" else None,
                            metadata=ProductMetadata(title=title), occurred_at=now - timedelta(minutes=minutes_ago))

    newer, older = event(a, "newer", 1), event(b, "older", 10)
    gone, late = event(a, "", 0, op="delete"), event(b, "late", 5)  # late: an upsert from before the delete
    watcher = OutcomeWatcher(s)
    try:
        with CatalogPublisher(s.bootstrap_servers, topic=s.topic_products) as pub:
            for ev in (newer, older):
                pub.publish(ev)
                pub.flush()
                watcher.wait({ev.event_id}, 120)
            assert watcher.outcomes[newer.event_id].status == "indexed"
            stale = watcher.outcomes[older.event_id]
            assert (stale.status, stale.garment_ids, stale.removed) == ("stale", [], 0)
            with GarmentIndex(s) as index:
                rows = index.rows('tenant == "acme" and product_id == "sku-s"', ("id",))
            assert {r["id"] for r in rows} == set(watcher.outcomes[newer.event_id].garment_ids)
            assert MetadataCache(s).get_many("acme", ["sku-s"])["sku-s"].title == "newer"
            # delete, then an upsert from before the delete arrives (a DLQ replay): the product stays deleted
            for ev in (gone, late):
                pub.publish(ev)
                pub.flush()
                watcher.wait({ev.event_id}, 120)
            assert watcher.outcomes[gone.event_id].status == "deleted"
            assert watcher.outcomes[late.event_id].status == "stale"
            with GarmentIndex(s) as index:
                assert index.rows('tenant == "acme" and product_id == "sku-s"', ("id",)) == []
            assert MetadataCache(s).get_many("acme", ["sku-s"]) == {}
    finally:
        watcher.close()
