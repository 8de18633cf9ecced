"""Label map -> garment boxes and crops, letterboxing, mask opening, JPEG helpers (pure numpy/Pillow)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from contracts.models import DEFAULT_NON_GARMENT_LABELS, LABEL_IDS, LABELS, BBox
from workers.media.garments import (
    GarmentRules,
    Letterbox,
    connected_regions,
    as_indexed,
    decode_jpeg,
    encode_jpeg,
    extract_garments,
    letterbox,
    mask_to_box,
    open_mask,
    unletterbox,
    _window_sum,
)

GARMENT_IDS = frozenset(i for i, n in enumerate(LABELS) if n not in DEFAULT_NON_GARMENT_LABELS)
L = LABEL_IDS


def _noise_image(w: int, h: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _extract(pixels: np.ndarray, label_map: np.ndarray, **kw):
    kw.setdefault("garment_label_ids", GARMENT_IDS)
    kw.setdefault("min_mask_fraction", 0.0)
    kw.setdefault("crop_size", 32)
    return extract_garments(Image.fromarray(pixels), label_map.astype(np.uint8), **kw)


LABEL_SUM = GarmentRules(mode="label_sum")  # the seed's rule: one box over every pixel of the label


def _box(found, label):
    return next(g.bbox for g in found if g.label == label)


# --------------------------------------------------------------------------- boxes

def test_mask_to_box_is_half_open():
    m = np.zeros((10, 12), bool)
    m[2, 3] = True
    assert mask_to_box(m) == BBox(x0=3, y0=2, x1=4, y1=3)  # a single pixel: width 1
    m[7, 10] = True
    assert mask_to_box(m) == BBox(x0=3, y0=2, x1=11, y1=8)
    assert mask_to_box(np.zeros((4, 4), bool)) is None
    full = np.ones((5, 6), bool)
    assert mask_to_box(full) == BBox(x0=0, y0=0, x1=6, y1=5)


def test_known_rectangles_give_exact_boxes_and_fractions():
    h, w = 80, 100
    lm = np.zeros((h, w), np.uint8)
    lm[5:25, 10:40] = L["Upper-clothes"]      # 20 x 30 = 600
    lm[30:70, 20:50] = L["Pants"]             # 40 x 30 = 1200
    lm[60:80, 90:100] = L["Bag"]              # 20 x 10 = 200, touching the image corner
    lm[2:4, 60:62] = L["Left-shoe"]           # two far-apart blobs of one label: one wide box
    lm[50:53, 70:72] = L["Left-shoe"]         # 4 + 6 = 10
    found = _extract(_noise_image(w, h), lm, rules=LABEL_SUM)
    assert [g.label for g in found] == ["Pants", "Upper-clothes", "Bag", "Left-shoe"]  # largest first
    assert _box(found, "Pants") == BBox(x0=20, y0=30, x1=50, y1=70)
    assert _box(found, "Upper-clothes") == BBox(x0=10, y0=5, x1=40, y1=25)
    assert _box(found, "Bag") == BBox(x0=90, y0=60, x1=100, y1=80)
    assert _box(found, "Left-shoe") == BBox(x0=60, y0=2, x1=72, y1=53)
    fr = {g.label: g.mask_fraction for g in found}
    assert fr == pytest.approx({"Pants": 1200 / 8000, "Upper-clothes": 600 / 8000, "Bag": 200 / 8000,
                                "Left-shoe": 10 / 8000})
    for g in found:
        assert g.crop.shape == (32, 32, 3) and g.crop.dtype == np.uint8


def test_ties_in_area_keep_label_order():
    lm = np.zeros((20, 20), np.uint8)
    lm[0:5, 0:5] = L["Scarf"]
    lm[10:15, 10:15] = L["Hat"]
    found = _extract(_noise_image(20, 20), lm)
    assert [g.label for g in found] == ["Hat", "Scarf"]


def test_crop_is_the_resized_region_of_the_original():
    h, w = 90, 120
    pixels = _noise_image(w, h, seed=1)
    colour = np.array([200, 30, 90], np.uint8)
    pixels[12:52, 33:73] = colour
    lm = np.zeros((h, w), np.uint8)
    lm[12:52, 33:73] = L["Dress"]
    (g,) = _extract(pixels, lm, crop_size=64)
    assert g.bbox == BBox(x0=33, y0=12, x1=73, y1=52)
    # an off-by-one box would pull noise into the edge rows/columns of the crop
    assert (g.crop == colour).all()

    # a textured region: the crop equals Pillow's bilinear resize of exactly that region
    pixels2 = _noise_image(w, h, seed=2)
    (g2,) = _extract(pixels2, lm, crop_size=48)
    want = np.asarray(Image.fromarray(np.ascontiguousarray(pixels2[12:52, 33:73])).resize((48, 48), Image.BILINEAR))
    assert np.array_equal(g2.crop, want)


def test_body_parts_and_background_are_skipped():
    lm = np.zeros((40, 40), np.uint8)
    for i, name in enumerate(["Hair", "Face", "Left-leg", "Right-leg", "Left-arm", "Right-arm"]):
        lm[i * 5:(i + 1) * 5, 0:30] = L[name]
    lm[32:38, 5:15] = L["Belt"]
    found = _extract(_noise_image(40, 40), lm)
    assert [g.label for g in found] == ["Belt"]
    assert found[0].bbox == BBox(x0=5, y0=32, x1=15, y1=38)


def test_custom_garment_ids_respected():
    lm = np.zeros((20, 20), np.uint8)
    lm[0:10, 0:10] = L["Hair"]
    lm[10:20, 10:20] = L["Hat"]
    found = _extract(_noise_image(20, 20), lm, garment_label_ids=frozenset({L["Hair"]}))
    assert [g.label for g in found] == ["Hair"]


def test_masks_below_min_fraction_are_skipped():
    lm = np.zeros((100, 100), np.uint8)
    lm[0:10, 0:10] = L["Hat"]            # 1 %
    lm[50:56, 50:56] = L["Sunglasses"]   # 0.36 %
    lm[60:65, 0:10] = L["Belt"]          # 0.5 %: exactly at the threshold is kept
    no_small_rule = GarmentRules(small_min_fraction=1.0)
    found = _extract(_noise_image(100, 100), lm, min_mask_fraction=0.005, rules=no_small_rule)
    assert [g.label for g in found] == ["Hat", "Belt"]
    assert _extract(_noise_image(100, 100), lm, min_mask_fraction=0.011, rules=no_small_rule) == []
    # with the default rules small labels have their own, lower minimum (0.3 %)
    found = _extract(_noise_image(100, 100), lm, min_mask_fraction=0.005)
    assert [g.label for g in found] == ["Hat", "Belt", "Sunglasses"]


def test_only_filter():
    lm = np.zeros((30, 30), np.uint8)
    lm[0:10, :] = L["Upper-clothes"]
    lm[10:20, :] = L["Skirt"]
    lm[20:30, 0:5] = L["Bag"]
    pixels = _noise_image(30, 30)
    assert [g.label for g in _extract(pixels, lm, only={"Bag", "Skirt"})] == ["Skirt", "Bag"]
    assert _extract(pixels, lm, only={"Dress"}) == []
    assert [g.label for g in _extract(pixels, lm, only=None)] == ["Upper-clothes", "Skirt", "Bag"]


def test_label_map_must_match_image():
    with pytest.raises(ValueError, match="does not match image"):
        _extract(_noise_image(30, 20), np.zeros((30, 20), np.uint8))


def test_blank_background_greys_pixels_outside_the_mask():
    h, w = 40, 40
    pixels = _noise_image(w, h, seed=3)
    lm = np.zeros((h, w), np.uint8)
    lm[10:30, 10:14] = L["Dress"]   # an L shape: the box holds non-mask pixels
    lm[26:30, 10:30] = L["Dress"]
    for blank in (False, True):
        (g,) = _extract(pixels, lm, crop_size=20, blank_background=blank)  # box is 20x20: no resampling
        assert g.bbox == BBox(x0=10, y0=10, x1=30, y1=30)
        region = pixels[10:30, 10:30]
        inside = lm[10:30, 10:30] == L["Dress"]
        assert np.array_equal(g.crop[inside], region[inside])
        if blank:
            assert (g.crop[~inside] == 128).all()
        else:
            assert np.array_equal(g.crop[~inside], region[~inside])


# --------------------------------------------------------------------------- opening

def _reference_opening(mask: np.ndarray, k: int) -> np.ndarray:
    """The union of every k x k square that fits inside the mask (the definition of opening)."""
    h, w = mask.shape
    out = np.zeros_like(mask, dtype=bool)
    for y in range(h - k + 1):
        for x in range(w - k + 1):
            if mask[y:y + k, x:x + k].all():
                out[y:y + k, x:x + k] = True
    return out


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6, 7])
def test_window_sum_counts_a_k_by_k_window(k):
    m = np.random.default_rng(k).random((13, 11)) < 0.5
    s = _window_sum(m, k)
    assert s.shape == m.shape
    lo, hi = k // 2, k - k // 2 - 1
    for y in range(13):
        for x in range(11):
            want = m[max(0, y - lo):y + hi + 1, max(0, x - lo):x + hi + 1].sum()
            assert s[y, x] == want


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6, 8])
def test_opening_keeps_a_thick_block_exactly(k):
    m = np.zeros((50, 60), bool)
    m[10:30, 5:45] = True        # 20 x 40, thicker than k
    m[0:12, 50:60] = True        # touching the image border
    assert np.array_equal(open_mask(m, k), m)


@pytest.mark.parametrize("k", [4, 5])
@pytest.mark.parametrize("fringe", [1, 2, 3])
def test_opening_removes_thin_fringe_and_specks(k, fringe):
    block = np.zeros((60, 60), bool)
    block[15:45, 15:45] = True
    m = block.copy()
    m[15 - fringe:15, 15:45:3] = True    # a ragged fringe along the top edge: 1 px teeth
    m[15:45:4, 45:45 + 3 * fringe] = True  # thin arms (1 px) sticking out right
    m[20:20 + fringe, 5:15] = True         # a fringe-thick arm sticking out left
    m[50:52, 2:4] = True                 # a 2x2 speck
    m[5, 5] = True                       # a single pixel
    out = open_mask(m, k)
    assert np.array_equal(out, block)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_opening_matches_definition_on_random_masks(k):
    rng = np.random.default_rng(100 + k)
    for _ in range(5):
        small = rng.random((8, 9)) < 0.6
        m = np.kron(small, np.ones((3, 3), bool))[:23, :25]  # blobs of various sizes
        m ^= rng.random(m.shape) < 0.05
        out = open_mask(m, k)
        assert np.array_equal(out, _reference_opening(m, k))
        assert not (out & ~m).any()  # anti-extensive: never adds pixels


def test_opening_k1_is_identity():
    m = np.random.default_rng(0).random((9, 9)) < 0.5
    assert open_mask(m, 1) is m


def test_extract_with_open_fraction_drops_fringe_from_the_box():
    h, w = 100, 100                      # open_fraction 0.04 -> k = 4 (an even window)
    lm = np.zeros((h, w), np.uint8)
    lm[20:60, 30:70] = L["Upper-clothes"]
    lm[40:42, 70:95] = L["Upper-clothes"]   # 2 px fringe arm
    lm[90, 5] = L["Upper-clothes"]          # a speck far away
    pixels = _noise_image(w, h)
    (raw,) = _extract(pixels, lm, rules=LABEL_SUM)
    assert raw.bbox == BBox(x0=5, y0=20, x1=95, y1=91)
    (g,) = _extract(pixels, lm, open_fraction=0.04)
    assert g.bbox == BBox(x0=30, y0=20, x1=70, y1=60)
    assert g.mask_fraction == pytest.approx(1600 / 10000)


def test_extract_skips_a_mask_that_opening_erases():
    lm = np.zeros((100, 100), np.uint8)
    lm[10:12, 0:100] = L["Belt"]   # 2 px thick: opening with k=5 erases it
    lm[40:80, 40:80] = L["Skirt"]
    found = _extract(_noise_image(100, 100), lm, open_fraction=0.05, min_mask_fraction=0.001)
    assert [g.label for g in found] == ["Skirt"]


# --------------------------------------------------------------------------- letterbox

def test_letterbox_places_the_scaled_image_top_left():
    img = Image.new("RGB", (200, 100), (10, 200, 30))
    canvas, lb = letterbox(img, 64)
    assert lb == Letterbox(width=200, height=100, scaled_w=64, scaled_h=32, size=64)
    assert canvas.shape == (64, 64, 3) and canvas.dtype == np.uint8
    assert (canvas[:32, :64] == [10, 200, 30]).all()
    assert (canvas[32:] == 0).all()


def test_letterbox_converts_to_rgb():
    canvas, lb = letterbox(Image.new("L", (16, 16), 77), 16)
    assert (canvas == 77).all() and (lb.scaled_w, lb.scaled_h) == (16, 16)


def test_unletterbox_same_size_is_a_cut():
    lm = np.arange(64, dtype=np.uint8).reshape(8, 8) % 18
    lb = Letterbox(width=8, height=5, scaled_w=8, scaled_h=5, size=8)
    assert np.array_equal(unletterbox(lm, lb), lm[:5, :8])


@pytest.mark.parametrize(
    "w,h,size",
    [(300, 600, 128), (640, 360, 128), (256, 256, 128), (17, 300, 512), (1000, 750, 512), (40, 30, 512)],
    ids=["portrait", "landscape", "square", "tiny-17x300", "downscale-4:3", "upscale"],
)
def test_letterbox_unletterbox_round_trip(w, h, size):
    img = Image.new("RGB", (w, h), (50, 60, 70))
    _, lb = letterbox(img, size)
    scale = size / max(w, h)
    assert (lb.width, lb.height, lb.size) == (w, h, size)
    assert max(lb.scaled_w, lb.scaled_h) == size
    assert abs(lb.scaled_w - w * scale) <= 0.5 and abs(lb.scaled_h - h * scale) <= 0.5

    # A garment drawn in original coordinates, then in model coordinates; the padding gets another label.
    ox0, oy0, ox1, oy1 = w // 4, h // 3, (3 * w) // 4, (2 * h) // 3
    model = np.full((size, size), L["Hat"], np.uint8)
    model[: lb.scaled_h, : lb.scaled_w] = L["Background"]
    model[round(oy0 * scale): round(oy1 * scale), round(ox0 * scale): round(ox1 * scale)] = L["Dress"]

    back = unletterbox(model, lb)
    assert back.shape == (h, w) and back.dtype == np.uint8
    assert not (back == L["Hat"]).any()  # padding never leaks into the original frame
    box = mask_to_box(back == L["Dress"])
    tol = 2
    assert abs(box.x0 - ox0) <= tol and abs(box.x1 - ox1) <= tol, (box, (ox0, ox1))
    assert abs(box.y0 - oy0) <= tol and abs(box.y1 - oy1) <= tol, (box, (oy0, oy1))

    # and the box lands at the same place when extract_garments reads the unletterboxed map
    (g,) = _extract(np.asarray(img), back)
    assert g.bbox == box


# --------------------------------------------------------------------------- jpeg

def test_encode_decode_jpeg_sizes():
    yy, xx = np.mgrid[0:48, 0:64]
    pixels = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8)  # smooth: JPEG-friendly
    data = encode_jpeg(pixels)
    assert data[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.size == (64, 48)
    out = decode_jpeg(data, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8

    sq = pixels[:48, :48].copy()
    same = decode_jpeg(encode_jpeg(sq, quality=95), 48)
    assert same.shape == (48, 48, 3)
    assert np.abs(same.astype(int) - sq.astype(int)).mean() < 3
    assert len(encode_jpeg(sq, quality=20)) < len(encode_jpeg(sq, quality=95))


def test_decode_jpeg_converts_grey_to_rgb():
    buf = io.BytesIO()
    Image.new("L", (10, 10), 100).save(buf, format="JPEG")
    out = decode_jpeg(buf.getvalue(), 10)
    assert out.shape == (10, 10, 3)
    assert (np.abs(out.astype(int) - 100) <= 1).all()


def test_as_indexed_is_the_jpeg_round_trip():
    pixels = _noise_image(32, 32, seed=9)
    idx = as_indexed(pixels, quality=90)
    assert idx.shape == pixels.shape
    assert np.array_equal(idx, decode_jpeg(encode_jpeg(pixels, 90), 32))
    assert not np.array_equal(idx, pixels)  # lossy: the index sees the JPEG pixels


# --------------------------------------------------------------------------- garments as objects

def test_connected_regions_counts_and_separates_blobs():
    m = np.zeros((40, 50), bool)
    m[2:10, 2:10] = True
    m[20:30, 30:45] = True
    m[35, 0:50] = True                       # a thin line across the whole width
    ids, n = connected_regions(m)
    assert n == 3
    assert set(np.unique(ids[m])) == {1, 2, 3} and (ids[~m] == 0).all()
    assert len({int(ids[5, 5]), int(ids[25, 35]), int(ids[35, 10])}) == 3
    assert ids[35, 0] == ids[35, 49]          # one region end to end


def test_connected_regions_follows_a_snake():
    m = np.zeros((30, 30), bool)
    for r in range(0, 30, 4):                 # rows joined alternately at the right and left ends
        m[r, :] = True
        if r + 4 < 30:
            m[r:r + 4, 29 if (r // 4) % 2 == 0 else 0] = True
    ids, n = connected_regions(m, max_side=1000)
    assert n == 1 and (ids[m] == 1).all()


def test_connected_regions_on_a_coarse_grid_keeps_pixels_exact():
    m = np.zeros((600, 400), bool)            # larger than max_side: labelled on a coarse grid
    m[10:100, 10:100] = True
    m[300:500, 200:390] = True
    ids, n = connected_regions(m, max_side=100)
    assert n == 2 and ((ids > 0) == m).all()


def test_a_stray_blob_far_away_is_not_part_of_the_garment():
    lm = np.zeros((200, 200), np.uint8)
    lm[40:140, 50:150] = L["Upper-clothes"]    # the top
    lm[180:195, 5:20] = L["Upper-clothes"]     # a red thing in the background, far away
    (g,) = _extract(_noise_image(200, 200), lm)
    assert g.bbox == BBox(x0=50, y0=40, x1=150, y1=140)
    assert g.mask_fraction == pytest.approx(10000 / 40000)
    assert g.mask.shape == (100, 100) and g.mask.all()


def test_parts_close_together_are_one_garment():
    lm = np.zeros((200, 200), np.uint8)
    lm[100:190, 60:95] = L["Pants"]            # left leg
    lm[100:190, 99:134] = L["Pants"]           # right leg, a 4 px gap (gap rule: 2 % of 200 = 4 px)
    (g,) = _extract(_noise_image(200, 200), lm)
    assert g.bbox == BBox(x0=60, y0=100, x1=134, y1=190)
    (far,) = _extract(_noise_image(200, 200), lm, rules=GarmentRules(merge_gap_fraction=0.005))
    assert far.bbox.x1 - far.bbox.x0 == 35    # with a 1 px rule only one leg (the first of two equal ones)


def test_specks_are_dropped_before_merging():
    lm = np.zeros((200, 200), np.uint8)
    lm[50:150, 50:150] = L["Dress"]
    lm[152, 152] = L["Dress"]                  # one pixel next to it: under min_region_fraction
    (g,) = _extract(_noise_image(200, 200), lm)
    assert g.bbox == BBox(x0=50, y0=50, x1=150, y1=150)
