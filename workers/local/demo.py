"""The demo's data: a shop catalog (one garment per product photo, on a mannequin or flat) and a street look that
is NOT in the catalog (a person wearing 3 catalog garments, another background, scale, pose and light).

Rendered by ``modeltools/segdata.py`` (numpy + Pillow only: no torch here), the generator the default tiny
segmenter was trained on, with other seeds. Output: ``images/<product_id>.jpg`` + ``catalog.jsonl`` (the format
``lookstream ingest`` reads) and ``street-look.jpg`` + ``street-look.json`` (which products it wears).
"""

from __future__ import annotations

import colorsys
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("Dress", "Upper-clothes", "Pants", "Skirt", "Hat", "Bag")
CATEGORIES = {"Upper-clothes": "tops", "Pants": "bottoms", "Skirt": "bottoms", "Dress": "dresses", "Hat": "accessories",
              "Bag": "accessories"}
BRANDS = ["Northwind", "Contoso", "Fabrikam", "Tailspin", "Adatum", "Litware"]
LOOK = ("Dress", "Hat", "Bag")


def _segdata():
    spec = importlib.util.spec_from_file_location("lookstream_segdata", ROOT / "modeltools" / "segdata.py")
    if spec.name in sys.modules:
        return sys.modules[spec.name]
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def colour_name(rgb: tuple[int, int, int]) -> str:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    if v < 0.2:
        return "black"
    if s < 0.18:
        return "white" if v > 0.8 else "grey"
    names = ["red", "orange", "yellow", "green", "teal", "blue", "purple", "pink", "red"]
    return names[int(((h * 360 + 20) % 360) // 45)]


@dataclass(frozen=True)
class DemoSet:
    catalog: Path
    look: Path
    look_products: dict[str, str]  # garment label -> the product it is


def write_demo(out: Path, n: int = 24, seed: int = 7, tenant: str = "demo") -> DemoSet:
    sd = _segdata()
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    garments, lines = {}, []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        g = sd.Garment.random(rng, kind)
        pid = f"{tenant}-{i:04d}"
        garments[pid] = g
        sd.shop_image(rng, g).save(out / "images" / f"{pid}.jpg", quality=92)
        pattern = "" if g.pattern == "solid" else f"{g.pattern} "
        md = {"title": f"{colour_name(g.c1).capitalize()} {pattern}{kind.lower()}", "brand": BRANDS[i % len(BRANDS)],
              "category": CATEGORIES[kind], "price": round(15 + (i * 37 % 180) + 0.99, 2), "currency": "EUR",
              "url": f"https://shop.example/{tenant}/{pid}", "in_stock": i % 7 != 6,
              "attributes": {"garment": kind}}
        lines.append({"product_id": pid, "image": f"images/{pid}.jpg", "metadata": md})
    (out / "catalog.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    # The look: the first product of each LOOK kind, worn on the street (a held-out rendering seed).
    wears = {kind: next(pid for pid, g in garments.items() if g.kind == kind) for kind in LOOK}
    img, _labels = sd.street_look(np.random.default_rng(seed + 1000), [garments[p] for p in wears.values()])
    look = out / "street-look.jpg"
    img.save(look, quality=90)
    (out / "street-look.json").write_text(json.dumps({"wears": wears}, indent=2) + "\n")
    return DemoSet(out, look, wears)
