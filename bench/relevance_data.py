"""A shop-the-look ground-truth set, rendered with workers/local/sample_catalog.py (its garment painter, colours and patterns).

- Products: one garment each (label, colours, pattern, shape, cut). Shop images per product (1-3): on a grey
  mannequin ("front", "back": mirrored) and/or flat on a light background, as retailers shoot them.
- Hard distractors: some products have a sibling of the same shape and pattern in another shade of colour, or of the
  same colours with another pattern (they are products too: the right answer is the exact product).
- Street looks (another rendering seed): a person (skin, hair, arms, legs) wearing 2-4 catalog garments of different
  products, on other backgrounds (gradients, clutter), scaled, moved, rotated, lit and colour-cast, blurred, JPEG
  quality 40-90, sometimes partly occluded. The truth of every garment: its product, label and pixel mask.

Garment colours stay in their label's hue family (catalog.HUES) and street backgrounds are mostly unsaturated
(saturation < 0.1, a shop sign in six clutter blocks up to 0.2) because today's declared tiny SegFormer labels by
colour; ``colour_mode="random"`` gives garments any hue and backgrounds any colour (for a segmenter that must learn
shapes). Skin and hair are low-saturation for the same reason. Same seeds, same bytes: ``generate`` caches by its parameters.
"""

from __future__ import annotations

import colorsys
import io
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from contracts.models import LABEL_IDS
from workers.local.sample_catalog import HUES, PATTERNS, Cloth, _colour, paint

# share of products per garment label
LABEL_MIX = {"Upper-clothes": 0.28, "Pants": 0.17, "Skirt": 0.12, "Dress": 0.15, "Hat": 0.13, "Bag": 0.15}
SHAPES = {"Upper-clothes": ("rect", "trapezoid"), "Pants": ("rect",), "Skirt": ("trapezoid",),
          "Dress": ("trapezoid",), "Hat": ("rect", "trapezoid", "ellipse"), "Bag": ("rect", "ellipse")}
# ids in the truth masks: body parts use the label ids of contracts.LABELS; garments 100 + their slot
BODY = {"Face": LABEL_IDS["Face"], "Hair": LABEL_IDS["Hair"], "Left-arm": LABEL_IDS["Left-arm"],
        "Right-arm": LABEL_IDS["Right-arm"], "Left-leg": LABEL_IDS["Left-leg"], "Right-leg": LABEL_IDS["Right-leg"]}
GARMENT_ID0 = 100


@dataclass(frozen=True)
class Product:
    product_id: str
    label: str
    cloth: Cloth
    cut: tuple[float, float]  # width and length factors of the garment on a body
    sibling_of: str = ""  # a hard distractor of that product
    distractor: str = ""  # "colour" | "pattern"


def _cloth(rng: random.Random, label: str, colour_mode: str) -> Cloth:
    hue = HUES[label] if colour_mode == "family" else rng.uniform(0, 360)
    c1, c2 = _colour(rng, hue)
    return Cloth(c1, c2, rng.choice(PATTERNS), rng.randint(6, 14), rng.choice(SHAPES[label]))


def _other_shade(rng: random.Random, c: Cloth, label: str, colour_mode: str) -> Cloth:
    """Same shape and pattern, another colour (in the label's hue family when colour_mode is "family")."""
    while True:
        hue = (HUES[label] + rng.choice([-1, 1]) * rng.uniform(12, 22)) if colour_mode == "family" else rng.uniform(0, 360)
        c1, c2 = _colour(rng, hue)
        if sum(abs(a - b) for a, b in zip(c1, c.c1)) > 90:
            return Cloth(c1, c2, c.pattern, c.step, c.shape)


def products(n: int, seed: int, colour_mode: str = "family", distractor_share: float = 0.3) -> list[Product]:
    rng = random.Random(seed)
    labels, weights = list(LABEL_MIX), list(LABEL_MIX.values())
    out: list[Product] = []
    while len(out) < n:
        label = rng.choices(labels, weights)[0]
        cloth = _cloth(rng, label, colour_mode)
        cut = (rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15))
        base = Product(f"p{len(out):05d}", label, cloth, cut)
        out.append(base)
        if len(out) < n and rng.random() < distractor_share:
            if rng.random() < 0.6:
                sib = Product(f"p{len(out):05d}", label, _other_shade(rng, cloth, label, colour_mode), cut,
                              base.product_id, "colour")
            else:
                pattern = rng.choice([p for p in PATTERNS if p != cloth.pattern])
                sib = Product(f"p{len(out):05d}", label, Cloth(cloth.c1, cloth.c2, pattern, cloth.step, cloth.shape),
                              cut, base.product_id, "pattern")
            out.append(sib)
    return out


# ----------------------------------------------------------------------------------------------- drawing a body
def _grey(rng: random.Random, lo: int, hi: int) -> tuple[int, int, int]:
    g = rng.randint(lo, hi)
    return tuple(max(0, min(255, g + rng.randint(-6, 6))) for _ in range(3))  # type: ignore[return-value]


def _skin(rng: random.Random) -> tuple[int, int, int]:
    h, s, v = rng.uniform(0.04, 0.1), rng.uniform(0.12, 0.26), rng.uniform(0.35, 0.9)  # saturation < 0.3
    return tuple(int(x * 255) for x in colorsys.hsv_to_rgb(h, s, v))  # type: ignore[return-value]


def draw_wearing(rng: random.Random, worn: list[Product], size=(320, 480), mannequin: bool = False,
                 flip: bool = False, background=None) -> tuple[Image.Image, np.ndarray]:
    """A standing figure wearing ``worn`` (at most one of each label; Dress excludes Upper-clothes/Pants/Skirt).
    Returns the RGB image and its truth map (0 background, BODY ids, GARMENT_ID0 + index into ``worn``)."""
    w, h = size
    img = Image.new("RGB", size, background or _grey(rng, 185, 240))
    ids = np.zeros((h, w), np.uint8)
    d = ImageDraw.Draw(img)
    skin = _grey(rng, 110, 150) if mannequin else _skin(rng)
    by = {p.label: (i, p) for i, p in enumerate(worn)}
    cx = w // 2
    head_r = rng.randint(24, 30)
    top = 52 + rng.randint(0, 12)
    torso_w = rng.randint(84, 104)
    torso_top = top + 2 * head_r + 6
    torso_bottom = torso_top + rng.randint(130, 150)
    leg_bottom = min(h - 12, torso_bottom + rng.randint(170, 190))

    def body(box, part, shape="rect"):
        x0, y0, x1, y1 = (int(v) for v in box)
        (d.ellipse if shape == "ellipse" else d.rectangle)([x0, y0, x1 - 1, y1 - 1], fill=skin)
        sub = Image.new("L", (w, h), 0)
        (ImageDraw.Draw(sub).ellipse if shape == "ellipse" else ImageDraw.Draw(sub).rectangle)(
            [x0, y0, x1 - 1, y1 - 1], fill=255)
        ids[np.asarray(sub) > 127] = BODY[part]

    def wear(label, box):
        i, p = by[label]
        paint(img, box, p.cloth, ids, GARMENT_ID0 + i, flip=flip)

    # body: legs, arms, head (garments are painted over it)
    leg_w = torso_w // 2 - 8
    body([cx - torso_w // 2 + 6, torso_bottom - 10, cx - torso_w // 2 + 6 + leg_w, leg_bottom], "Left-leg")
    body([cx + torso_w // 2 - 6 - leg_w, torso_bottom - 10, cx + torso_w // 2 - 6, leg_bottom], "Right-leg")
    arm_w = rng.randint(16, 22)
    body([cx - torso_w // 2 - arm_w - 2, torso_top + 8, cx - torso_w // 2 - 2, torso_bottom + 20], "Left-arm")
    body([cx + torso_w // 2 + 2, torso_top + 8, cx + torso_w // 2 + arm_w + 2, torso_bottom + 20], "Right-arm")
    body([cx - head_r, top, cx + head_r, top + 2 * head_r], "Face", "ellipse")
    if not mannequin:
        d.rectangle([cx - head_r, top - 4, cx + head_r, top + head_r // 2], fill=_grey(rng, 40, 90))
        ids[max(0, top - 4): top + head_r // 2 + 1, cx - head_r: cx + head_r + 1] = BODY["Hair"]
    if "Dress" in by:
        fw, fl = by["Dress"][1].cut
        half = int(torso_w / 2 * fw) + 6
        wear("Dress", [cx - half, torso_top, cx + half, int(torso_top + (leg_bottom - torso_top - 50) * fl)])
    else:
        if "Pants" in by:
            fw, fl = by["Pants"][1].cut
            gap = 8
            lw = int((torso_w // 2 - 4) * fw)
            bottom = min(h - 4, int(torso_bottom + (leg_bottom - torso_bottom) * fl))
            wear("Pants", [cx - gap // 2 - lw, torso_bottom - 12, cx - gap // 2, bottom])
            wear("Pants", [cx + gap // 2, torso_bottom - 12, cx + gap // 2 + lw, bottom])
        elif "Skirt" in by:
            fw, fl = by["Skirt"][1].cut
            half = int(torso_w / 2 * fw) + 6
            wear("Skirt", [cx - half, torso_bottom - 14, cx + half, int(torso_bottom + 100 * fl)])
        if "Upper-clothes" in by:
            fw, fl = by["Upper-clothes"][1].cut
            half = int(torso_w / 2 * fw)
            wear("Upper-clothes", [cx - half, torso_top, cx + half, int(torso_top + (torso_bottom - torso_top) * fl)])
    if "Hat" in by:
        fw, fl = by["Hat"][1].cut
        hw = int((head_r + 8) * fw)
        wear("Hat", [cx - hw, top - int(30 * fl), cx + hw, top + 6])
    if "Bag" in by:
        fw, fl = by["Bag"][1].cut
        bx = cx + torso_w // 2 + 4
        wear("Bag", [bx, torso_top + 70, bx + int(50 * fw), torso_top + 70 + int(60 * fl)])
    return img, ids


def draw_flat(rng: random.Random, p: Product, size=(320, 320)) -> tuple[Image.Image, np.ndarray]:
    """The garment alone, laid flat on a light background."""
    img = Image.new("RGB", size, _grey(rng, 200, 245))
    ids = np.zeros((size[1], size[0]), np.uint8)
    m = rng.randint(36, 60)
    fw, fl = p.cut
    w, h = size[0] - 2 * m, size[1] - 2 * m
    shape_w = {"Pants": 0.6, "Hat": 1.0, "Bag": 0.8}.get(p.label, 0.8)
    bw, bh = int(w * shape_w * min(1.0, fw)), int(h * min(1.0, fl) * (0.55 if p.label == "Hat" else 1.0))
    x0, y0 = (size[0] - bw) // 2, (size[1] - bh) // 2
    paint(img, [x0, y0, x0 + bw, y0 + bh], p.cloth, ids, GARMENT_ID0)
    return img, ids


def shop_images(rng: random.Random, p: Product) -> list[tuple[str, Image.Image]]:
    """1-3 retailer shots of ``p``: on a mannequin (front, back) and/or flat."""
    kinds = rng.choice([["front"], ["flat"], ["front", "flat"], ["front", "back"], ["front", "back", "flat"]])
    out = []
    for k in kinds:
        if k == "flat":
            img, _ = draw_flat(rng, p)
        else:
            img, _ = draw_wearing(rng, [p], mannequin=True, flip=(k == "back"))
        out.append((k, img))
    return out


# ----------------------------------------------------------------------------------------------- street looks
def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255


def _street_background(rng: random.Random, size, max_sat: float) -> Image.Image:
    """A gradient (wall, street, sky) with clutter (windows, poles, signs). ``max_sat`` bounds the colour of most of
    it; one clutter block in six may be up to twice as colourful (a shop sign)."""
    w, h = size
    a = _hsv(rng.random(), rng.uniform(0, max_sat), rng.uniform(0.3, 0.92))
    b = _hsv(rng.random(), rng.uniform(0, max_sat), rng.uniform(0.3, 0.92))
    t = np.linspace(0, 1, h)[:, None, None] if rng.random() < 0.5 else np.linspace(0, 1, w)[None, :, None]
    arr = np.clip(a + (b - a) * t + np.zeros((h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(0, 6)):
        x0, y0 = rng.randint(0, w), rng.randint(0, h)
        sat = rng.uniform(0, max_sat if rng.random() < 5 / 6 else min(1.0, 2 * max_sat))
        col = tuple(int(c) for c in _hsv(rng.random(), sat, rng.uniform(0.3, 0.95)))
        d.rectangle([x0, y0, x0 + rng.randint(10, w // 2), y0 + rng.randint(10, h // 2)], fill=col)
    return img


def _outfit(rng: random.Random, by_label: dict[str, list[Product]]) -> list[Product]:
    """2-4 garments of different products: top + bottom or a dress, maybe a hat and a bag."""
    while True:
        labels = ["Dress"] if rng.random() < 0.25 else ["Upper-clothes", rng.choice(["Pants", "Pants", "Skirt"])]
        if rng.random() < 0.4:
            labels.append("Hat")
        if rng.random() < 0.45:
            labels.append("Bag")
        if 2 <= len(labels) <= 4:
            return [rng.choice(by_label[lab]) for lab in labels]


def street_look(rng: random.Random, worn: list[Product], size=(480, 560),
                background_sat: float = 0.2) -> tuple[bytes, np.ndarray, dict]:
    """One street photo of a person wearing ``worn``: the JPEG, its truth map and what was done to it."""
    person, ids = draw_wearing(rng, worn, background=(0, 0, 0))
    alpha = Image.fromarray(((ids > 0) * 255).astype(np.uint8), "L")
    scale = rng.uniform(0.65, 1.12)
    angle = rng.uniform(-12, 12)
    pw, ph = int(person.width * scale), int(person.height * scale)
    layers = [person.resize((pw, ph), Image.BILINEAR), alpha.resize((pw, ph), Image.BILINEAR),
              Image.fromarray(ids).resize((pw, ph), Image.NEAREST)]
    layers = [layers[0].rotate(angle, Image.BILINEAR, expand=True), layers[1].rotate(angle, Image.BILINEAR, expand=True),
              layers[2].rotate(angle, Image.NEAREST, expand=True)]
    W, H = size
    canvas = _street_background(rng, size, background_sat)
    x = rng.randint(min(0, W - layers[0].width), max(0, W - layers[0].width))
    y = rng.randint(min(0, H - layers[0].height), max(0, H - layers[0].height))
    canvas.paste(layers[0], (x, y), layers[1].point(lambda v: 255 if v > 127 else 0))
    truth = Image.new("L", size, 0)
    truth.paste(layers[2], (x, y), layers[1].point(lambda v: 255 if v > 127 else 0))
    truth_ids = np.asarray(truth).copy()
    info = {"scale": round(scale, 3), "angle": round(angle, 2)}
    if rng.random() < 0.35:  # partial occlusion of one garment (a passer-by, a pole, a shopping bag)
        gi = rng.randrange(len(worn))
        ys, xs = np.nonzero(truth_ids == GARMENT_ID0 + gi)
        if len(xs):
            bw, bh = xs.max() - xs.min(), ys.max() - ys.min()
            ow, oh = int(bw * rng.uniform(0.3, 0.55)), int(bh * rng.uniform(0.3, 0.55))
            ox = int(xs.min()) + (0 if rng.random() < 0.5 else bw - ow)
            oy = int(ys.min()) + rng.randint(0, max(0, bh - oh))
            ImageDraw.Draw(canvas).rectangle([ox, oy, ox + ow, oy + oh], fill=_grey(rng, 50, 160))
            truth_ids[oy: oy + oh + 1, ox: ox + ow + 1] = 0
            info["occluded"] = worn[gi].product_id
    light = rng.uniform(0.72, 1.25)
    canvas = ImageEnhance.Brightness(canvas).enhance(light)
    gains = [rng.uniform(0.9, 1.1) for _ in range(3)]
    arr = np.clip(np.asarray(canvas, dtype=np.float32) * np.array(gains), 0, 255).astype(np.uint8)
    canvas = Image.fromarray(arr)
    blur = rng.choice([0.0, 0.0, rng.uniform(0.4, 1.4)])
    if blur:
        canvas = canvas.filter(ImageFilter.GaussianBlur(blur))
    quality = rng.randint(40, 90)
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=quality)
    info.update(light=round(light, 3), cast=[round(g, 3) for g in gains], blur=round(blur, 2), jpeg_quality=quality)
    return buf.getvalue(), truth_ids, info


# ----------------------------------------------------------------------------------------------- the set on disk
@dataclass(frozen=True)
class GroundTruth:
    root: Path
    products: list[Product]
    shop: dict[str, list[Path]]  # product id -> its shop image files
    looks: list[dict]  # {"look_id", "image": Path, "truth": Path (npz), "garments": [{product_id, label, id}], ...}

    def truth_map(self, look: dict) -> np.ndarray:
        return np.load(look["truth"])["ids"]


def generate(root: Path, n_products: int, n_looks: int, seed: int = 1, look_seed: int = 1001,
             colour_mode: str = "family") -> GroundTruth:
    """Products and their shop images from ``seed``; street looks from ``look_seed`` (held out). Cached."""
    key = f"p{n_products}-l{n_looks}-s{seed}-ls{look_seed}-{colour_mode}-v3"
    d = root / key
    prods = products(n_products, seed, colour_mode)
    manifest = d / "manifest.json"
    if not manifest.exists():
        (d / "shop").mkdir(parents=True, exist_ok=True)
        (d / "looks").mkdir(parents=True, exist_ok=True)
        rng = random.Random(seed * 7919 + 1)
        shop = {}
        for p in prods:
            files = []
            for kind, img in shop_images(rng, p):
                f = d / "shop" / f"{p.product_id}-{kind}.jpg"
                img.save(f, format="JPEG", quality=92)
                files.append(f.name)
            shop[p.product_id] = files
        by_label: dict[str, list[Product]] = {}
        for p in prods:
            by_label.setdefault(p.label, []).append(p)
        lrng = random.Random(look_seed)
        looks = []
        for k in range(n_looks):
            worn = _outfit(lrng, by_label)
            data, truth, info = street_look(lrng, worn, background_sat=0.1 if colour_mode == "family" else 0.8)
            lid = f"look{k:05d}"
            (d / "looks" / f"{lid}.jpg").write_bytes(data)
            np.savez_compressed(d / "looks" / f"{lid}.npz", ids=truth)
            looks.append({"look_id": lid, "garments": [
                {"product_id": p.product_id, "label": p.label, "id": GARMENT_ID0 + i} for i, p in enumerate(worn)],
                **info})
        manifest.write_text(json.dumps({"shop": shop, "looks": looks,
                                        "products": [asdict(p) for p in prods]}, indent=1))
    m = json.loads(manifest.read_text())
    shop = {pid: [d / "shop" / f for f in files] for pid, files in m["shop"].items()}
    looks = [{**lk, "image": d / "looks" / f"{lk['look_id']}.jpg", "truth": d / "looks" / f"{lk['look_id']}.npz"}
             for lk in m["looks"]]
    return GroundTruth(d, prods, shop, looks)
