"""Segmentation stage: ProductEvent -> (Triton segformer) -> one GarmentsEvent per product image."""

from __future__ import annotations

from contracts.models import Garment, GarmentsEvent, ProductEvent

from .errors import PoisonError
from .garments import encode_jpeg, extract_garments, letterbox, unletterbox
from .images import decode_image, image_bytes
from .runtime import Item, Out, Result, Timings
from .settings import Settings
from .store import image_id_of


class SegmentationStage:
    name = "segmentation"
    message_type = ProductEvent

    def __init__(self, s: Settings, triton):
        self.s, self.triton = s, triton
        self.input_topic = s.topic_products
        self.timings = Timings(self.name)

    def process(self, items: list[Item[ProductEvent]]) -> list[Result]:
        results: list[Result | None] = [None] * len(items)
        pending = []  # (index, image, letterbox, model input, image id): segmented in one Triton call
        for i, item in enumerate(items):
            ev = item.msg
            if ev.op == "delete":  # passes through, in order, to the embedding worker
                results[i] = self._emit(ev, op="delete")
                continue
            try:
                with self.timings("fetch"):
                    data = image_bytes(ev.image, self.s)
                with self.timings("decode"):
                    img = decode_image(data, self.s)
            except PoisonError as e:
                results[i] = Result(dead_letter=e)
                continue
            canvas, lb = letterbox(img, self.s.segformer_size)
            pending.append((i, img, lb, canvas, image_id_of(data)))
        if pending:
            with self.timings("segment"):
                label_maps = self.triton.segment([p[3] for p in pending])
            for (i, img, lb, _canvas, image_id), label_map in zip(pending, label_maps):
                with self.timings("crop"):
                    crops = extract_garments(
                        img, unletterbox(label_map, lb), garment_label_ids=self.s.garment_label_ids,
                        min_mask_fraction=self.s.min_mask_fraction, crop_size=self.s.crop_size,
                        blank_background=self.s.blank_background, open_fraction=self.s.mask_open_fraction,
                    )
                    garments = [Garment(label=c.label, bbox=c.bbox, mask_fraction=c.mask_fraction,
                                        crop_jpeg=encode_jpeg(c.crop)) for c in crops]
                results[i] = self._emit(items[i].msg, op="upsert", image_id=image_id, image_size=img.size,
                                        garments=garments)
        return results  # type: ignore[return-value]

    def _emit(self, ev: ProductEvent, **fields) -> Result:
        out = GarmentsEvent(event_id=ev.event_id, tenant=ev.tenant, product_id=ev.product_id,
                            metadata=ev.metadata, occurred_at=ev.occurred_at, **fields)
        return Result([Out.of(self.s.topic_garments, out, key=ev.key)])

    def on_invalid(self, record, error) -> list[Out]:
        return []

    def ready_checks(self):
        return {"triton": self.triton.ready}
