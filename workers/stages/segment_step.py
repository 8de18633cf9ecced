"""The step segmentation and query share: fetch -> decode -> letterbox -> segment -> unletterbox -> garments.

A ``Shot`` is one image on its way through it. ``load`` fetches and decodes one image and fits it into the input of
the served segmenter (its S from Triton's model config), raising ``PoisonError`` for a bad image and
``FetchUnavailable`` when its host cannot be reached; ``segment`` sends the shots of a whole batch to Triton in one
call and fills each shot's garments, with the garment settings of ``Settings`` (labels, minimum size, crop size,
background, mask opening, rules).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from contracts.models import ImageRef

from workers.adapters.garment_rows import image_id_of
from workers.media.garments import GarmentCrop, Letterbox, extract_garments, letterbox, unletterbox
from workers.media.images import decode_image, image_bytes
from workers.runtime.records import Timings
from workers.runtime.settings import Settings


@dataclass
class Shot:
    """One image of one input item (``owner``: its index in the batch)."""

    owner: int
    image: Image.Image
    image_id: str  # content hash: the same picture gives the same garment rows
    box: Letterbox
    model_input: np.ndarray  # S x S x 3 uint8, the letterboxed image
    only: frozenset[str] | None = None  # keep only these garment labels (a look request's ``garments``)
    load_ms: float = 0.0  # fetch + decode
    garments: list[GarmentCrop] = field(default_factory=list)


class SegmentStep:
    def __init__(self, s: Settings, triton, timings: Timings):
        self.s, self.triton, self.timings = s, triton, timings

    def load(self, owner: int, ref: ImageRef, only: frozenset[str] | None = None) -> Shot:
        with self.timings("fetch") as fetched:
            data = image_bytes(ref, self.s)
        with self.timings("decode") as decoded:
            img = decode_image(data, self.s)
        canvas, box = letterbox(img, self.triton.segformer_size)  # S as the served model's config says
        return Shot(owner, img, image_id_of(data), box, canvas, only=only, load_ms=fetched.ms + decoded.ms)

    def segment(self, shots: list[Shot]) -> tuple[float, float]:
        """One Triton call for all shots, then each shot's garments. Returns (segment ms, crop ms) of the batch."""
        if not shots:
            return 0.0, 0.0
        with self.timings("segment") as seg:
            label_maps = self.triton.segment([s.model_input for s in shots])
        with self.timings("crop") as crop:
            for shot, label_map in zip(shots, label_maps, strict=True):
                shot.garments = extract_garments(
                    shot.image, unletterbox(label_map, shot.box), garment_label_ids=self.s.garment_label_ids,
                    min_mask_fraction=self.s.min_mask_fraction, crop_size=self.s.crop_size,
                    blank_background=self.s.blank_background, open_fraction=self.s.mask_open_fraction,
                    only=set(shot.only) if shot.only else None, rules=self.s.garment_rules,
                )
        return seg.ms, crop.ms
