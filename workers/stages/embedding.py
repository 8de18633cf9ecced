"""Embedding stage: GarmentsEvent -> (Triton embedder) -> Milvus rows + Redis product states -> IndexedEvent.

The whole batch goes to the stores in a fixed number of round trips (``CatalogWriter``); an event older
than what the product's state already holds is skipped and reported ``stale``.
"""

from __future__ import annotations

import numpy as np

from contracts.models import GarmentsEvent, IndexedEvent, utc_now

from workers.runtime import metrics as m
from workers.runtime.errors import PoisonError
from workers.media.garments import decode_jpeg
from workers.runtime.records import Item, Out, Result, Timings
from workers.runtime.settings import Settings
from workers.adapters.catalog_writer import Applied, CatalogWriter, Change
from workers.adapters.milvus_index import GarmentIndex
from workers.adapters.garment_rows import GarmentRow, event_version, garment_id
from workers.adapters.product_state import MetadataCache


class EmbeddingStage:
    name = "embedding"
    message_type = GarmentsEvent

    def __init__(self, s: Settings, triton, index: GarmentIndex, cache: MetadataCache):
        self.s, self.triton, self.index, self.cache = s, triton, index, cache
        self.writer = CatalogWriter(index, cache)
        self.input_topic = s.topic_garments
        self.timings = Timings(self.name)

    def process(self, items: list[Item[GarmentsEvent]]) -> list[Result]:
        # 1. Decode every crop of the batch; an unreadable crop condemns only its own event.
        crops: list[np.ndarray] = []
        spans: list[tuple[int, int] | PoisonError] = []
        with self.timings("decode"):
            for item in items:
                start = len(crops)
                try:
                    crops += [decode_jpeg(g.crop_jpeg, self.s.crop_size) for g in item.msg.garments]
                    spans.append((start, len(crops)))
                except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad data
                    del crops[start:]
                    spans.append(PoisonError(f"unreadable garment crop: {e}", category="bad_crop"))
        # 2. One batched Triton call for all crops.
        vectors = np.zeros((0, 0), np.float32)  # no crops: nothing is sliced from it
        if crops:
            with self.timings("embed"):
                vectors = self.triton.embed(np.stack(crops))
        # 3. Sinks: the batch's changes in one go, applied in input order per product.
        results: list[Result | None] = [None] * len(items)
        changes: list[tuple[int, Change]] = []
        for n, (item, span) in enumerate(zip(items, spans)):
            if isinstance(span, PoisonError):
                results[n] = Result(dead_letter=span)
            else:
                changes.append((n, self._change(item.msg, vectors[span[0] : span[1]])))
        with self.timings("upsert"):
            applied = self.writer.apply([c for _n, c in changes])
        for (n, change), done in zip(changes, applied):
            results[n] = self._indexed(items[n].msg, change, done)
        return results  # type: ignore[return-value]

    def _change(self, ev: GarmentsEvent, vectors: np.ndarray) -> Change:
        version = event_version(ev.occurred_at, ev.event_id)
        if ev.op == "delete":
            return Change(ev.tenant, ev.product_id, "delete", version)
        rows = [
            GarmentRow(garment_id(ev.tenant, ev.product_id, g.image_id or ev.image_id, g.label), ev.tenant,
                       ev.product_id, g.image_id or ev.image_id, g.label, [g.bbox.x0, g.bbox.y0, g.bbox.x1, g.bbox.y1],
                       ev.metadata, v, version)
            for g, v in zip(ev.garments, vectors)
        ]
        return Change(ev.tenant, ev.product_id, "upsert", version, rows, ev.metadata)

    def _indexed(self, ev: GarmentsEvent, change: Change, done: Applied) -> Result:
        now = utc_now()
        latency = (now - ev.occurred_at).total_seconds()
        rows = change.rows if done.status != "stale" else []
        if done.status == "stale":
            m.STALE_EVENTS.labels(self.name).inc()
        else:
            m.END_TO_END_SECONDS.labels(self.name).observe(max(0.0, latency))
            for r in rows:
                m.GARMENTS_INDEXED.labels(r.label).inc()
        status = done.status
        # the product named its garments and none of them was found (found_labels says what was)
        if status == "no_garments" and ev.wanted_labels is not None and ev.found_labels:
            status = "garment_not_found"
        out = IndexedEvent(event_id=ev.event_id, tenant=ev.tenant, product_id=ev.product_id, op=ev.op,
                           status=status, image_id=ev.image_id, image_ids=list(ev.image_ids),
                           wanted_labels=ev.wanted_labels, found_labels=list(ev.found_labels),
                           labels=[r.label for r in rows],
                           garment_ids=[r.id for r in rows], removed=done.removed, latency_ms=latency * 1000,
                           indexed_at=now)
        return Result([Out.of(self.s.topic_indexed, out, key=f"{ev.tenant}:{ev.product_id}")])

    def on_invalid(self, record, error) -> list[Out]:
        return []

    def ready_checks(self):
        # the Milvus probe has its own client: a readiness check never closes the channel work is using
        return {"triton": self.triton.ready, "milvus": GarmentIndex(self.s, self.triton.embedder).ping, "redis": self.cache.ping}
