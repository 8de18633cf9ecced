"""Rendered people with exact label maps: training data for the tiny segmenter, and the demo's shop/street images.

Pure numpy + Pillow (no torch): the trainer imports it in the model env, the demo in the worker venv.

Every garment's colours and pattern are drawn at random (any hue, saturation and value, the background too), so a
segmenter trained on these images must learn garment *shapes and places on a body*, not hues. A person is a head
(Face, Hair, sometimes Hat / Sunglasses), arms, legs and shoes, dressed in an upper garment + pants / skirt, or a
dress, sometimes a bag or a scarf, posed with a random scale, position, lean and limb spread, on a plain, gradient
or textured background, then degraded (lighting, colour cast, blur, JPEG 40-90). Labels are the 18 ids of
``LABELS`` (mattmdjaga/segformer_b2_clothes).

A ``Garment`` is one product's cloth and cut: the same ``Garment`` rendered on a shop mannequin and on a street
look gives the same colours, pattern and cut at another scale, pose and light (``shop_image`` / ``street_look``).
"""

from __future__ import annotations

import colorsys
import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

LABELS = [
    "Background", "Hat", "Hair", "Sunglasses", "Upper-clothes", "Skirt", "Pants", "Dress", "Belt",
    "Left-shoe", "Right-shoe", "Face", "Left-leg", "Right-leg", "Left-arm", "Right-arm", "Bag", "Scarf",
]
ID = {name: i for i, name in enumerate(LABELS)}
GARMENT_KINDS = ("Upper-clothes", "Pants", "Skirt", "Dress", "Hat", "Bag", "Scarf")
PATTERNS = ("solid", "solid", "stripes", "checks", "dots", "diagonal")
SIZE = (256, 384)  # portrait W x H, as catalog photos are


def _rand_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    h, s, v = rng.random(), rng.uniform(0.0, 1.0) ** 0.7, rng.uniform(0.15, 1.0)
    return tuple(int(c * 255) for c in colorsys.hsv_to_rgb(h, s, v))  # type: ignore[return-value]


@dataclass(frozen=True)
class Garment:
    """One product's garment: kind, two colours, a pattern, and its cut (fractions of the body)."""

    kind: str
    c1: tuple[int, int, int]
    c2: tuple[int, int, int]
    pattern: str
    period: float  # pattern period as a fraction of the person's height
    cut: dict = field(default_factory=dict, hash=False, compare=False)

    @staticmethod
    def random(rng: np.random.Generator, kind: str) -> "Garment":
        cut = {"sleeve": rng.uniform(0.15, 1.0), "length": rng.uniform(0.0, 1.0), "flare": rng.uniform(0.0, 1.0),
               "width": rng.uniform(0.9, 1.15)}
        return Garment(kind, _rand_colour(rng), _rand_colour(rng), str(rng.choice(PATTERNS)),
                       float(rng.uniform(0.02, 0.06)), cut)


# ----------------------------------------------------------------------------------------------- drawing
class Canvas:
    def __init__(self, bg: Image.Image):
        self.img = bg
        self.lab = Image.new("L", bg.size, 0)

    def part(self, poly, label: int, fill) -> None:
        """Paint a polygon (or ellipse box) with ``fill`` (RGB or an image) and set its label."""
        mask = Image.new("L", self.img.size, 0)
        d = ImageDraw.Draw(mask)
        if isinstance(poly, tuple) and len(poly) == 4 and not isinstance(poly[0], tuple):
            d.ellipse(poly, fill=255)
        else:
            d.polygon([(float(x), float(y)) for x, y in poly], fill=255)
        src = fill if isinstance(fill, Image.Image) else Image.new("RGB", self.img.size, fill)
        self.img.paste(src, (0, 0), mask)
        self.lab.paste(label, (0, 0), mask)


def _pattern(size, g: Garment, scale_px: float, rng: np.random.Generator) -> Image.Image:
    tile = Image.new("RGB", size, g.c1)
    if g.pattern == "solid":
        return tile
    d = ImageDraw.Draw(tile)
    step = max(4, int(g.period * scale_px))
    w, h = size
    if g.pattern == "stripes":
        for y in range(0, h, step):
            d.rectangle([0, y, w, y + step // 2], fill=g.c2)
    elif g.pattern == "checks":
        for y in range(0, h, step):
            for x in range((y // step) % 2 * step, w, 2 * step):
                d.rectangle([x, y, x + step - 1, y + step - 1], fill=g.c2)
    elif g.pattern == "dots":
        r = max(1, step // 4)
        for y in range(0, h, step):
            for x in range(0, w, step):
                d.ellipse([x - r, y - r, x + r, y + r], fill=g.c2)
    else:  # diagonal
        for k in range(-h, w, step):
            d.line([(k, 0), (k + h, h)], fill=g.c2, width=max(2, step // 3))
    return tile


def _background(rng: np.random.Generator, size, shop: bool) -> Image.Image:
    w, h = size
    if shop:  # retailers' light, plain backdrops
        v = int(rng.integers(200, 250))
        return Image.new("RGB", size, tuple(int(np.clip(v + rng.integers(-8, 9), 0, 255)) for _ in range(3)))
    kind = rng.choice(["plain", "gradient", "texture", "blocks"])
    a, b = np.array(_rand_colour(rng), np.float32), np.array(_rand_colour(rng), np.float32)
    if kind == "plain":
        arr = np.broadcast_to(a, (h, w, 3)).copy()
    elif kind == "gradient":
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        arr = np.broadcast_to(a * (1 - t) + b * t, (h, w, 3)).copy()
    elif kind == "texture":
        small = rng.random((h // 16 + 1, w // 16 + 1, 1)).astype(np.float32)
        noise = np.asarray(Image.fromarray((small[..., 0] * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR))
        t = noise[..., None].astype(np.float32) / 255
        arr = a * (1 - t) + b * t
    else:  # walls, windows, street furniture: random rectangles
        arr = np.broadcast_to(a, (h, w, 3)).copy()
        for _ in range(int(rng.integers(3, 9))):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            arr[y0: y0 + int(rng.integers(10, h // 2)), x0: x0 + int(rng.integers(10, w // 2))] = _rand_colour(rng)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _person(canvas: Canvas, rng: np.random.Generator, garments: dict[str, Garment], *, cx: float, top: float,
            height: float, lean: float, mannequin: bool) -> None:
    """Draw a standing person of ``height`` px whose head top is at (cx, top); ``lean`` in radians."""
    H = height
    cos, sin = math.cos(lean), math.sin(lean)

    def P(x, y):  # body coordinates (x in units of H from the centre line, y from the head top) -> pixels
        return (cx + (x * cos - y * sin) * H, top + (x * sin + y * cos) * H)

    def poly(*pts):
        return [P(x, y) for x, y in pts]

    skin = (int(rng.integers(150, 256)),) * 3 if mannequin else _skin(rng)
    hair = _rand_colour(rng) if rng.random() < 0.3 else tuple(int(c) for c in rng.integers(10, 120, 3))
    spread = rng.uniform(0.0, 0.08)  # arm spread
    stance = rng.uniform(0.0, 0.05)  # leg spread
    sh, hip, knee_y, foot_y = 0.18, 0.52, 0.74, 0.97
    tw = 0.11 * rng.uniform(0.9, 1.15)  # half shoulder width
    hw = 0.09 * rng.uniform(0.9, 1.15)  # half hip width

    # legs (then shoes) - Left-* is the person's left, the viewer's right
    for side, lab, shoe in ((+1, ID["Left-leg"], ID["Left-shoe"]), (-1, ID["Right-leg"], ID["Right-shoe"])):
        canvas.part(poly((side * 0.01, hip), (side * (hw + 0.005), hip), (side * (0.055 + stance), foot_y),
                         (side * (0.015 + stance), foot_y)), lab, skin)
        sc = tuple(int(c) for c in rng.integers(0, 256, 3)) if side > 0 or rng.random() < 0.1 else shoe_c
        shoe_c = sc
        foot = poly((side * (0.005 + stance), foot_y - 0.025), (side * (0.065 + stance), foot_y - 0.025),
                    (side * (0.08 + stance), foot_y + 0.02), (side * (0.0 + stance), foot_y + 0.02))
        canvas.part(foot, lab, skin) if mannequin else canvas.part(foot, shoe, sc)  # a mannequin has bare feet
    # arms
    arm_len = 0.38
    for side, lab in ((+1, ID["Left-arm"]), (-1, ID["Right-arm"])):
        canvas.part(poly((side * (tw - 0.01), sh), (side * (tw + 0.045), sh + 0.01),
                         (side * (tw + 0.04 + spread), sh + arm_len), (side * (tw + 0.0 + spread), sh + arm_len)),
                    lab, skin)
    # neck + face + hair
    canvas.part(poly((-0.025, 0.1), (0.025, 0.1), (0.03, sh + 0.01), (-0.03, sh + 0.01)), ID["Face"] if mannequin else ID["Face"], skin)
    hx, hy = P(0, 0.065)
    r = 0.058 * H
    if not mannequin:
        canvas.part((hx - r * 1.08, hy - r * 1.15, hx + r * 1.08, hy + r * 0.9), ID["Hair"], hair)
    canvas.part((hx - r * 0.85, hy - r * 0.8, hx + r * 0.85, hy + r * 1.05), ID["Face"], skin)
    if not mannequin and rng.random() < 0.15:
        canvas.part([(hx - r * 0.7, hy - r * 0.1), (hx + r * 0.7, hy - r * 0.1), (hx + r * 0.7, hy + r * 0.2),
                     (hx - r * 0.7, hy + r * 0.2)], ID["Sunglasses"], (20, 20, 25))

    scale_px = H
    size = canvas.img.size

    def cloth(kind: str, pts, label: str | None = None) -> None:
        g = garments[kind]
        canvas.part(pts, ID[label or kind], _pattern(size, g, scale_px, rng))

    def cut(kind, key, default=0.5):
        return garments[kind].cut.get(key, default)

    if "Pants" in garments:
        ln = knee_y - 0.08 + cut("Pants", "length") * (foot_y - knee_y + 0.06)  # shorts .. full length
        w = cut("Pants", "width", 1.0)
        cloth("Pants", poly((-hw * w, hip - 0.03), (hw * w, hip - 0.03), (hw * w + 0.01, hip + 0.02),
                            (0.05 + stance + 0.01, ln), (0.012, ln), (0.0, hip + 0.06), (-0.012, ln),
                            (-(0.05 + stance + 0.01), ln), (-(hw * w + 0.01), hip + 0.02)))
    if "Skirt" in garments:
        ln = hip + 0.08 + cut("Skirt", "length") * 0.25
        fl = 0.02 + cut("Skirt", "flare") * 0.08
        cloth("Skirt", poly((-hw, hip - 0.04), (hw, hip - 0.04), (hw + fl, ln), (-(hw + fl), ln)))
    if "Dress" in garments:
        ln = hip + 0.06 + cut("Dress", "length") * 0.3
        fl = 0.02 + cut("Dress", "flare") * 0.1
        cloth("Dress", poly((-tw, sh), (tw, sh), (tw - 0.015, sh + 0.16), (hw - 0.005, hip - 0.06),
                            (hw + fl, ln), (-(hw + fl), ln), (-(hw - 0.005), hip - 0.06), (-(tw - 0.015), sh + 0.16)))
        sl = cut("Dress", "sleeve") * 0.5
        if sl > 0.12:
            for side in (+1, -1):
                cloth("Dress", poly((side * (tw - 0.01), sh), (side * (tw + 0.045), sh + 0.01),
                                    (side * (tw + 0.04 + spread * sl / 0.5), sh + arm_len * sl),
                                    (side * (tw - 0.005 + spread * sl / 0.5), sh + arm_len * sl)))
    if "Upper-clothes" in garments:
        ln = hip - 0.06 + cut("Upper-clothes", "length") * 0.1
        w = cut("Upper-clothes", "width", 1.0)
        cloth("Upper-clothes", poly((-tw * w, sh), (tw * w, sh), (tw * w - 0.01, sh + 0.15), (hw * w + 0.01, ln),
                                    (-(hw * w + 0.01), ln), (-(tw * w - 0.01), sh + 0.15)))
        sl = cut("Upper-clothes", "sleeve")
        for side in (+1, -1):
            cloth("Upper-clothes", poly((side * (tw * w - 0.01), sh - 0.005), (side * (tw * w + 0.05), sh + 0.01),
                                        (side * (tw + 0.045 + spread * sl), sh + arm_len * sl),
                                        (side * (tw - 0.005 + spread * sl), sh + arm_len * sl)))
    if "Scarf" in garments:
        cloth("Scarf", poly((-0.06, sh - 0.03), (0.06, sh - 0.03), (0.07, sh + 0.03), (0.02, sh + 0.04),
                            (0.03, sh + 0.2), (-0.01, sh + 0.2), (-0.02, sh + 0.04), (-0.07, sh + 0.03)))
    if "Hat" in garments:
        brim = cut("Hat", "flare") * 0.04
        cloth("Hat", [P(-0.07 - brim, 0.035), P(0.07 + brim, 0.035), P(0.06 + brim, 0.012),
                      P(0.05, -0.04), P(-0.05, -0.04), P(-0.06 - brim, 0.012)])
    if "Bag" in garments:
        side = 1 if rng.random() < 0.5 else -1
        bw, bh = 0.06 + cut("Bag", "width", 1.0) * 0.04, 0.06 + cut("Bag", "length") * 0.06
        x0 = side * (tw + 0.03 + spread)
        y0 = sh + arm_len - 0.05
        cloth("Bag", poly((x0 - bw / 2, y0), (x0 + bw / 2, y0), (x0 + bw / 2, y0 + bh), (x0 - bw / 2, y0 + bh)))


def _skin(rng: np.random.Generator) -> tuple[int, int, int]:
    base = np.array([rng.uniform(90, 245), 0, 0])
    base[1] = base[0] * rng.uniform(0.7, 0.85)
    base[2] = base[0] * rng.uniform(0.55, 0.75)
    return tuple(int(c) for c in base)  # type: ignore[return-value]


def _degrade(img: Image.Image, rng: np.random.Generator, strong: bool) -> Image.Image:
    """Light, colour cast, blur and JPEG, as phone photos of a street look have."""
    arr = np.asarray(img).astype(np.float32)
    gain = rng.uniform(0.7, 1.25) if strong else rng.uniform(0.92, 1.05)
    cast = rng.uniform(0.85, 1.15, 3) if strong else rng.uniform(0.97, 1.03, 3)
    arr = np.clip((arr - 128) * rng.uniform(0.8, 1.15) + 128, 0, 255) * gain * cast
    out = Image.fromarray(np.clip(arr + rng.normal(0, 3, arr.shape), 0, 255).astype(np.uint8))
    if strong and rng.random() < 0.4:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.3)))
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=int(rng.integers(40, 91)) if strong else 92)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


# ----------------------------------------------------------------------------------------------- outfits
def random_outfit(rng: np.random.Generator) -> dict[str, Garment]:
    kinds = ["Dress"] if rng.random() < 0.25 else ["Upper-clothes", str(rng.choice(["Pants", "Pants", "Skirt"]))]
    for extra, p in (("Hat", 0.3), ("Bag", 0.35), ("Scarf", 0.1)):
        if rng.random() < p:
            kinds.append(extra)
    return {k: Garment.random(rng, k) for k in kinds}


def render(rng: np.random.Generator, garments: dict[str, Garment], *, size=SIZE, shop: bool = False,
           degrade: bool | None = None) -> tuple[Image.Image, np.ndarray]:
    """One person wearing ``garments``: (RGB image, uint8 label map of the same size)."""
    w, h = size
    canvas = Canvas(_background(rng, size, shop))
    if shop:  # centred, full height, upright, on a mannequin
        height = h * rng.uniform(0.86, 0.94)
        cx, top, lean = w / 2 + rng.uniform(-0.02, 0.02) * w, h * 0.03, 0.0
    else:
        height = h * rng.uniform(0.45, 0.98)
        cx = rng.uniform(0.3, 0.7) * w
        top = rng.uniform(0.0, max(0.01, h - height * 1.02))
        lean = rng.uniform(-0.12, 0.12)
    _person(canvas, rng, garments, cx=cx, top=top, height=height, lean=lean, mannequin=shop)
    img = _degrade(canvas.img, rng, strong=not shop if degrade is None else degrade)
    return img, np.asarray(canvas.lab, dtype=np.uint8).copy()


def flat_shot(rng: np.random.Generator, garment: Garment, size=SIZE) -> tuple[Image.Image, np.ndarray]:
    """A flat / ghost-mannequin product shot: only the garment, enlarged and centred on a light backdrop."""
    w, h = size
    canvas = Canvas(_background(rng, size, shop=True))
    backdrop = canvas.img.getpixel((0, 0))
    _person(canvas, rng, {garment.kind: garment}, cx=w / 2, top=h * 0.03, height=h * 0.9, lean=0.0, mannequin=True)
    lab = np.asarray(canvas.lab).copy()
    img = np.asarray(canvas.img).copy()
    keep = lab == ID[garment.kind]
    img[~keep], lab[~keep] = backdrop, 0
    ys, xs = np.nonzero(keep)
    if len(ys):
        m = int(0.08 * max(h, w))
        box = (max(0, xs.min() - m), max(0, ys.min() - m), min(w, xs.max() + m), min(h, ys.max() + m))
        bw, bh = box[2] - box[0], box[3] - box[1]
        scale = min(w / bw, h / bh)
        nw, nh = max(1, int(bw * scale)), max(1, int(bh * scale))
        ox, oy = (w - nw) // 2, (h - nh) // 2
        big = Image.new("RGB", size, backdrop)
        big.paste(Image.fromarray(img).crop(box).resize((nw, nh), Image.BILINEAR), (ox, oy))
        big_lab = Image.new("L", size, 0)
        big_lab.paste(Image.fromarray(lab).crop(box).resize((nw, nh), Image.NEAREST), (ox, oy))
        img, lab = np.asarray(big), np.asarray(big_lab).copy()
    return _degrade(Image.fromarray(img), rng, strong=False), lab


def training_pair(rng: np.random.Generator, size=SIZE) -> tuple[Image.Image, np.ndarray]:
    """A random person in a random outfit (street or shop style), or a flat shot of one garment."""
    u = rng.random()
    if u < 0.12:
        return flat_shot(rng, Garment.random(rng, str(rng.choice(GARMENT_KINDS))), size)
    return render(rng, random_outfit(rng), size=size, shop=u < 0.35)


def shop_image(rng: np.random.Generator, garment: Garment, size=SIZE) -> Image.Image:
    """A product shot: the garment alone on a grey mannequin, or flat, on a light backdrop."""
    if rng.random() < 0.35:
        return flat_shot(rng, garment, size)[0]
    return render(rng, {garment.kind: garment}, size=size, shop=True)[0]  # the product is its photo's only garment


def street_look(rng: np.random.Generator, garments: list[Garment], size=SIZE) -> tuple[Image.Image, np.ndarray]:
    return render(rng, {g.kind: g for g in garments}, size=size, shop=False)
