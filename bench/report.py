"""Output of ``python -m bench``: a text table on stdout, JSON under bench/out/, a PNG bar chart (Pillow) and the
latest table of each benchmark in bench/RESULTS.md (one section per benchmark, replaced on every run)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
RESULTS = ROOT / "bench" / "RESULTS.md"

RESULTS_HEAD = """# lookstream benchmark results

The latest run of each benchmark of `python -m bench` (bench/__main__.py), written by the benchmark itself.
Every figure carries the machine, the model variant, whether the weights were random or pulled, the date
and the load on the machine during the run: read CPU-only figures on a shared 2-core machine as orders of
size, not as capacity numbers. Raw numbers: `bench/out/*.json` (git-ignored); charts: `bench/out/*.png`.
"""


def fmt(v, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def text_table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)



def print_tables(*tables: tuple[str, list[str], list[list]]) -> None:
    """Each (title, headers, rows) to stdout as ``== title ==`` and its text table."""
    for title, headers, rows in tables:
        print(f"\n== {title} ==")
        print(text_table(headers, rows))


def md_table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in r) + " |")
    return "\n".join(out)


def context_line(ctx: dict) -> str:
    """machine, model variant, weights, date, load: on every figure."""
    m, load = ctx["machine"], ctx.get("load", {})
    others = ", ".join(load.get("other_processes", [])) or "none seen"
    return (f"{m['date']} | {m['cores']} cores {m['cpu']}, {m['mem_gib']} GiB, GPU {m['gpu']} | "
            f"models: {ctx['variant']} ({ctx['weights']}) | CPU busy {100 * load.get('cpu_busy', 0):.0f}% "
            f"(load avg {load.get('loadavg_start', '?')} -> {load.get('loadavg_end', '?')}; other processes: {others})"
            f" | git {m.get('git', '')}")


def write_json(name: str, payload: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    p = OUT / f"{name}.json"
    p.write_text(json.dumps(payload, indent=2, default=str))
    return p


def update_results(name: str, title: str, ctx: dict, body: str) -> None:
    """Replace (or add) the section of benchmark ``name`` in bench/RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else RESULTS_HEAD
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    section = (f"{start}\n## {title}\n\n`{ctx['command']}`\n\n_{context_line(ctx)}_\n\n{body.strip()}\n\n"
               f"Chart: `bench/out/{name}.png`, raw: `bench/out/{name}.json`.\n{end}")
    pat = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pat.search(text):
        text = pat.sub(lambda _m: section, text)
    else:
        order = ["ingest", "baseline", "query", "scaling", "footprint"]
        # keep sections in a fixed order: insert before the first later section present
        later = [f"<!-- bench:{n} -->" for n in order[order.index(name) + 1:]] if name in order else []
        pos = min((text.find(s) for s in later if s in text), default=-1)
        text = (text[:pos] + section + "\n\n" + text[pos:]) if pos >= 0 else text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def bar_chart(name: str, title: str, ctx: dict, rows: list[tuple[str, float, str]], unit: str,
              goal: float | None = None, goal_label: str = "") -> Path:
    """Horizontal bars: rows of (label, value, value text); a dashed goal line if given. Returns the PNG path."""
    OUT.mkdir(parents=True, exist_ok=True)
    f_title, f_small, f_text = _font(18), _font(11), _font(13)
    label_w = max([220] + [int(f_text.getlength(r[0])) + 20 for r in rows])
    bar_w, row_h, top = 520, 26, 78
    w = label_w + bar_w + 140
    h = top + row_h * len(rows) + 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((12, 10), title, fill="black", font=f_title)
    lines, cur = [], ""
    for part in context_line(ctx).split(" | "):
        cand = f"{cur} | {part}" if cur else part
        if cur and f_small.getlength(cand) > w - 24:
            lines.append(cur)
            cur = part
        else:
            cur = cand
    lines.append(cur)
    for k, line in enumerate(lines):
        d.text((12, 36 + 15 * k), line, fill=(90, 90, 90), font=f_small)
    top += 15 * max(0, len(lines) - 2)
    h += 15 * max(0, len(lines) - 2)
    if h != img.height:
        bigger = Image.new("RGB", (w, h), "white")
        bigger.paste(img, (0, 0))
        img, d = bigger, ImageDraw.Draw(bigger)
    vmax = max([r[1] for r in rows if r[1] is not None] + [goal or 0, 1e-9])
    palette = [(52, 101, 164), (204, 102, 0), (78, 154, 6), (117, 80, 123), (196, 160, 0), (164, 0, 0)]
    groups: dict[str, int] = {}
    for i, (label, value, vtext) in enumerate(rows):
        y = top + i * row_h
        g = label.split(":")[0]
        colour = palette[groups.setdefault(g, len(groups)) % len(palette)]
        d.text((12, y + 5), label, fill="black", font=f_text)
        if value is not None:
            length = int(bar_w * value / vmax)
            d.rectangle([label_w, y + 4, label_w + max(1, length), y + row_h - 4], fill=colour)
            d.text((label_w + length + 6, y + 5), vtext, fill="black", font=f_text)
        else:
            d.text((label_w + 6, y + 5), "n/a", fill="gray", font=f_text)
    if goal is not None:
        x = label_w + int(bar_w * goal / vmax)
        for y in range(top - 4, top + row_h * len(rows), 8):
            d.line([(x, y), (x, y + 4)], fill=(200, 0, 0), width=2)
        d.text((x + 4, top + row_h * len(rows) + 4), goal_label, fill=(200, 0, 0), font=f_small)
    d.text((12, h - 20), f"unit: {unit}", fill=(90, 90, 90), font=f_small)
    p = OUT / f"{name}.png"
    img.save(p)
    return p
