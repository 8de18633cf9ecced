"""Embedding stage: GarmentsEvent -> (Triton resnet50) -> Milvus rows + Redis metadata -> IndexedEvent."""

from __future__ import annotations

import numpy as np

from contracts.models import GarmentsEvent, IndexedEvent, utc_now

from . import metrics as m
from .errors import PoisonError
from .garments import decode_jpeg
from .runtime import Item, Out, Result, Timings
from .settings import Settings
from .store import GarmentIndex, GarmentRow, MetadataCache, garment_id


class EmbeddingStage:
    name = "embedding"
    message_type = GarmentsEvent

    def __init__(self, s: Settings, triton, index: GarmentIndex, cache: MetadataCache):
        self.s, self.triton, self.index, self.cache = s, triton, index, cache
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
        vectors = np.zeros((0, 2048), np.float32)
        if crops:
            with self.timings("embed"):
                vectors = self.triton.embed(np.stack(crops))
        # 3. Sinks, strictly in input order so one product's events apply in order.
        results = []
        for item, span in zip(items, spans):
            if isinstance(span, PoisonError):
                results.append(Result(dead_letter=span))
            else:
                results.append(self._apply(item.msg, vectors[span[0] : span[1]]))
        return results

    def _apply(self, ev: GarmentsEvent, vectors: np.ndarray) -> Result:
        if ev.op == "delete":
            with self.timings("upsert"):
                removed = self.index.delete_product(ev.tenant, ev.product_id)
                self.cache.delete(ev.tenant, ev.product_id)
            return self._indexed(ev, "deleted", removed=removed)
        rows = [
            GarmentRow(garment_id(ev.tenant, ev.product_id, ev.image_id, g.label), ev.tenant, ev.product_id,
                       ev.image_id, g.label, [g.bbox.x0, g.bbox.y0, g.bbox.x1, g.bbox.y1], ev.metadata, v)
            for g, v in zip(ev.garments, vectors)
        ]
        with self.timings("upsert"):
            removed = self.index.replace_product(ev.tenant, ev.product_id, rows)
            self.cache.put(ev.tenant, ev.product_id, ev.metadata)
        for r in rows:
            m.GARMENTS_INDEXED.labels(r.label).inc()
        return self._indexed(ev, "indexed" if rows else "no_garments", rows=rows, removed=removed)

    def _indexed(self, ev: GarmentsEvent, status: str, rows=(), removed: int = 0) -> Result:
        now = utc_now()
        latency = (now - ev.occurred_at).total_seconds()
        m.END_TO_END_SECONDS.labels(self.name).observe(max(0.0, latency))
        out = IndexedEvent(event_id=ev.event_id, tenant=ev.tenant, product_id=ev.product_id, op=ev.op,
                           status=status, image_id=ev.image_id, labels=[r.label for r in rows],
                           garment_ids=[r.id for r in rows], removed=removed, latency_ms=latency * 1000,
                           indexed_at=now)
        return Result([Out.of(self.s.topic_indexed, out, key=f"{ev.tenant}:{ev.product_id}")])

    def on_invalid(self, record, error) -> list[Out]:
        return []

    def ready_checks(self):
        # the Milvus probe has its own client: a readiness check never closes the channel work is using
        return {"triton": self.triton.ready, "milvus": GarmentIndex(self.s).ping, "redis": self.cache.ping}
