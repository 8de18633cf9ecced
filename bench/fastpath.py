"""Issue 17: before / after the CPU fast path, one run (``python -m bench fastpath``)."""

from __future__ import annotations

import shlex
import sys

from bench import report as rep


# "before" = the pipeline as it was: torch in the python backend, kafka-python's 500 ms fetch wait, glibc's default
# arenas (8 per core), pandas imported by pymilvus at start; "after" = the defaults now. One invocation runs both, one after the other, on fresh stacks.
FASTPATH_VARIANTS = {
    "before": {"LOOKSTREAM_MODEL_RUNTIME": "torch", "LOOKSTREAM_FETCH_MAX_WAIT_MS": "500", "MALLOC_ARENA_MAX": "16",
               "LOOKSTREAM_DEFER_PANDAS": "0"},
    "after": {"LOOKSTREAM_MODEL_RUNTIME": "auto", "LOOKSTREAM_FETCH_MAX_WAIT_MS": "20", "MALLOC_ARENA_MAX": "2",
              "LOOKSTREAM_DEFER_PANDAS": "1"},
}


def render_fastpath(runs: dict, args) -> dict:
    def ingest(v):
        return runs[v]["results"]["ingest"]

    def level(v, c):
        return next((r for r in runs[v]["results"]["query"]["levels"] if r["clients"] == c), None)

    def rss(v, proc):
        return next((r["rss_mb"] for r in runs[v]["results"]["footprint"]["processes"] if r["process"] == proc), None)

    def queue_delivery(r):
        if r is None:
            return None
        st = r["stages_ms"]
        work = sum(st.get(k, 0.0) for k in ("fetch", "decode", "segment", "crop", "embed", "search", "enrich"))
        return st.get("total", 0.0) - work + (r["outside_ms"] or 0.0)

    rows = []

    def row(what, b, a, goal="", higher=True, nd=1):
        ratio = (a / b if higher else b / a) if (a and b) else None
        rows.append([what, rep.fmt(b, nd), rep.fmt(a, nd), f"{ratio:.2f}x" if ratio else "-", goal])

    for m, unit in (("resnet50", "crops/s"), ("segformer", "images/s")):
        key = "crops_per_s" if m == "resnet50" else "images_per_s"
        row(f"{m} alone through Triton, {unit} (batch as the workers sent)", ingest("before")["models"][m][key],
            ingest("after")["models"][m][key], ">= 2x (embedder)" if m == "resnet50" else "")
    row("ingest end to end, images/s", ingest("before")["ingest"]["images_per_s"],
        ingest("after")["ingest"]["images_per_s"])
    row("ingest / bottleneck model alone", ingest("before")["ratio"], ingest("after")["ratio"], ">= 0.8", nd=2)
    for c in sorted({r["clients"] for r in runs["after"]["results"]["query"]["levels"]}):
        lb, la = level("before", c), level("after", c)
        row(f"look p50 ms, {c} client(s)", lb and lb["p50_ms"], la and la["p50_ms"],
            "<= 250" if c == 1 else "", higher=False)
        row(f"look req/s, {c} client(s)", lb and lb["requests_per_s"], la and la["requests_per_s"],
            ">= 4" if c == 8 else "")
        row(f"queueing + delivery ms, {c} client(s)", queue_delivery(lb), queue_delivery(la),
            "<= 20" if c == 1 else "", higher=False)
    for proc in ("worker query", "worker segmentation", "worker embedding"):
        row(f"RSS MiB, {proc}", rss("before", proc), rss("after", proc), "<= 200" if proc == "worker query" else "",
            higher=False)
    head = ["", "before", "after", "after vs before", "goal"]
    print("\n== fastpath: before / after (one invocation, same machine, one after the other) ==")
    print(rep.text_table(head, rows))
    ctx_b, ctx_a = runs["before"]["ctx"], runs["after"]["ctx"]
    body = ("Issue 17. One invocation ran both variants one after the other on fresh embedded stacks with the same "
            "weights and catalog. before = " + ", ".join(f"`{k}={v}`" for k, v in FASTPATH_VARIANTS["before"].items())
            + " (torch in the python backend, kafka-python's default fetch wait, glibc's default arenas); after = "
            + ", ".join(f"`{k}={v}`" for k, v in FASTPATH_VARIANTS["after"].items()) + " (the defaults now: "
            "segmenter on onnxruntime f32, embedder on OpenVINO, see workers/local/model_repo.py PREFERRED_RUNTIME). "
            "The machine is shared: the load of each half is below; read ratios, not absolute figures. queueing + "
            "delivery = the reply's total minus its stages, plus the round trip minus the reply's total.\n\n"
            + rep.md_table(head, rows)
            + f"\n\nbefore: {rep.context_line(ctx_b)}\n\nafter: {rep.context_line(ctx_a)}")
    out = {"runs": {v: {"env": r["env"], "results": r["results"]} for v, r in runs.items()}, "rows": rows}
    ctx = {**ctx_a, "command": ".venv/bin/python -m bench " + shlex.join(sys.argv[1:])}
    rep.write_json("fastpath", {"context": ctx, **out})
    chart = [(f"{r[0][:48]}: after/before", float(r[3][:-1]), r[3]) for r in rows if r[3] != "-"]
    rep.bar_chart("fastpath", "fastpath: after vs before (higher is better)", ctx, chart, "x (after vs before)")
    rep.update_results("fastpath", "fastpath: CPU before / after (issue 17)", ctx, body)
    print(f"wrote bench/out/fastpath.json, bench/RESULTS.md")
    return out
