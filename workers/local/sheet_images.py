"""Pictures for the result sheet (workers/local/sheet.py): safe decoding of untrusted catalog images, thumbnails,
fonts, the query annotated with its garment boxes, crops and data: URIs."""

from __future__ import annotations

import base64
import io
import warnings
import logging
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

from contracts.models import GarmentMatches

log = logging.getLogger(__name__)

THUMB = 160  # thumbnail box side (px) in the PNG and the HTML
QUERY_MAX = 480  # longest side of the query image in the PNG
QUERY_MAX_HTML = 720
PNG_MAX_MATCHES = 12  # per garment in the PNG (the HTML shows all of them)
PNG_PER_LINE = 6  # thumbnails per line in the PNG
MAX_DECODE_PIXELS = 64_000_000  # larger images are not decoded for a sheet: placeholder instead
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (128, 128, 0), (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128),
)


def garment_color(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def color_hex(c: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % c


def decode_untrusted(data: bytes | None) -> Image.Image | None:
    """Decode untrusted image bytes to RGB (EXIF orientation applied), or None."""
    if not data:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_DECODE_PIXELS or w < 1 or h < 1:
                return None
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                img = img.convert("RGBA")
                bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
                return Image.alpha_composite(bg, img).convert("RGB")
            return img.convert("RGB")
    except Exception as e:  # any undecodable input becomes a placeholder, never a failed sheet
        log.debug("sheet: image does not decode: %s", e)
        return None


def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    names = ("DejaVuSans-Bold.ttf", "LiberationSans-Bold.ttf") if bold else ("DejaVuSans.ttf", "LiberationSans-Regular.ttf")
    for name in names:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size)  # Pillow's bundled FreeType font
    except Exception:  # Pillow built without FreeType
        return ImageFont.load_default()


class Fonts:
    def __init__(self) -> None:
        self.title = font(20, bold=True)
        self.head = font(15, bold=True)
        self.text = font(12)
        self.small = font(11)
        self.label = font(13, bold=True)


def thumb(img: Image.Image | None, side: int = THUMB) -> Image.Image:
    """The image letterboxed into a white side x side tile, or a placeholder tile."""
    tile = Image.new("RGB", (side, side), (255, 255, 255))
    if img is None:
        d = ImageDraw.Draw(tile)
        tile.paste((228, 228, 228), (0, 0, side, side))
        d.line((0, 0, side - 1, side - 1), fill=(190, 190, 190), width=2)
        d.line((0, side - 1, side - 1, 0), fill=(190, 190, 190), width=2)
        f = font(13, bold=True)
        msg = "no image"
        tw = d.textlength(msg, font=f)
        d.rectangle(((side - tw) / 2 - 4, side / 2 - 10, (side + tw) / 2 + 4, side / 2 + 10), fill=(228, 228, 228))
        d.text((side / 2, side / 2), msg, fill=(110, 110, 110), font=f, anchor="mm")
        return tile
    im = img.copy()
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    tile.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    return tile


def fit_text(d: ImageDraw.ImageDraw, s: str, font: ImageFont.ImageFont, width: float) -> str:
    if d.textlength(s, font=font) <= width:
        return s
    while s and d.textlength(s + "…", font=font) > width:
        s = s[:-1]
    return s + "…"


def annotated_query(query: Image.Image | None, garments: Sequence[GarmentMatches], max_side: int,
                     fonts: Fonts) -> Image.Image:
    """The query image scaled to max_side with each garment's box and label drawn on it."""
    if query is None:
        return thumb(None, max_side // 2)
    scale = min(1.0, max_side / max(query.size))
    img = query.resize((max(1, round(query.width * scale)), max(1, round(query.height * scale))),
                       Image.Resampling.LANCZOS) if scale < 1.0 else query.copy()
    d = ImageDraw.Draw(img)
    lw = max(2, round(max(img.size) / 200))
    placed: list[tuple[float, float, float, float]] = []  # label rectangles already drawn
    for i, g in enumerate(garments):
        c = garment_color(i)
        b = g.bbox
        # half-open box [x0, x1) x [y0, y1): last pixel is x1 - 1, y1 - 1
        x0, y0 = b.x0 * scale, b.y0 * scale
        x1, y1 = max(x0, b.x1 * scale - 1), max(y0, b.y1 * scale - 1)
        d.rectangle((x0, y0, x1, y1), outline=c, width=lw)
        text = f"{i + 1}. {g.label}"
        tw = d.textlength(text, font=fonts.label)
        ty = y0 - 18 if y0 >= 18 else y0  # above the box when there is room, else inside it
        tx = min(x0, max(0.0, img.width - tw - 8))
        # move a label down past any label it would cover (boxes of neighbouring garments)
        while any(tx < px1 and tx + tw + 8 > px0 and ty < py1 and ty + 18 > py0 for px0, py0, px1, py1 in placed):
            ty += 19
        placed.append((tx, ty, tx + tw + 8, ty + 18))
        d.rectangle((tx, ty, tx + tw + 8, ty + 18), fill=c)
        d.text((tx + 4, ty + 9), text, fill=(255, 255, 255), font=fonts.label, anchor="lm")
    return img


def query_crop(query: Image.Image | None, g: GarmentMatches) -> Image.Image | None:
    """The query's pixels inside the garment's box (None when the query image did not decode)."""
    if query is None:
        return None
    b = g.bbox
    box = (max(0, b.x0), max(0, b.y0), min(query.width, b.x1), min(query.height, b.y1))
    return query.crop(box) if box[2] > box[0] and box[3] > box[1] else None


def jpeg_data_uri(img: Image.Image, quality: int = 85) -> str:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


