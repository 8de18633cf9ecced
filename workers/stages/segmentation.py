"""Segmentation stage: ProductEvent -> (Triton segformer) -> one GarmentsEvent per product event.

A product may carry several images (front, back, flat, on model): all are segmented in the batch's one Triton
call and their garments travel together in one GarmentsEvent (each garment names its image), so the embedding
worker replaces the product's rows atomically. When the product names its own garments (``ProductEvent.garments``)
only those are kept; every label found is passed on in ``found_labels`` so the IndexedEvent can say what was
there when none of the wanted ones was.
"""

from __future__ import annotations

from contracts.models import Garment, GarmentsEvent, ProductEvent

from workers.runtime.errors import PoisonError
from workers.media.garments import encode_jpeg, extract_garments, letterbox, unletterbox
from workers.media.images import decode_image, image_bytes
from workers.runtime.records import Item, Out, Result, Timings
from workers.runtime.settings import Settings
from workers.adapters.garment_rows import image_id_of


class SegmentationStage:
    name = "segmentation"
    message_type = ProductEvent

    def __init__(self, s: Settings, triton):
        self.s, self.triton = s, triton
        self.input_topic = s.topic_products
        self.timings = Timings(self.name)

    def process(self, items: list[Item[ProductEvent]]) -> list[Result]:
        results: list[Result | None] = [None] * len(items)
        pending = []  # (event index, image, letterbox, model input, image id): segmented in one Triton call
        for i, item in enumerate(items):
            ev = item.msg
            if ev.op == "delete":  # passes through, in order, to the embedding worker
                results[i] = self._emit(ev, op="delete")
                continue
            mine = []
            try:
                for ref in ev.all_images:  # one bad image condemns the whole event: no half-indexed product
                    with self.timings("fetch"):
                        data = image_bytes(ref, self.s)
                    with self.timings("decode"):
                        img = decode_image(data, self.s)
                    canvas, lb = letterbox(img, self.s.segformer_size)
                    mine.append((i, img, lb, canvas, image_id_of(data)))
            except PoisonError as e:
                results[i] = Result(dead_letter=e)
                continue
            pending += mine
        if pending:
            with self.timings("segment"):
                label_maps = self.triton.segment([p[3] for p in pending])
            per_event: dict[int, list] = {}
            for (i, img, lb, _canvas, image_id), label_map in zip(pending, label_maps):
                with self.timings("crop"):
                    crops = extract_garments(
                        img, unletterbox(label_map, lb), garment_label_ids=self.s.garment_label_ids,
                        min_mask_fraction=self.s.min_mask_fraction, crop_size=self.s.crop_size,
                        blank_background=self.s.blank_background, open_fraction=self.s.mask_open_fraction,
                        rules=self.s.garment_rules,
                    )
                per_event.setdefault(i, []).append((img, image_id, crops))
            for i, shots in per_event.items():
                results[i] = self._upsert(items[i].msg, shots)
        return results  # type: ignore[return-value]

    def _upsert(self, ev: ProductEvent, shots: list) -> Result:
        wanted = set(ev.garments) if ev.garments is not None else None
        found: list[str] = []
        garments: list[Garment] = []
        seen: set[str] = set()
        with self.timings("crop"):
            for _img, image_id, crops in shots:
                if image_id in seen:  # the same picture twice: its rows would collide
                    continue
                seen.add(image_id)
                for c in crops:
                    if c.label not in found:
                        found.append(c.label)
                    if wanted is None or c.label in wanted:
                        garments.append(Garment(label=c.label, bbox=c.bbox, mask_fraction=c.mask_fraction,
                                                crop_jpeg=encode_jpeg(c.crop), image_id=image_id))
        first_img, first_id, _ = shots[0]
        return self._emit(ev, op="upsert", image_id=first_id, image_ids=list(dict.fromkeys(s[1] for s in shots)),
                          image_size=first_img.size, garments=garments, found_labels=found,
                          wanted_labels=list(ev.garments) if ev.garments is not None else None)

    def _emit(self, ev: ProductEvent, **fields) -> Result:
        out = GarmentsEvent(event_id=ev.event_id, tenant=ev.tenant, product_id=ev.product_id,
                            metadata=ev.metadata, occurred_at=ev.occurred_at, **fields)
        return Result([Out.of(self.s.topic_garments, out, key=ev.key)])

    def on_invalid(self, record, error) -> list[Out]:
        return []

    def ready_checks(self):
        return {"triton": self.triton.ready}
