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

import html
import logging
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

from contracts.models import GarmentMatches, LookReply, Match, ProductMetadata

from workers.local.sheet_images import (
    PNG_MAX_MATCHES, PNG_PER_LINE, QUERY_MAX, QUERY_MAX_HTML, THUMB, Fonts, annotated_query, color_hex, decode_untrusted,
    fit_text, garment_color, jpeg_data_uri, query_crop, thumb,
)

log = logging.getLogger(__name__)

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'none'; base-uri 'none'; form-action 'none'"


# --------------------------------------------------------------------------------------------- text

def _price(md: ProductMetadata) -> str:
    if md.price is None:
        return "-"
    return f"{md.price:.2f} {md.currency}" if md.currency else f"{md.price:.2f}"


def _stock(md: ProductMetadata) -> str:
    return "in stock" if md.in_stock else "out of stock"


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


# -------------------------------------------------------------------------------------------- sheet

def _safe_thumbnail(thumbnail_for: Callable[[str], bytes | None], product_id: str) -> Image.Image | None:
    try:
        return decode_untrusted(thumbnail_for(product_id))
    except Exception as e:  # a failing catalog lookup is a placeholder, not a failed sheet
        log.warning("sheet: thumbnail for %r failed: %s", product_id, e)
        return None


def write_sheet(reply: LookReply, query_image: bytes, out_dir: Path,
                thumbnail_for: Callable[[str], bytes | None]) -> tuple[Path, Path]:
    """Write ``out_dir/index.html`` and ``out_dir/sheet.png``; returns (html_path, png_path)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fonts = Fonts()
    query = decode_untrusted(query_image)
    cache: dict[str, Image.Image] = {}

    def thumb_of(pid: str) -> Image.Image:
        if pid not in cache:
            cache[pid] = thumb(_safe_thumbnail(thumbnail_for, pid))
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
                 fonts: Fonts) -> str:
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
    qimg = annotated_query(query, reply.garments, QUERY_MAX_HTML, fonts)
    parts.append('<div class="top"><div>')
    parts.append(f'<img class="query" alt="query image" src="{jpeg_data_uri(qimg, 90)}"'
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
        parts.append(f'<section class="garment" data-label="{e(g.label)}" style="border-left-color:{color_hex(garment_color(i))}">')
        parts.append(f"<h2>{i + 1}. {e(g.label)} <small>box ({b.x0}, {b.y0})&ndash;({b.x1}, {b.y1}),"
                     f" mask {g.mask_fraction:.1%}</small></h2>")
        parts.append('<div class="matches">')
        parts.append(f'<div class="card asked"><img alt="query crop" src="{jpeg_data_uri(thumb(query_crop(query, g)))}">'
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
        f' width="{THUMB}" height="{THUMB}" src="{jpeg_data_uri(tile)}">'
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
                fonts: Fonts) -> Image.Image:
    pad, gap = 16, 12
    card_w, text_h = THUMB, 7 * 15 + 4  # 7 text lines under each thumbnail
    card_h = THUMB + text_h
    qimg = annotated_query(query, reply.garments, QUERY_MAX, fonts)

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
    d.text((pad, y), fit_text(d, f"lookstream result {reply.request_id}", fonts.title, width - 2 * pad),
           fill=(20, 20, 20), font=fonts.title)
    y += 30
    st = reply.status.value
    st_col = {"ok": (46, 125, 50), "partial": (239, 108, 0)}.get(st, (198, 40, 40))
    tw = d.textlength(st, font=fonts.head)
    d.rectangle((pad, y, pad + tw + 12, y + 22), fill=st_col)
    d.text((pad + 6, y + 11), st, fill=(255, 255, 255), font=fonts.head, anchor="lm")
    info = f"tenant {reply.tenant}   strategy {reply.strategy}   replied {reply.replied_at.isoformat(timespec='seconds')}"
    d.text((pad + tw + 24, y + 11), fit_text(d, info, fonts.text, width - pad * 2 - tw - 24), fill=(60, 60, 60),
           font=fonts.text, anchor="lm")
    y += 30
    if reply.error:
        d.text((pad, y), fit_text(d, f"error: {reply.error}", fonts.text, width - 2 * pad), fill=(198, 40, 40),
               font=fonts.text)
        y += 22
    y = pad + header_h

    sheet.paste(qimg, (pad, y))
    d.rectangle((pad - 1, y - 1, pad + qimg.width, y + qimg.height), outline=(200, 200, 200))
    sx, sy = pad + qimg.width + 2 * gap, y
    sw = width - sx - pad
    d.text((sx, sy), fit_text(d, f"ranking ({reply.strategy})", fonts.head, sw), fill=(20, 20, 20), font=fonts.head)
    sy += 22
    if not reply.ranking:
        d.text((sx, sy), "(no ranking)", fill=(110, 110, 110), font=fonts.text)
        sy += 17
    for i, r in enumerate(reply.ranking, 1):
        line = f"{i:>2}. {r.product_id}  {r.score:.3f}  [{', '.join(r.labels)}]"
        d.text((sx, sy), fit_text(d, line, fonts.text, sw), fill=(40, 40, 40), font=fonts.text)
        sy += 17
    sy += 12
    d.text((sx, sy), "timings (ms)", fill=(20, 20, 20), font=fonts.head)
    sy += 22
    if not reply.timings_ms:
        d.text((sx, sy), "(none)", fill=(110, 110, 110), font=fonts.text)
    for k, v in reply.timings_ms.items():
        d.text((sx, sy), fit_text(d, f"{k}: {v:.1f}", fonts.text, sw), fill=(40, 40, 40), font=fonts.text)
        sy += 17
    y += top_h + gap * 2

    if not blocks:
        d.text((pad, y), "(no garments)", fill=(110, 110, 110), font=fonts.head)
    for i, (g, shown, h) in enumerate(blocks):
        c = garment_color(i)
        d.rectangle((pad, y, width - pad, y + h), fill=(255, 255, 255), outline=(225, 225, 225))
        d.rectangle((pad, y, pad + 5, y + h), fill=c)
        b = g.bbox
        title = (f"{i + 1}. {g.label}   box ({b.x0},{b.y0})-({b.x1},{b.y1})   mask {g.mask_fraction:.1%}"
                 f"   {len(g.matches)} match{'es' if len(g.matches) != 1 else ''}")
        d.text((pad + 14, y + 6), fit_text(d, title, fonts.head, width - 2 * pad - 20), fill=(20, 20, 20),
               font=fonts.head)
        cy = y + 28
        ax = pad + 14
        sheet.paste(thumb(query_crop(query, g)), (ax, cy))
        d.rectangle((ax - 2, cy - 2, ax + THUMB + 1, cy + THUMB + 1), outline=c, width=2)
        d.text((ax, cy + THUMB + 4), "asked (query crop)", fill=(20, 20, 20), font=fonts.label)
        d.text((ax, cy + THUMB + 19), fit_text(d, g.label, fonts.small, card_w), fill=(80, 80, 80), font=fonts.small)
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
                d.text((cx, ty), fit_text(d, text, f, card_w), fill=col, font=f)
                ty += 15
        if len(g.matches) > len(shown):
            d.text((pad + 14, y + h - 18), f"+{len(g.matches) - len(shown)} more (see index.html)",
                   fill=(110, 110, 110), font=fonts.text)
        y += h + gap
    return sheet
