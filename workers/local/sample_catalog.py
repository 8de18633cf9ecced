"""A deterministic sample catalog that needs no internet: synthetic outfit photos with known products.

Each product is a "look": a figure on a plain, low-saturation background wearing 2-4 garments, each a
saturated colour family per garment type (the declared tiny test SegFormer labels by colour, see
modeltools/weights.py: red tops, blue pants, green skirts, yellow dresses, magenta hats, cyan bags)
with a per-product shade, pattern and cut, so every product looks different to ResNet50.
Some products are flat shots (one garment alone). Output: ``images/<product_id>.jpg`` and
``catalog.jsonl`` (one line per product: product_id, image path, metadata).
"""

from __future__ import annotations

import colorsys
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

# hue in degrees per garment kind (matches the tiny model's colour rule)
HUES = {"Upper-clothes": 0, "Pants": 240, "Skirt": 120, "Dress": 60, "Hat": 300, "Bag": 180}
BRANDS = ["Northwind", "Contoso", "Fabrikam", "Tailspin", "Adatum", "Litware"]
CATEGORIES = {"Upper-clothes": "tops", "Pants": "bottoms", "Skirt": "bottoms", "Dress": "dresses",
              "Hat": "accessories", "Bag": "accessories"}
PATTERNS = ("solid", "stripes", "checks", "dots", "diagonal")


@dataclass(frozen=True)
class SampleProduct:
    product_id: str
    path: Path
    garments: tuple[str, ...]
    metadata: dict


def _colour(rng: random.Random, hue_deg: float) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A saturated shade of the hue family and a second shade for the pattern."""
    h = ((hue_deg + rng.uniform(-8, 8)) % 360) / 360
    s1, v1 = rng.uniform(0.65, 1.0), rng.uniform(0.55, 0.95)
    s2, v2 = max(0.45, s1 - rng.uniform(0.15, 0.35)), min(1.0, max(0.4, v1 + rng.choice([-0.3, 0.3])))
    c1 = tuple(int(x * 255) for x in colorsys.hsv_to_rgb(h, s1, v1))
    c2 = tuple(int(x * 255) for x in colorsys.hsv_to_rgb(h, s2, v2))
    return c1, c2  # type: ignore[return-value]


@dataclass(frozen=True)
class Cloth:
    """How one garment looks, so the same product can be drawn again (another shot, a street look)."""

    c1: tuple[int, int, int]
    c2: tuple[int, int, int]
    pattern: str
    step: int
    shape: str = "rect"


def _fill(img: Image.Image, box, rng: random.Random, hue: float, pattern: str, shape: str = "rect") -> None:
    """Paint one garment: a shade of ``hue`` with a pattern, clipped to its shape (nothing spills out)."""
    c1, c2 = _colour(rng, hue)
    paint(img, box, Cloth(c1, c2, pattern, rng.randint(6, 14), shape))


def paint(img: Image.Image, box, cloth: Cloth, ids=None, value: int = 0, flip: bool = False) -> None:
    """Paint ``cloth`` into ``box`` of ``img``; where it lands, ``ids`` (a numpy label array the size of the
    image, optional) is set to ``value``: the ground-truth mask. ``flip`` mirrors it (the back of a garment)."""
    c1, c2, pattern, step, shape = cloth.c1, cloth.c2, cloth.pattern, cloth.step, cloth.shape
    x0, y0, x1, y1 = (int(v) for v in box)
    w, h = x1 - x0, y1 - y0
    if w < 2 or h < 2:
        return
    tile = Image.new("RGB", (w, h), c1)
    d = ImageDraw.Draw(tile)
    if pattern == "stripes":
        for y in range(2, h - 2, step):
            d.line([(0, y), (w, y)], fill=c2, width=max(2, step // 3))
    elif pattern == "checks":
        for y in range(0, h, step * 2):
            for x in range(0, w, step * 2):
                d.rectangle([x, y, x + step - 1, y + step - 1], fill=c2)
    elif pattern == "dots":
        for y in range(step, h - step // 2, step * 2):
            for x in range(step, w - step // 2, step * 2):
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=c2)
    elif pattern == "diagonal":
        for k in range(-h, w, step * 2):
            d.line([(k, 0), (k + h, h)], fill=c2, width=3)
    mask = Image.new("L", (w, h), 0)
    md = ImageDraw.Draw(mask)
    if shape == "ellipse":
        md.ellipse([0, 0, w - 1, h - 1], fill=255)
    elif shape == "trapezoid":
        inset = w // 5
        md.polygon([(inset, 0), (w - 1 - inset, 0), (w - 1, h - 1), (0, h - 1)], fill=255)
    else:
        md.rectangle([0, 0, w - 1, h - 1], fill=255)
    if flip:
        tile, mask = tile.transpose(Image.FLIP_LEFT_RIGHT), mask.transpose(Image.FLIP_LEFT_RIGHT)
    img.paste(tile, (x0, y0), mask)
    if ids is not None:
        import numpy as np

        m = np.asarray(mask) > 127
        H, W = ids.shape
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
        if cx1 > cx0 and cy1 > cy0:
            sub = m[cy0 - y0: cy1 - y0, cx0 - x0: cx1 - x0]
            ids[cy0:cy1, cx0:cx1][sub] = value


def _background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    grey = rng.randint(170, 235)
    tint = [grey + rng.randint(-8, 8) for _ in range(3)]
    return Image.new("RGB", size, tuple(max(0, min(255, t)) for t in tint))


def draw_look(rng: random.Random, garments: tuple[str, ...], size=(320, 480)) -> Image.Image:
    """A standing figure wearing ``garments`` (a subset of HUES' keys)."""
    w, h = size
    img = _background(rng, size)
    d = ImageDraw.Draw(img)
    cx = w // 2 + rng.randint(-20, 20)
    bg = img.getpixel((0, 0))
    skin = tuple(max(0, c - 30) for c in bg)  # unsaturated: the tiny model's colour rule calls it background
    head_r = rng.randint(26, 34)
    top = 40 + rng.randint(0, 20)
    d.ellipse([cx - head_r, top, cx + head_r, top + 2 * head_r], fill=skin)
    torso_w = rng.randint(90, 120)
    torso_top = top + 2 * head_r + 6
    torso_bottom = torso_top + rng.randint(130, 160)
    waist = torso_bottom + rng.randint(18, 26)  # a strip of background between top and bottom garments
    leg_bottom = min(h - 30, torso_bottom + rng.randint(150, 190))
    if "Hat" in garments:
        _fill(img, [cx - head_r - 8, top - 34, cx + head_r + 8, top - 6], rng, HUES["Hat"], rng.choice(PATTERNS),
              rng.choice(["rect", "trapezoid"]))
    if "Dress" in garments:
        _fill(img, [cx - torso_w // 2, torso_top, cx + torso_w // 2 + 10, leg_bottom - 60], rng, HUES["Dress"],
              rng.choice(PATTERNS), "trapezoid")
    else:
        if "Upper-clothes" in garments:
            _fill(img, [cx - torso_w // 2, torso_top, cx + torso_w // 2, torso_bottom], rng, HUES["Upper-clothes"],
                  rng.choice(PATTERNS), rng.choice(["rect", "trapezoid"]))
        if "Pants" in garments:
            pattern = rng.choice(PATTERNS)
            sub = random.Random(rng.random())  # both legs the same cloth
            state = sub.getstate()
            gap = rng.randint(6, 14)
            _fill(img, [cx - torso_w // 2 + 6, waist, cx - gap // 2, leg_bottom], sub, HUES["Pants"], pattern)
            sub.setstate(state)
            _fill(img, [cx + gap // 2, waist, cx + torso_w // 2 - 6, leg_bottom], sub, HUES["Pants"], pattern)
        elif "Skirt" in garments:
            _fill(img, [cx - torso_w // 2 - 4, waist, cx + torso_w // 2 + 4, waist + rng.randint(90, 130)],
                  rng, HUES["Skirt"], rng.choice(PATTERNS), "trapezoid")
    if "Bag" in garments:
        bx = cx + torso_w // 2 + 8
        _fill(img, [bx, torso_top + 60, bx + rng.randint(40, 60), torso_top + 60 + rng.randint(45, 70)], rng,
              HUES["Bag"], rng.choice(PATTERNS))
    return img


def draw_flat(rng: random.Random, garment: str, size=(320, 320)) -> Image.Image:
    """A product shot: one garment centred on a plain background."""
    img = _background(rng, size)
    d = ImageDraw.Draw(img)
    m = rng.randint(40, 70)
    _fill(img, [m, m, size[0] - m, size[1] - m], rng, HUES[garment], rng.choice(PATTERNS),
          rng.choice(["rect", "trapezoid", "ellipse"]))
    return img


def _outfit(rng: random.Random) -> tuple[str, ...]:
    if rng.random() < 0.2:
        base = ["Dress"]
    else:
        base = ["Upper-clothes", rng.choice(["Pants", "Pants", "Skirt"])]
    if rng.random() < 0.35:
        base.append("Hat")
    if rng.random() < 0.35:
        base.append("Bag")
    return tuple(base)


def generate(out: Path, n: int = 24, seed: int = 7, tenant: str = "demo", flat_share: float = 0.15) -> list[SampleProduct]:
    """Write ``n`` products under ``out`` (images/ + catalog.jsonl). Same seed, same bytes."""
    rng = random.Random(seed)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    products = []
    for i in range(n):
        pid = f"{tenant}-{i:04d}"
        if rng.random() < flat_share:
            garments: tuple[str, ...] = (rng.choice(list(HUES)),)
            img = draw_flat(rng, garments[0])
        else:
            garments = _outfit(rng)
            img = draw_look(rng, garments)
        path = images / f"{pid}.jpg"
        img.save(path, format="JPEG", quality=92)
        main = garments[0]
        metadata = {
            "title": f"{rng.choice(['Classic', 'Urban', 'Summer', 'Retro', 'Soft'])} {' + '.join(g.lower() for g in garments)}",
            "brand": BRANDS[i % len(BRANDS)],
            "category": CATEGORIES[main],
            "price": round(10 + (i * 37 % 190) + rng.random(), 2),
            "currency": "EUR",
            "url": f"https://shop.example/{tenant}/{pid}",
            "in_stock": i % 5 != 4,
            "attributes": {"garments": ",".join(garments)},
        }
        products.append(SampleProduct(pid, path, garments, metadata))
    with open(out / "catalog.jsonl", "w") as f:
        for p in products:
            f.write(json.dumps({"product_id": p.product_id, "image": str(p.path.relative_to(out)),
                                "metadata": p.metadata}) + "\n")
    return products
