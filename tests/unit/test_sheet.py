"""workers.local.sheet: the result sheet (HTML + PNG) and the terminal table, built from a hand-made reply."""

from __future__ import annotations

import html
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from contracts.models import BBox, GarmentMatches, LookReply, Match, ProductMetadata, RankedProduct, ReplyStatus
from workers.local.sheet import format_table, write_sheet

HOSTILE_TITLE = "<script>alert(1)</script>"
HOSTILE_BRAND = '"><img src=x onerror=alert(2)>'


def jpeg(w: int, h: int, color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_reply() -> LookReply:
    def match(pid: str, score: float, title: str, brand: str = "Acme", **kw) -> Match:
        return Match(product_id=pid, score=score, metadata_source=kw.pop("source", "redis"),
                     metadata=ProductMetadata(title=title, brand=brand, **kw))

    upper = GarmentMatches(label="Upper-clothes", bbox=BBox(x0=60, y0=40, x1=260, y1=200), mask_fraction=0.21, matches=[
        match("shirt-1", 0.93456, HOSTILE_TITLE, HOSTILE_BRAND, price=29.9, currency="EUR"),
        match("shirt-2", 0.8811, "Linen shirt, long sleeves", price=45.0, currency="USD", in_stock=False),
        match("shirt-3", 0.75, "A title that is far too long to fit under one thumbnail of the sheet",
              source="milvus"),
    ])
    pants = GarmentMatches(label="Pants", bbox=BBox(x0=80, y0=200, x1=240, y1=400), mask_fraction=0.15, matches=[
        match("pants-1", 0.9, "Slim jeans", "Denimco", price=59.0, currency="GBP"),
        match("pants-2", 0.812, "Chinos & more", "B&B", price=0.0, currency="EUR", source="milvus"),
        match("pants-3", 0.7001, "Cargo pants", ""),  # no brand, no price
    ])
    return LookReply(
        request_id="req-123", tenant="shop-a", status=ReplyStatus.partial, error="Bag: <timeout> after 80 ms",
        garments=[upper, pants], strategy="first_place_votes",
        ranking=[RankedProduct(product_id="shirt-1", score=1.0, labels=["Upper-clothes"]),
                 RankedProduct(product_id="pants-1", score=1.0, labels=["Pants"])],
        timings_ms={"decode": 3.2, "segment": 41.57, "embed": 12.0, "search": 4.4, "total": 65.1},
    )


COLORS = {"shirt-1": (200, 30, 30), "shirt-2": (30, 200, 30), "pants-1": (30, 30, 200), "pants-2": (200, 200, 30)}


def thumbnail_for(pid: str) -> bytes | None:
    if pid == "shirt-3":
        return None  # missing -> placeholder
    if pid == "pants-3":
        return b"not an image at all"  # undecodable -> placeholder
    return jpeg(120, 160, COLORS[pid])


@pytest.fixture()
def sheet(tmp_path: Path) -> tuple[Path, Path, LookReply]:
    reply = make_reply()
    html_path, png_path = write_sheet(reply, jpeg(320, 440, (180, 180, 220)), tmp_path / "out", thumbnail_for)
    return html_path, png_path, reply


def test_writes_png_with_sane_size(sheet) -> None:
    html_path, png_path, _ = sheet
    assert html_path == png_path.parent / "index.html" and html_path.is_file()
    assert png_path.name == "sheet.png" and png_path.is_file()
    with Image.open(png_path) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert 800 <= w <= 4000 and 600 <= h <= 6000, im.size
        im = im.convert("RGB")
        # the garment thumbnails are really pasted: the catalog colours appear on the sheet
        colors = {c for _, c in im.getcolors(maxcolors=w * h)}
        for rgb in COLORS.values():
            assert any(sum(abs(a - b) for a, b in zip(rgb, c)) < 12 for c in colors), rgb


def test_html_structure_and_self_contained(sheet) -> None:
    html_path, _, reply = sheet
    page = html_path.read_text(encoding="utf-8")
    imgs = re.findall(r"<img\b[^>]*>", page)
    match_imgs = [t for t in imgs if 'class="match"' in t]
    assert len(match_imgs) == 6
    ids = [re.search(r'data-product-id="([^"]*)"', t).group(1) for t in match_imgs]
    assert ids == [m.product_id for g in reply.garments for m in g.matches]
    assert len([t for t in imgs if 'class="query"' in t]) == 1
    for t in imgs:  # every image is embedded
        assert re.search(r'src="data:image/jpeg;base64,', t), t
    assert re.findall(r'<section class="garment" data-label="([^"]*)"', page) == ["Upper-clothes", "Pants"]
    for text in ("0.935", "0.881", "29.90 EUR", "out of stock", "source: milvus", "first_place_votes",
                 "segment", "41.6", "partial", "req-123"):
        assert text in page, text


def test_html_escapes_untrusted_text(sheet) -> None:
    html_path, _, _ = sheet
    page = html_path.read_text(encoding="utf-8")
    assert HOSTILE_TITLE not in page
    assert html.escape(HOSTILE_TITLE) in page
    assert "<img src=x" not in page and html.escape(HOSTILE_BRAND) in page
    assert "&lt;timeout&gt;" in page and "Chinos &amp; more" in page
    assert "<script" not in page.lower()  # the page runs no script at all
    assert "script-src &#x27;none&#x27;" in page  # and says so (CSP)


def test_table_contains_every_product(sheet) -> None:
    _, _, reply = sheet
    table = format_table(reply)
    for g in reply.garments:
        assert g.label in table
        for m in g.matches:
            assert m.product_id in table
            assert f"{m.score:.3f}" in table
    for col in ("garment", "rank", "product", "score", "title", "brand", "price", "source"):
        assert col in table.splitlines()[2 if reply.error else 1]
    assert "29.90 EUR" in table and "milvus" in table and "ranking (first_place_votes)" in table
    assert "Bag: <timeout>" in table  # plain text: not escaped


def test_empty_reply_and_bad_query_image(tmp_path: Path) -> None:
    reply = LookReply(request_id="r0", tenant="t", status=ReplyStatus.error, error="segmentation unavailable")
    html_path, png_path = write_sheet(reply, b"\x00garbage", tmp_path, lambda pid: None)
    page = html_path.read_text(encoding="utf-8")
    assert 'class="query"' in page and 'class="match"' not in page and "segmentation unavailable" in page
    with Image.open(png_path) as im:
        assert im.size[0] > 100 and im.size[1] > 100
    assert "(no garments)" in format_table(reply)


def test_failing_thumbnail_lookup_is_a_placeholder(tmp_path: Path) -> None:
    def boom(pid: str) -> bytes | None:
        raise RuntimeError("catalog down")

    html_path, png_path = write_sheet(make_reply(), jpeg(64, 64, (0, 0, 0)), tmp_path, boom)
    assert html_path.read_text(encoding="utf-8").count('class="match"') == 6
    assert png_path.stat().st_size > 0
