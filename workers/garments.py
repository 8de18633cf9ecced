"""From a segmentation label map to garment boxes and crops (pure numpy/Pillow, no torch).

Semantics follow the seed (torchvision ``masks_to_boxes`` + crop + resize): per garment label, the
box spans every pixel of that label (so two shoes far apart give one wide box for each shoe label);
the crop is taken from the ORIGINAL image and resized to ``crop_size`` squared. The background outside
the mask is kept by default, as in the seed (``blank_background`` greys it out).

Images are letterboxed into the model's fixed S x S input (scaled to fit, padded right/bottom) so
every request batches; the label map is cut back to the scaled image and resized (nearest) to the
original size, so boxes are in original pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from contracts.models import LABELS, BBox


@dataclass(frozen=True)
class Letterbox:
    """How an original image was fitted into the S x S model input."""

    width: int
    height: int
    scaled_w: int
    scaled_h: int
    size: int


@dataclass(frozen=True)
class GarmentCrop:
    label: str
    bbox: BBox
    mask_fraction: float
    crop: np.ndarray  # crop_size x crop_size x 3 uint8


def letterbox(img: Image.Image, size: int) -> tuple[np.ndarray, Letterbox]:
    w, h = img.size
    scale = size / max(w, h)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[:sh, :sw] = np.asarray(img.convert("RGB").resize((sw, sh), Image.BILINEAR))
    return canvas, Letterbox(w, h, sw, sh, size)


def unletterbox(labels: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Model-size label map -> label map at the original image size."""
    cut = np.ascontiguousarray(labels[: lb.scaled_h, : lb.scaled_w]).astype(np.uint8)
    if (lb.scaled_w, lb.scaled_h) == (lb.width, lb.height):
        return cut
    return np.asarray(Image.fromarray(cut, "L").resize((lb.width, lb.height), Image.NEAREST))


def _window_sum(mask: np.ndarray, k: int) -> np.ndarray:
    """Sum of ``mask`` over the k x k window around each pixel (summed-area table, O(H*W))."""
    a, b = k // 2 + 1, k - k // 2 - 1
    s = np.pad(mask.astype(np.int32), ((a, b), (a, b))).cumsum(0).cumsum(1)
    return s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]


def open_mask(mask: np.ndarray, k: int) -> np.ndarray:
    """Morphological opening with a k x k square: removes speckle and thin fringes along region borders
    (upsampled segmentation logits leave them), keeps every blob at least k pixels thick intact."""
    if k <= 1:
        return mask
    eroded = _window_sum(mask, k) == k * k
    # Dilate with the reflected window (flip, sum, flip back): for an even k the window is not
    # symmetric, and dilating with the same window would shift the result by one pixel.
    return _window_sum(eroded[::-1, ::-1], k)[::-1, ::-1] > 0


def mask_to_box(mask: np.ndarray) -> BBox | None:
    """``masks_to_boxes`` for one mask, as a half-open box: x1/y1 are one past the last pixel."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return None
    return BBox(x0=int(xs[0]), y0=int(ys[0]), x1=int(xs[-1]) + 1, y1=int(ys[-1]) + 1)


def extract_garments(
    image: Image.Image,
    label_map: np.ndarray,
    *,
    garment_label_ids: frozenset[int],
    min_mask_fraction: float,
    crop_size: int = 256,
    blank_background: bool = False,
    only: set[str] | None = None,
    open_fraction: float = 0.0,
) -> list[GarmentCrop]:
    """One GarmentCrop per garment label present (largest first), body parts and specks left out.

    ``open_fraction`` > 0 opens each mask with a square of that fraction of the shorter image side first.
    """
    if label_map.shape != (image.height, image.width):
        raise ValueError(f"label map {label_map.shape} does not match image {image.height}x{image.width}")
    counts = np.bincount(label_map.ravel(), minlength=len(LABELS))
    total = label_map.size
    pixels = np.asarray(image)
    k = max(1, round(open_fraction * min(label_map.shape))) if open_fraction > 0 else 1
    found = []
    for label_id in np.argsort(-counts[: len(LABELS)], kind="stable"):
        label_id = int(label_id)
        frac = counts[label_id] / total
        if label_id not in garment_label_ids or counts[label_id] == 0 or frac < min_mask_fraction:
            continue
        name = LABELS[label_id]
        if only is not None and name not in only:
            continue
        mask = open_mask(label_map == label_id, k)
        frac = float(mask.sum()) / total
        if frac < min_mask_fraction:
            continue
        box = mask_to_box(mask)
        if box is None:
            continue
        region = pixels[box.y0 : box.y1, box.x0 : box.x1]
        if blank_background:
            region = np.where(mask[box.y0 : box.y1, box.x0 : box.x1, None], region, np.uint8(128))
        crop = np.asarray(Image.fromarray(np.ascontiguousarray(region)).resize((crop_size, crop_size), Image.BILINEAR))
        found.append(GarmentCrop(name, box, float(frac), crop))
    return found


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(data: bytes, size: int) -> np.ndarray:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img)


def as_indexed(pixels: np.ndarray, quality: int = 90) -> np.ndarray:
    """The crop as the index sees it (after the JPEG hop), so query and catalog embed the same pixels."""
    return decode_jpeg(encode_jpeg(pixels, quality), pixels.shape[0])
