"""From a segmentation label map to garment boxes and crops (pure numpy/Pillow, no torch).

Garments are objects, not label sums (``GarmentRules``): per garment label the mask is cut into connected
regions; specks are dropped, the largest region is kept together with the regions close to it (a garment split
by an arm, a bag strap or an occluder, the two legs of a pair of pants), and stray blobs of the same label
elsewhere in the image are left out, so the box and the crop hold the garment and not the whole image. A label
has a minimum size (small for hats, bags, sunglasses, belts, shoes, scarves). The rules' defaults were chosen on
``python -m bench relevance`` (see bench/RESULTS.md); ``GarmentRules(mode="label_sum")`` is the seed's rule (the
box spans every pixel of the label, as torchvision ``masks_to_boxes``).
The crop is taken from the ORIGINAL image and resized to ``crop_size`` squared. The background outside
the mask is kept by default, as in the seed (``blank_background`` greys it out).

Images are letterboxed into the model's fixed S x S input (scaled to fit, padded right/bottom) so
every request batches; the label map is cut back to the scaled image and resized (nearest) to the
original size, so boxes are in original pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

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
    mask: np.ndarray | None = field(default=None, repr=False)  # bool, the garment's pixels inside bbox


# Labels of garments that are small in a photo: their minimum size is SMALL_MIN_FRACTION, not min_fraction.
SMALL_LABELS = frozenset({"Hat", "Sunglasses", "Belt", "Left-shoe", "Right-shoe", "Bag", "Scarf"})


@dataclass(frozen=True)
class GarmentRules:
    """How a label's pixels become one garment object (fractions are of the image area / shorter side)."""

    mode: str = "components"  # "components" | "label_sum" (the seed: every pixel of the label, one box)
    min_region_fraction: float = 0.0005  # regions smaller than this are specks, dropped before anything else
    merge_gap_fraction: float = 0.02  # regions whose box is this close to the kept garment's box join it
    min_fraction: float | None = None  # a garment smaller than this is noise (None: the caller's min_mask_fraction)
    small_min_fraction: float = 0.003  # the same for SMALL_LABELS

    def min_for(self, label: str, default: float) -> float:
        base = default if self.min_fraction is None else self.min_fraction
        return min(base, self.small_min_fraction) if label in SMALL_LABELS else base


def connected_regions(mask: np.ndarray, max_side: int = 160) -> tuple[np.ndarray, int]:
    """4-connected regions of ``mask`` as an int32 map (0 = outside, 1..n) and n. Pure numpy: labels spread
    to the minimum over neighbours with pointer jumping, on a grid of at most ``max_side`` cells a side (pixels
    of one cell count as touching, so regions closer than a cell join)."""
    h, w = mask.shape
    f = max(1, -(-max(h, w) // max_side))
    if f > 1:
        hh, ww = -(-h // f), -(-w // f)
        padded = np.zeros((hh * f, ww * f), bool)
        padded[:h, :w] = mask
        coarse = padded.reshape(hh, f, ww, f).any(axis=(1, 3))
    else:
        coarse = mask.astype(bool)
    ch, cw = coarse.shape
    big = np.int64(ch * cw)
    lab = np.where(coarse, np.arange(ch * cw, dtype=np.int64).reshape(ch, cw), big)
    flat_mask = coarse.ravel()
    while True:
        new = lab.copy()
        np.minimum(new[1:], lab[:-1], out=new[1:])
        np.minimum(new[:-1], lab[1:], out=new[:-1])
        np.minimum(new[:, 1:], lab[:, :-1], out=new[:, 1:])
        np.minimum(new[:, :-1], lab[:, 1:], out=new[:, :-1])
        new[~coarse] = big
        flat = new.ravel()
        flat[flat_mask] = flat[flat[flat_mask]]  # pointer jumping: follow the label to its own label
        if np.array_equal(new, lab):
            break
        lab = new
    roots, inverse = np.unique(lab.ravel(), return_inverse=True)
    ids = inverse.reshape(ch, cw).astype(np.int32) + 1
    ids[~coarse] = 0
    n = len(roots) - (1 if roots[-1] == big else 0)
    if f > 1:
        ids = np.repeat(np.repeat(ids, f, axis=0), f, axis=1)[:h, :w]
    return np.where(mask, ids, 0).astype(np.int32), n


def _box_gap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """Chebyshev gap in pixels between half-open boxes (x0, y0, x1, y1); 0 when they touch or overlap."""
    gx = max(0, a[0] - b[2], b[0] - a[2])
    gy = max(0, a[1] - b[3], b[1] - a[3])
    return max(gx, gy)


def garment_object(mask: np.ndarray, rules: GarmentRules) -> np.ndarray:
    """One label's mask -> the garment's pixels: the largest region plus the regions near it (``rules``)."""
    if rules.mode == "label_sum":
        return mask
    ids, n = connected_regions(mask)
    if n <= 1:
        return mask
    area = np.bincount(ids.ravel(), minlength=n + 1)[1:]
    total = mask.size
    regions = []
    for r in np.argsort(-area, kind="stable"):
        if area[r] < rules.min_region_fraction * total:
            break
        ys, xs = np.nonzero(ids == r + 1)
        regions.append((int(r) + 1, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)))
    if not regions:
        return np.zeros_like(mask)
    gap = rules.merge_gap_fraction * min(mask.shape)
    keep, box = [regions[0][0]], regions[0][1]
    rest = regions[1:]
    grown = True
    while grown:  # join every region close to the garment so far, until none is
        grown = False
        for r, b in list(rest):
            if _box_gap(box, b) <= gap:
                keep.append(r)
                box = (min(box[0], b[0]), min(box[1], b[1]), max(box[2], b[2]), max(box[3], b[3]))
                rest.remove((r, b))
                grown = True
    return np.isin(ids, keep)


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
    rules: GarmentRules = GarmentRules(),
) -> list[GarmentCrop]:
    """One GarmentCrop per garment label present (largest first), body parts and specks left out.

    ``open_fraction`` > 0 opens each mask with a square of that fraction of the shorter image side first;
    ``rules`` then turn the label's pixels into one garment object.
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
        name = LABELS[label_id]
        least = rules.min_for(name, min_mask_fraction)
        if label_id not in garment_label_ids or counts[label_id] == 0 or frac < least:
            continue
        if only is not None and name not in only:
            continue
        mask = garment_object(open_mask(label_map == label_id, k), rules)
        frac = float(mask.sum()) / total
        if frac < least:
            continue
        box = mask_to_box(mask)
        if box is None:
            continue
        region = pixels[box.y0 : box.y1, box.x0 : box.x1]
        if blank_background:
            region = np.where(mask[box.y0 : box.y1, box.x0 : box.x1, None], region, np.uint8(128))
        crop = np.asarray(Image.fromarray(np.ascontiguousarray(region)).resize((crop_size, crop_size), Image.BILINEAR))
        found.append(GarmentCrop(name, box, float(frac), crop, mask[box.y0 : box.y1, box.x0 : box.x1]))
    found.sort(key=lambda g: -g.mask_fraction)  # largest first, as before the rules
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
