"""bench relevance's report: the console tables, its bench/RESULTS.md section and the model-variants table."""

from __future__ import annotations

import json
import re

import numpy as np

from bench import report as rep
from bench.relevance_score import KS, TOP_K


def _f(v, nd=3):
    return "-" if v is None else f"{v:.{nd}f}"


def report(b, out: dict, load: dict) -> None:
    pipe, refs = out["pipeline"], out["reference"]
    head = ["label", "garments", "det recall", "det precision", "box IoU", "mask IoU", "R@1", "R@5", "R@10", "R@20",
            "mAP@10", "chance R@10", "chance mAP@10"]

    def row(name, p, r):
        return [name, str(p["garments"]), _f(p["det_recall"]), _f(p["det_precision"]), _f(p["box_iou"]),
                _f(r["mask_iou"]), _f(p["r@1"]), _f(p["r@5"]), _f(p["r@10"]), _f(p["r@20"]), _f(p["map@10"]),
                _f(p["chance@10"]), _f(p["chance_map@10"])]

    rows = [row(lab, p, refs["labels"].get(lab, {"mask_iou": None})) for lab, p in pipe["labels"].items()]
    rows.append(row("**overall**", pipe["overall"], refs["overall"]))
    fhead = ["", *[f"R@{k}" for k in KS], "mAP@10", "det recall", "det precision"]
    frows = [["pipeline (Kafka, Triton, Milvus)", *[_f(pipe["overall"][f"r@{k}"]) for k in KS],
              _f(pipe["overall"]["map@10"]), _f(pipe["overall"]["det_recall"]), _f(pipe["overall"]["det_precision"])],
             ["in-process reference (torch, numpy search)", *[_f(refs["overall"][f"r@{k}"]) for k in KS],
              _f(refs["overall"]["map@10"]), _f(refs["overall"]["det_recall"]), _f(refs["overall"]["det_precision"])],
             ["gap, points", *[f"{100 * (pipe['overall'][f'r@{k}'] - refs['overall'][f'r@{k}']):+.1f}" for k in KS],
              f"{100 * (pipe['overall']['map@10'] - refs['overall']['map@10']):+.1f}",
              f"{100 * (pipe['overall']['det_recall'] - refs['overall']['det_recall']):+.1f}", "-"]]
    q8 = out.get("reference_int8")
    if q8:
        frows += [["in-process reference, INT8 embedder (dynamic quantisation, onnxruntime)",
                   *[_f(q8["overall"][f"r@{k}"]) for k in KS], _f(q8["overall"]["map@10"]),
                   _f(q8["overall"]["det_recall"]), _f(q8["overall"]["det_precision"])],
                  ["INT8 cost vs FP32 reference, points",
                   *[f"{100 * (q8['overall'][f'r@{k}'] - refs['overall'][f'r@{k}']):+.1f}" for k in KS],
                   f"{100 * (q8['overall']['map@10'] - refs['overall']['map@10']):+.1f}", "-", "-"]]
    shead = ["strategy", "top-3", "top-5", "top-10", "top-20"]
    srows = [[s, *[_f(v[k]) for k in (3, 5, 10, 20)]] for s, v in out["strategies"].items()]
    thead = ["hard distractor", "garments", "product or twin listed", "product ranked above its twin"]
    trows = [[kind, str(v["garments"]), str(v["listed"]), _f(v["ahead_share"])] for kind, v in out["twins"].items()]
    rhead = ["garment rules", "mean box IoU", "det recall", "det precision", "garments / look", "true / look"]
    rrows = [[r["rules"], _f(r["box_iou"]), _f(r["det_recall"]), _f(r["det_precision"]),
              _f(r["garments_per_look"], 2), _f(r["true_garments_per_look"], 2)] for r in out["rules"]]
    sem = out["semantic_iou"]
    d, m, ing = out["dataset"], out["models"], out["ingest"]
    rep.print_tables(("relevance: per garment label (pipeline; mask IoU from the in-process label maps)", head, rows),
                     ("relevance: pipeline fidelity", fhead, frows),
                     ("relevance: ranking strategies (share of a look's products in its top k)", shead, srows),
                     ("relevance: hard distractors (the embedder alone)", thead, trows),
                     ("relevance: garment rules on the same label maps", rhead, rrows))
    ctx = b.ctx(load)
    # garment colours other than the default family ones: their own section and variant row (another ground truth)
    colours = _tag(d)
    ctx["variant"] = f"segmenter {m['segmenter']} + embedder {m['embedder']} ({m['dim']}-d){colours}"
    body = (
        f"Models: segmenter `{m['segmenter']}`, embedder `{m['embedder']}` ({m['dim']}-d); {m['weights']}.\n\n"
        f"Ground truth (bench/relevance_data.py, rendered with workers/local/sample_catalog.py's painter): {d['products']} products "
        f"({d['distractors']} of them hard distractors: same shape in another shade, or same colours with another "
        f"pattern), {d['shop_images']} shop images (mannequin front/back, flat), {d['looks']} street looks from the "
        f"held-out seed {d['look_seed']} with {d['truth_garments']} visible garments (2-4 products each; backgrounds, "
        f"scale, position, rotation, light, colour cast, blur, JPEG 40-90, occlusion); garment colours "
        f"`{d['colour_mode']}`.\n\n"
        f"Pipeline: {ing['products']} ProductEvents (`images` + `garments=[label]`) -> {ing['indexed']} indexed, "
        f"{ing['garment_not_found']} garment_not_found, {ing['no_garments']} no_garments, {ing['rows']} Milvus rows, "
        f"in {ing['wall_s']:.0f} s; {d['looks']} LookRequests (top {TOP_K}) answered in {out['ask_wall_s']:.0f} s, "
        f"statuses {out['reply_status']}. A garment counts as detected when a reply garment of its label has box IoU "
        f">= 0.5; recall@k = its product among that garment's first k matches (one per product: best of its "
        f"images), over all visible truth garments (a missed garment is a miss). mAP@10 = mean 1/rank (one relevant "
        f"product). Chance = k / products of the label.\n\n"
        + rep.md_table(head, rows) +
        "\n\nSegmenter pixel IoU per garment label (label maps vs truth, all looks): "
        + ", ".join(f"{k} {v:.3f}" for k, v in sem.items())
        + (f"; mean {np.mean(list(sem.values())):.3f}" if sem else "") +
        "\n\nPipeline fidelity: the same weights in-process (modeltools/reference.py in the model env, no Triton), the "
        "same garment extraction and JPEG hop, an exact numpy cosine search, best image per product. "
        f"Same rank for {100 * out['rank_agreement']:.1f}% of truth garments."
        + (" Notes: " + "; ".join(out["reference_notes"]) if out["reference_notes"] else "") + "\n\n"
        + rep.md_table(fhead, frows) +
        "\n\nRanking strategies (workers/stages/ranking.py on the replies' per-garment matches): mean share of a look's "
        "products in the first k of the ranking:\n\n" + rep.md_table(shead, srows) +
        "\n\nHard distractors (the embedder alone): of the truth garments whose product has a twin (`colour`: same "
        "shape and pattern in another shade; `pattern`: same shape and colours, another pattern) and whose matches "
        "list the product or the twin, the share that rank the product above its twin:\n\n"
        + rep.md_table(thead, trows) +
        "\n\nGarment rules (workers/media/garments.py), each applied to the same in-process label maps of the looks; the "
        "default is the one the pipeline ran:\n\n" + rep.md_table(rhead, rrows) +
        f"\n\nTotal {out['wall_s']:.0f} s.")
    name = "relevance-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{m['segmenter']}-{m['embedder']}-{b.weights.origin}"
                                 + ("" if d["colour_mode"] == "family" else f"-colours_{d['colour_mode']}")
                                 + (f"-{d['variant']}" if d.get("variant") else ""))
    if b.a.quick:  # machinery runs (tests) never touch the committed results
        jp = rep.write_json(name + "-quick", {"context": ctx, **out})
        print(f"\n[{rep.context_line(ctx)}]\nwrote {jp} (--quick: bench/RESULTS.md left alone)\n")
        return
    chart = [(f"R@{k} pipeline", pipe["overall"][f"r@{k}"], _f(pipe["overall"][f"r@{k}"])) for k in KS]
    chart += [(f"R@{k} chance", pipe["overall"][f"chance@{k}"], _f(pipe["overall"][f"chance@{k}"])) for k in KS]
    b.finish(name, f"relevance: {ctx['variant']}", ctx, out, body, chart, "recall")
    update_variants(name, ctx, out)
    if q8:  # same crops, INT8 embedder, in-process: its own row (no pipeline run of its own, so no fidelity)
        update_variants(name + "-int8", ctx, {**out, "pipeline": q8}, suffix=" INT8 (in-process, same crops)")


VARIANT_HEAD = ["models (segmenter + embedder)", "weights", "products / looks", "det recall", "det precision",
                "box IoU", "mask IoU", "seg pixel IoU", "R@1", "R@10", "R@20", "mAP@10", "chance R@10",
                "fidelity R@10 (pts)", "date"]


def _tag(d: dict) -> str:
    """What tells this run's models and ground truth from the default ones, for titles and variant labels."""
    return (("" if d["colour_mode"] == "family" else f", colours {d['colour_mode']}")
            + (f", {d['variant']}" if d.get("variant") else ""))


def update_variants(name: str, ctx: dict, out: dict, suffix: str = "") -> None:
    """The model-variants table in bench/RESULTS.md: one row per variant, kept across runs (rows live in the file)."""
    text = rep.RESULTS.read_text() if rep.RESULTS.exists() else rep.RESULTS_HEAD
    start, end = "<!-- bench:relevance-variants -->", "<!-- /bench:relevance-variants -->"
    rows = dict(re.findall(r"<!-- variant (\S+) (\[.*?\]) -->", text))
    p, r, m, d = out["pipeline"]["overall"], out["reference"]["overall"], out["models"], out["dataset"]
    sem = list(out["semantic_iou"].values())
    colours = _tag(d)
    rows[name] = json.dumps([f"{m['segmenter']} + {m['embedder']} ({m['dim']}-d){colours}{suffix}", ctx["weights"],
                             f"{d['products']} / {d['looks']}", _f(p["det_recall"]), _f(p["det_precision"]),
                             _f(p["box_iou"]), _f(r["mask_iou"]), _f(float(np.mean(sem)) if sem else None),
                             _f(p["r@1"]), _f(p["r@10"]), _f(p["r@20"]), _f(p["map@10"]), _f(p["chance@10"]),
                             "-" if suffix else f"{100 * (p['r@10'] - r['r@10']):+.1f}", ctx["machine"]["date"]])
    table = rep.md_table(VARIANT_HEAD, [json.loads(v) for v in rows.values()])
    section = (f"{start}\n## relevance: model variants\n\nOne row per model variant, each from its own "
               f"`python -m bench relevance` run (its own section has the command, machine and load).\n\n"
               f"{table}\n\n" + "\n".join(f"<!-- variant {k} {v} -->" for k, v in rows.items()) + f"\n{end}")
    pat = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pat.sub(lambda _m: section, text) if pat.search(text) else text.rstrip() + "\n\n" + section + "\n"
    rep.RESULTS.write_text(text)
