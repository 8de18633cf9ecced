"""workers.local.sheet in a real browser: headless Chromium loads index.html, all 6 match images decode.

Driven with Chromium's own command line (--dump-dom / --screenshot), no selenium or playwright.
The sheet forbids scripts (CSP script-src 'none'), so the check runs on a probe copy of the page
whose CSP allows inline scripts and which gets one inline probe script; that copy also proves that
the hostile catalog text in the reply did not turn into elements or scripts.

Without Chromium the test FAILS, naming the command that installs it (bash scripts/setup.sh does).
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from contracts.models import BBox, GarmentMatches, LookReply, Match, ProductMetadata, RankedProduct, ReplyStatus
from workers.local.sheet import write_sheet

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 90

PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = document.querySelectorAll("img.match"), ok = 0;
  imgs.forEach(function (i) { if (i.complete && i.naturalWidth > 0) ok++; });
  var q = document.querySelector("img.query");
  var b = document.body.dataset;
  b.matches = imgs.length;
  b.loaded = ok;
  b.query = (q && q.complete && q.naturalWidth > 0) ? "1" : "0";
  b.images = document.images.length;
  b.scripts = document.scripts.length;
  b.garments = document.querySelectorAll("section.garment").length;
  b.probe = "done";
});
</script>
"""


def _chromium() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"headless Chromium not found (tried {', '.join(BROWSERS)}): run bash scripts/setup.sh "
                "(it runs apt-get install chromium fonts-liberation)")


def jpeg(w: int, h: int, color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_reply() -> LookReply:
    def match(pid: str, score: float, title: str, brand: str = "Acme", **kw) -> Match:
        return Match(product_id=pid, score=score, metadata_source=kw.pop("source", "redis"),
                     metadata=ProductMetadata(title=title, brand=brand, **kw))

    return LookReply(
        request_id="req-browser", tenant="shop-a", status=ReplyStatus.ok,
        garments=[
            GarmentMatches(label="Upper-clothes", bbox=BBox(x0=60, y0=40, x1=260, y1=200), mask_fraction=0.2, matches=[
                match("shirt-1", 0.934, "<script>alert(1)</script>", '"><img src=x onerror=alert(2)>',
                      price=29.9, currency="EUR"),
                match("shirt-2", 0.881, "Linen shirt", price=45.0, currency="USD", in_stock=False),
                match("shirt-3", 0.75, "No picture", source="milvus"),
            ]),
            GarmentMatches(label="Pants", bbox=BBox(x0=80, y0=200, x1=240, y1=400), mask_fraction=0.15, matches=[
                match("pants-1", 0.9, "Slim jeans", "Denimco", price=59.0, currency="GBP"),
                match("pants-2", 0.812, "Chinos", "B&B", price=39.0, currency="EUR", source="milvus"),
                match("pants-3", 0.7, "Broken picture", ""),
            ]),
        ],
        ranking=[RankedProduct(product_id="shirt-1", score=1.0, labels=["Upper-clothes"]),
                 RankedProduct(product_id="pants-1", score=1.0, labels=["Pants"])],
        timings_ms={"segment": 41.5, "embed": 12.0, "search": 4.4, "total": 61.0},
    )


def thumbnail_for(pid: str) -> bytes | None:
    colors = {"shirt-1": (200, 30, 30), "shirt-2": (30, 200, 30), "pants-1": (30, 30, 200), "pants-2": (200, 200, 30)}
    if pid == "shirt-3":
        return None
    if pid == "pants-3":
        return b"\xff\xd8 truncated"
    return jpeg(120, 160, colors[pid])


def _run_chromium(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
           "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
           "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"chromium did not finish in {TIMEOUT_S} s: {' '.join(cmd)}\n{e.stderr}")


def test_sheet_loads_in_headless_chromium(tmp_path: Path) -> None:
    exe = _chromium()
    out = tmp_path / "sheet"
    html_path, _ = write_sheet(make_reply(), jpeg(320, 440, (180, 180, 220)), out, thumbnail_for)
    page = html_path.read_text(encoding="utf-8")
    assert "script-src &#x27;none&#x27;" in page and "</body>" in page

    probe = out / "probe.html"
    probe.write_text(page.replace("script-src &#x27;none&#x27;", "script-src &#x27;unsafe-inline&#x27;")
                     .replace("</body>", PROBE + "</body>"), encoding="utf-8")
    r = _run_chromium(exe, tmp_path / "profile-dom", "--dump-dom", probe.as_uri())
    assert r.returncode == 0, f"chromium exited {r.returncode}\n{r.stderr[-3000:]}"
    m = re.search(r"<body([^>]*)>", r.stdout)
    assert m, f"no <body> in the dumped DOM:\n{r.stdout[:2000]}\n{r.stderr[-2000:]}"
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', m.group(1)))
    assert attrs.get("probe") == "done", f"probe did not run after load: {m.group(0)}\n{r.stderr[-2000:]}"
    assert attrs["matches"] == "6", attrs
    assert attrs["loaded"] == "6", attrs  # every match image decoded (naturalWidth > 0), placeholders included
    assert attrs["query"] == "1", attrs
    assert attrs["garments"] == "2", attrs
    # the hostile title/brand stayed text: no extra <img>, only the probe <script>
    assert attrs["images"] == "9", attrs  # the query, one query crop per garment, the six matches
    assert attrs["scripts"] == "1", attrs
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.stdout

    shot = tmp_path / "sheet_screenshot.png"  # the real page, CSP and all
    r = _run_chromium(exe, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,1600",
                      html_path.as_uri())
    assert r.returncode == 0 and shot.is_file(), f"no screenshot (rc {r.returncode})\n{r.stderr[-3000:]}"
    with Image.open(shot) as im:
        assert im.size == (1280, 1600)
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or ()) > 50  # not a blank page
