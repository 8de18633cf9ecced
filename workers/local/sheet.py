"""The visual "result sheet" of a shop-the-look reply: an HTML page, a PNG and a terminal table.

``write_sheet`` writes ``out_dir/index.html`` (self-contained: every image is a data: URI) and
``out_dir/sheet.png`` (drawn with Pillow, no browser). Both show the query image with the garment
boxes, one row per garment with the query's own crop of it beside the matched catalog thumbnails and their
metadata, the overall
ranking, the status/error and the stage timings. ``format_table`` is the plain-text version.

Everything in a reply that came from a catalog (titles, brands, ...) is untrusted: HTML text is
escaped with ``html.escape``, the page carries a Content-Security-Policy that forbids scripts, and
catalog images are decoded and re-encoded as small JPEGs (never embedded as given), so an
"image" that is really SVG or HTML cannot reach the page. An image that does not decode, is too
large, or is missing (``thumbnail_for`` returned None or raised) becomes a placeholder tile.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from contracts.models import GarmentMatches, LookReply, Match, ProductMetadata

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

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'none'; base-uri 'none'; form-action 'none'"


# --------------------------------------------------------------------------------------------- text

def _price(md: ProductMetadata) -> str:
    if md.price is None:
        return "-"
    return f"{md.price:.2f} {md.currency}" if md.currency else f"{md.price:.2f}"


def _stock(md: ProductMetadata) -> str:
    return "in stock" if md.in_stock else "out of stock"


def _color(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def _hex(c: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % c


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: max(0, n - 1)] + "…"


def format_table(reply: LookReply) -> str:
    """A plain-text table of the reply for terminals: one line per match, then the ranking."""
    head = f"request {reply.request_id}  tenant {reply.tenant}  status {reply.status.value}  strategy {reply.strategy}"
    lines = [head]
    if reply.error:
        lines.append(f"error: {reply.error}")
    cols = ("garment", "rank", "product", "score", "title", "brand", "price", "stock", "source")
    rows: list[tuple[str, ...]] = []
    for g in reply.garments:
        if not g.matches:
            rows.append((g.label, "-", "(no matches)", "", "", "", "", "", ""))
        for rank, m in enumerate(g.matches, 1):
            md = m.metadata
            rows.append((g.label, str(rank), m.product_id, f"{m.score:.3f}", _clip(md.title, 40),
                         _clip(md.brand, 20), _price(md), "yes" if md.in_stock else "no", m.metadata_source))
    if rows:
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        fmt = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
        lines += [fmt(cols), fmt(tuple("-" * w for w in widths)), *(fmt(r) for r in rows)]
    else:
        lines.append("(no garments)")
    if reply.ranking:
        lines.append("")
        lines.append(f"ranking ({reply.strategy}):")
        for i, r in enumerate(reply.ranking, 1):
            lines.append(f"  {i:>2}. {r.product_id}  score {r.score:.3f}  labels {', '.join(r.labels)}")
    if reply.timings_ms:
        lines.append("")
        lines.append("timings: " + "  ".join(f"{k} {v:.1f} ms" for k, v in reply.timings_ms.items()))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- images

def _decode(data: bytes | None) -> Image.Image | None:
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


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
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


class _Fonts:
    def __init__(self) -> None:
        self.title = _font(20, bold=True)
        self.head = _font(15, bold=True)
        self.text = _font(12)
        self.small = _font(11)
        self.label = _font(13, bold=True)


def _thumb(img: Image.Image | None, side: int = THUMB) -> Image.Image:
    """The image letterboxed into a white side x side tile, or a placeholder tile."""
    tile = Image.new("RGB", (side, side), (255, 255, 255))
    if img is None:
        d = ImageDraw.Draw(tile)
        tile.paste((228, 228, 228), (0, 0, side, side))
        d.line((0, 0, side - 1, side - 1), fill=(190, 190, 190), width=2)
        d.line((0, side - 1, side - 1, 0), fill=(190, 190, 190), width=2)
        f = _font(13, bold=True)
        msg = "no image"
        tw = d.textlength(msg, font=f)
        d.rectangle(((side - tw) / 2 - 4, side / 2 - 10, (side + tw) / 2 + 4, side / 2 + 10), fill=(228, 228, 228))
        d.text((side / 2, side / 2), msg, fill=(110, 110, 110), font=f, anchor="mm")
        return tile
    im = img.copy()
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    tile.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    return tile


def _fit_text(d: ImageDraw.ImageDraw, s: str, font: ImageFont.ImageFont, width: float) -> str:
    if d.textlength(s, font=font) <= width:
        return s
    while s and d.textlength(s + "…", font=font) > width:
        s = s[:-1]
    return s + "…"


def _annotated_query(query: Image.Image | None, garments: Sequence[GarmentMatches], max_side: int,
                     fonts: _Fonts) -> Image.Image:
    """The query image scaled to max_side with each garment's box and label drawn on it."""
    if query is None:
        return _thumb(None, max_side // 2)
    scale = min(1.0, max_side / max(query.size))
    img = query.resize((max(1, round(query.width * scale)), max(1, round(query.height * scale))),
                       Image.Resampling.LANCZOS) if scale < 1.0 else query.copy()
    d = ImageDraw.Draw(img)
    lw = max(2, round(max(img.size) / 200))
    placed: list[tuple[float, float, float, float]] = []  # label rectangles already drawn
    for i, g in enumerate(garments):
        c = _color(i)
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


def _query_crop(query: Image.Image | None, g: GarmentMatches) -> Image.Image | None:
    """The query's pixels inside the garment's box (None when the query image did not decode)."""
    if query is None:
        return None
    b = g.bbox
    box = (max(0, b.x0), max(0, b.y0), min(query.width, b.x1), min(query.height, b.y1))
    return query.crop(box) if box[2] > box[0] and box[3] > box[1] else None


def _jpeg_data_uri(img: Image.Image, quality: int = 85) -> str:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# -------------------------------------------------------------------------------------------- sheet

def _safe_thumbnail(thumbnail_for: Callable[[str], bytes | None], product_id: str) -> Image.Image | None:
    try:
        return _decode(thumbnail_for(product_id))
    except Exception as e:  # a failing catalog lookup is a placeholder, not a failed sheet
        log.warning("sheet: thumbnail for %r failed: %s", product_id, e)
        return None


def write_sheet(reply: LookReply, query_image: bytes, out_dir: Path,
                thumbnail_for: Callable[[str], bytes | None]) -> tuple[Path, Path]:
    """Write ``out_dir/index.html`` and ``out_dir/sheet.png``; returns (html_path, png_path)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fonts = _Fonts()
    query = _decode(query_image)
    cache: dict[str, Image.Image] = {}

    def thumb_of(pid: str) -> Image.Image:
        if pid not in cache:
            cache[pid] = _thumb(_safe_thumbnail(thumbnail_for, pid))
        return cache[pid]

    html_path = out_dir / "index.html"
    html_path.write_text(_render_html(reply, query, thumb_of, fonts), encoding="utf-8")
    png_path = out_dir / "sheet.png"
    _render_png(reply, query, thumb_of, fonts).save(png_path, "PNG", optimize=True)
    return html_path, png_path


# --------------------------------------------------------------------------------------------- HTML

_STYLE = """
body{font-family:"DejaVu Sans","Liberation Sans",Arial,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:0 0 8px}
.status{display:inline-block;padding:2px 8px;border-radius:4px;color:#fff;font-weight:bold}
.status-ok{background:#2e7d32}.status-partial{background:#ef6c00}.status-error,.status-expired{background:#c62828}
.error{color:#c62828;white-space:pre-wrap}
.top{display:flex;gap:24px;align-items:flex-start;flex-wrap:wrap}
img.query{max-width:720px;border:1px solid #ccc;background:#fff}
.garment{border-left:6px solid #888;background:#fff;padding:8px 12px;margin:12px 0}
.matches{display:flex;flex-wrap:wrap;gap:12px}
.card{width:170px;font-size:12px;overflow-wrap:anywhere}
.card img{width:160px;height:160px;object-fit:contain;border:1px solid #ddd;background:#fff;display:block}
.card .pid{font-family:"DejaVu Sans Mono",monospace;font-weight:bold}
.oos{color:#c62828}.ins{color:#2e7d32}
table{border-collapse:collapse;font-size:13px;background:#fff}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
"""


def _render_html(reply: LookReply, query: Image.Image | None, thumb_of: Callable[[str], Image.Image],
                 fonts: _Fonts) -> str:
    e = html.escape
    st = reply.status.value
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">',
        f"<title>lookstream result {e(reply.request_id)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f'<h1>lookstream result <span class="rid">{e(reply.request_id)}</span></h1>',
        f'<p>tenant <b>{e(reply.tenant)}</b> &middot; status <span class="status status-{e(st)}">{e(st)}</span>'
        f" &middot; strategy <b>{e(reply.strategy)}</b> &middot; replied {e(reply.replied_at.isoformat())}</p>",
    ]
    if reply.error:
        parts.append(f'<p class="error">error: {e(reply.error)}</p>')
    qimg = _annotated_query(query, reply.garments, QUERY_MAX_HTML, fonts)
    parts.append('<div class="top"><div>')
    parts.append(f'<img class="query" alt="query image" src="{_jpeg_data_uri(qimg, 90)}"'
                 f' width="{qimg.width}" height="{qimg.height}">')
    parts.append("</div><div>")
    parts.append(f"<h2>ranking ({e(reply.strategy)})</h2>")
    if reply.ranking:
        parts.append('<table class="ranking"><tr><th>#</th><th>product</th><th>score</th><th>labels</th></tr>')
        for i, r in enumerate(reply.ranking, 1):
            parts.append(f'<tr data-product-id="{e(r.product_id)}"><td>{i}</td><td>{e(r.product_id)}</td>'
                         f"<td>{r.score:.3f}</td><td>{e(', '.join(r.labels))}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>(no ranking)</p>")
    parts.append("<h2>timings</h2>")
    if reply.timings_ms:
        parts.append('<table class="timings"><tr><th>stage</th><th>ms</th></tr>')
        parts += [f"<tr><td>{e(k)}</td><td>{v:.1f}</td></tr>" for k, v in reply.timings_ms.items()]
        parts.append("</table>")
    else:
        parts.append("<p>(none)</p>")
    parts.append("</div></div>")

    if not reply.garments:
        parts.append("<p>(no garments)</p>")
    for i, g in enumerate(reply.garments):
        b = g.bbox
        parts.append(f'<section class="garment" data-label="{e(g.label)}" style="border-left-color:{_hex(_color(i))}">')
        parts.append(f"<h2>{i + 1}. {e(g.label)} <small>box ({b.x0}, {b.y0})&ndash;({b.x1}, {b.y1}),"
                     f" mask {g.mask_fraction:.1%}</small></h2>")
        parts.append('<div class="matches">')
        parts.append(f'<div class="card asked"><img alt="query crop" src="{_jpeg_data_uri(_thumb(_query_crop(query, g)))}">'
                     f"<div><b>asked (query crop)</b></div><div>{e(g.label)}</div></div>")
        if not g.matches:
            parts.append("<p>(no matches)</p>")
        for rank, m in enumerate(g.matches, 1):
            parts.append(_html_card(rank, m, thumb_of(m.product_id)))
        parts.append("</div></section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_card(rank: int, m: Match, tile: Image.Image) -> str:
    e = html.escape
    md = m.metadata
    stock = '<span class="ins">in stock</span>' if md.in_stock else '<span class="oos">out of stock</span>'
    return (
        '<div class="card">'
        f'<img class="match" data-product-id="{e(m.product_id)}" alt="{e(m.product_id)}"'
        f' width="{THUMB}" height="{THUMB}" src="{_jpeg_data_uri(tile)}">'
        f'<div>#{rank} <span class="pid">{e(m.product_id)}</span></div>'
        f'<div>score <b>{m.score:.3f}</b></div>'
        f'<div class="title">{e(md.title) or "&ndash;"}</div>'
        f'<div class="brand">{e(md.brand) or "&ndash;"}</div>'
        f'<div class="price">{e(_price(md))}</div>'
        f"<div>{stock}</div>"
        f'<div class="source">source: {e(m.metadata_source)}</div>'
        "</div>"
    )


# ---------------------------------------------------------------------------------------------- PNG

def _render_png(reply: LookReply, query: Image.Image | None, thumb_of: Callable[[str], Image.Image],
                fonts: _Fonts) -> Image.Image:
    pad, gap = 16, 12
    card_w, text_h = THUMB, 7 * 15 + 4  # 7 text lines under each thumbnail
    card_h = THUMB + text_h
    qimg = _annotated_query(query, reply.garments, QUERY_MAX, fonts)

    # layout: header | query image + ranking/timings side by side | one block per garment
    per_line = PNG_PER_LINE
    ask_w = card_w + 2 * gap  # the query's crop of the garment, left of its matches
    rows_w = ask_w + per_line * card_w + (per_line - 1) * gap
    side_w = 360
    width = max(2 * pad + qimg.width + 2 * gap + side_w, 2 * pad + 14 + rows_w + 14)
    header_h = 64 + (22 if reply.error else 0)
    side_lines = 2 + len(reply.ranking) + 2 + len(reply.timings_ms)
    top_h = max(qimg.height, side_lines * 17 + 8)
    blocks: list[tuple[GarmentMatches, list[Match], int]] = []
    garments_h = 0
    for g in reply.garments:
        shown = g.matches[:PNG_MAX_MATCHES]
        lines = max(1, -(-len(shown) // per_line))
        extra = 16 if len(g.matches) > len(shown) else 0
        h = 28 + lines * (card_h + gap) + extra
        blocks.append((g, shown, h))
        garments_h += h + gap
    height = pad + header_h + top_h + gap * 2 + max(garments_h, 24) + pad

    sheet = Image.new("RGB", (width, height), (250, 250, 250))
    d = ImageDraw.Draw(sheet)
    y = pad
    d.text((pad, y), _fit_text(d, f"lookstream result {reply.request_id}", fonts.title, width - 2 * pad),
           fill=(20, 20, 20), font=fonts.title)
    y += 30
    st = reply.status.value
    st_col = {"ok": (46, 125, 50), "partial": (239, 108, 0)}.get(st, (198, 40, 40))
    tw = d.textlength(st, font=fonts.head)
    d.rectangle((pad, y, pad + tw + 12, y + 22), fill=st_col)
    d.text((pad + 6, y + 11), st, fill=(255, 255, 255), font=fonts.head, anchor="lm")
    info = f"tenant {reply.tenant}   strategy {reply.strategy}   replied {reply.replied_at.isoformat(timespec='seconds')}"
    d.text((pad + tw + 24, y + 11), _fit_text(d, info, fonts.text, width - pad * 2 - tw - 24), fill=(60, 60, 60),
           font=fonts.text, anchor="lm")
    y += 30
    if reply.error:
        d.text((pad, y), _fit_text(d, f"error: {reply.error}", fonts.text, width - 2 * pad), fill=(198, 40, 40),
               font=fonts.text)
        y += 22
    y = pad + header_h

    sheet.paste(qimg, (pad, y))
    d.rectangle((pad - 1, y - 1, pad + qimg.width, y + qimg.height), outline=(200, 200, 200))
    sx, sy = pad + qimg.width + 2 * gap, y
    sw = width - sx - pad
    d.text((sx, sy), _fit_text(d, f"ranking ({reply.strategy})", fonts.head, sw), fill=(20, 20, 20), font=fonts.head)
    sy += 22
    if not reply.ranking:
        d.text((sx, sy), "(no ranking)", fill=(110, 110, 110), font=fonts.text)
        sy += 17
    for i, r in enumerate(reply.ranking, 1):
        line = f"{i:>2}. {r.product_id}  {r.score:.3f}  [{', '.join(r.labels)}]"
        d.text((sx, sy), _fit_text(d, line, fonts.text, sw), fill=(40, 40, 40), font=fonts.text)
        sy += 17
    sy += 12
    d.text((sx, sy), "timings (ms)", fill=(20, 20, 20), font=fonts.head)
    sy += 22
    if not reply.timings_ms:
        d.text((sx, sy), "(none)", fill=(110, 110, 110), font=fonts.text)
    for k, v in reply.timings_ms.items():
        d.text((sx, sy), _fit_text(d, f"{k}: {v:.1f}", fonts.text, sw), fill=(40, 40, 40), font=fonts.text)
        sy += 17
    y += top_h + gap * 2

    if not blocks:
        d.text((pad, y), "(no garments)", fill=(110, 110, 110), font=fonts.head)
    for i, (g, shown, h) in enumerate(blocks):
        c = _color(i)
        d.rectangle((pad, y, width - pad, y + h), fill=(255, 255, 255), outline=(225, 225, 225))
        d.rectangle((pad, y, pad + 5, y + h), fill=c)
        b = g.bbox
        title = (f"{i + 1}. {g.label}   box ({b.x0},{b.y0})-({b.x1},{b.y1})   mask {g.mask_fraction:.1%}"
                 f"   {len(g.matches)} match{'es' if len(g.matches) != 1 else ''}")
        d.text((pad + 14, y + 6), _fit_text(d, title, fonts.head, width - 2 * pad - 20), fill=(20, 20, 20),
               font=fonts.head)
        cy = y + 28
        ax = pad + 14
        sheet.paste(_thumb(_query_crop(query, g)), (ax, cy))
        d.rectangle((ax - 2, cy - 2, ax + THUMB + 1, cy + THUMB + 1), outline=c, width=2)
        d.text((ax, cy + THUMB + 4), "asked (query crop)", fill=(20, 20, 20), font=fonts.label)
        d.text((ax, cy + THUMB + 19), _fit_text(d, g.label, fonts.small, card_w), fill=(80, 80, 80), font=fonts.small)
        if not shown:
            d.text((ax + ask_w, cy + 4), "(no matches)", fill=(110, 110, 110), font=fonts.text)
        for j, m in enumerate(shown):
            cx = ax + ask_w + (j % per_line) * (card_w + gap)
            ry = cy + (j // per_line) * (card_h + gap)
            sheet.paste(thumb_of(m.product_id), (cx, ry))
            d.rectangle((cx - 1, ry - 1, cx + THUMB, ry + THUMB), outline=(210, 210, 210))
            md = m.metadata
            lines: list[tuple[str, tuple[int, int, int]]] = [
                (f"#{j + 1} {m.product_id}", (20, 20, 20)),
                (f"score {m.score:.3f}", (20, 20, 20)),
                (md.title or "-", (40, 40, 40)),
                (md.brand or "-", (80, 80, 80)),
                (_price(md), (40, 40, 40)),
                (_stock(md), (46, 125, 50) if md.in_stock else (198, 40, 40)),
                (f"source: {m.metadata_source}", (110, 110, 110)),
            ]
            ty = ry + THUMB + 4
            for k, (text, col) in enumerate(lines):
                f = fonts.label if k == 0 else fonts.small
                d.text((cx, ty), _fit_text(d, text, f, card_w), fill=col, font=f)
                ty += 15
        if len(g.matches) > len(shown):
            d.text((pad + 14, y + h - 18), f"+{len(g.matches) - len(shown)} more (see index.html)",
                   fill=(110, 110, 110), font=fonts.text)
        y += h + gap
    return sheet
