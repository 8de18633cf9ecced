"""Segmentation stage: ProductEvent -> (Triton segformer) -> one GarmentsEvent per product event.

A product may carry several images (front, back, flat, on model): all are segmented in the batch's one Triton
call and their garments travel together in one GarmentsEvent (each garment names its image), so the embedding
worker replaces the product's rows atomically. When the product names its own garments (``ProductEvent.garments``)
only those are kept; every label found is passed on in ``found_labels`` so the IndexedEvent can say what was
there when none of the wanted ones was.
"""

from __future__ import annotations

from contracts.models import Garment, GarmentsEvent, ProductEvent

from workers.media.garments import encode_jpeg
from workers.runtime.errors import PoisonError
from workers.runtime.records import Item, Out, Result, Timings
from workers.runtime.settings import Settings
from workers.stages.segment_step import SegmentStep, Shot


class SegmentationStage:
    name = "segmentation"
    message_type = ProductEvent

    def __init__(self, s: Settings, triton):
        self.s, self.triton = s, triton
        self.input_topic = s.topic_products
        self.timings = Timings(self.name)
        self.step = SegmentStep(s, triton, self.timings)

    def process(self, items: list[Item[ProductEvent]]) -> list[Result]:
        results: list[Result | None] = [None] * len(items)
        pending: list[Shot] = []  # every image of the batch: segmented in one Triton call
        for i, item in enumerate(items):
            ev = item.msg
            if ev.op == "delete":  # passes through, in order, to the embedding worker
                results[i] = self._emit(ev, op="delete")
                continue
            try:  # one bad image condemns the whole event: no half-indexed product
                mine = [self.step.load(i, ref) for ref in ev.all_images]
            except PoisonError as e:
                results[i] = Result(dead_letter=e)
                continue
            pending += mine
        self.step.segment(pending)
        per_event: dict[int, list[Shot]] = {}
        for shot in pending:
            per_event.setdefault(shot.owner, []).append(shot)
        for i, shots in per_event.items():
            results[i] = self._upsert(items[i].msg, shots)
        return results  # type: ignore[return-value]

    def _upsert(self, ev: ProductEvent, shots: list[Shot]) -> Result:
        wanted = set(ev.garments) if ev.garments is not None else None
        found: list[str] = []
        garments: list[Garment] = []
        seen: set[str] = set()
        with self.timings("crop"):
            for shot in shots:
                if shot.image_id in seen:  # the same picture twice: its rows would collide
                    continue
                seen.add(shot.image_id)
                for c in shot.garments:
                    if c.label not in found:
                        found.append(c.label)
                    if wanted is None or c.label in wanted:
                        garments.append(Garment(label=c.label, bbox=c.bbox, mask_fraction=c.mask_fraction,
                                                crop_jpeg=encode_jpeg(c.crop), image_id=shot.image_id))
        first = shots[0]
        return self._emit(ev, op="upsert", image_id=first.image_id,
                          image_ids=list(dict.fromkeys(s.image_id for s in shots)),
                          image_size=first.image.size, garments=garments, found_labels=found,
                          wanted_labels=list(ev.garments) if ev.garments is not None else None)

    def _emit(self, ev: ProductEvent, **fields) -> Result:
        out = GarmentsEvent(event_id=ev.event_id, tenant=ev.tenant, product_id=ev.product_id,
                            metadata=ev.metadata, occurred_at=ev.occurred_at, **fields)
        return Result([Out.of(self.s.topic_garments, out, key=ev.key)])

    def on_invalid(self, record, error) -> list[Out]:
        return []

    def ready_checks(self):
        return {"triton": self.triton.ready}
