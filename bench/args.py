"""The ``python -m bench`` command line."""

from __future__ import annotations

import argparse


def build_parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("models and stack")
    w = g.add_mutually_exclusive_group()
    w.add_argument("--full", action="store_true", help="random SegFormer-b2 weights instead of the tiny one")
    w.add_argument("--use-repo-weights", action="store_true",
                   help="serve the weights in triton_models/ (pulled ones if present)")
    g.add_argument("--fresh-weights", action="store_true", help="rewrite the cached random weights")
    g.add_argument("--size", type=int, default=512, help="SegFormer input size S (default 512)")
    g.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="Triton instance kind (gpu: the python backend's torch fp16 on CUDA; bench/device.sh)")
    g.add_argument("--batch-size", type=int, default=None, help="LOOKSTREAM_BATCH_SIZE for the workers (default: settings)")
    g.add_argument("--warm", type=int, default=8, help="warm-up images before a measurement (default 8)")
    g.add_argument("--keep-state", action="store_true", help="keep the temporary state folder (logs)")
    o = common.add_argument_group("benchmark sizes")
    o.add_argument("--n", type=int, default=200, help="ingest/baseline: catalog images (default 200)")
    o.add_argument("--model-seconds", type=float, default=8.0, help="ingest: seconds per model-alone measurement")
    o.add_argument("--seed-threads", type=int, default=0, help="baseline: torch threads of the seed loop (0 = torch default)")
    o.add_argument("--clients", default="1,8,32", help="query: concurrent clients (default 1,8,32)")
    o.add_argument("--q-n", type=int, default=20, help="query: requests per level (at least 3 x clients)")
    o.add_argument("--q-catalog", type=int, default=60, help="query: catalog size indexed first when run alone")
    o.add_argument("--quick", action="store_true", help="scaling: small sizes for a 2-core CPU (200,500 images; "
                                                        "10k,20k vectors; 100 images for 1 vs 2 workers)")
    o.add_argument("--sizes", default=None, help="scaling: catalog sizes (default 1000,5000)")
    o.add_argument("--vectors", default=None, help="scaling: vector counts (default 10000,50000)")
    o.add_argument("--workers-n", type=int, default=None, help="scaling: images for 1 vs 2 segmentation workers")
    o.add_argument("--searches", type=int, default=50, help="scaling: searches per vector count")
    o.add_argument("--insert-batch", type=int, default=1000, help="scaling: rows per Milvus insert")
    o.add_argument("--rss-goal", type=float, default=200.0, help="footprint: worker RSS goal in MB")
    for name, text in (("ingest", "end-to-end images/s vs the bottleneck model; stage shares"),
                       ("baseline", "lookstream vs the seed's one-process loop"),
                       ("query", "LookRequest latency and throughput at several client counts"),
                       ("scaling", "catalog size, vector count, 1 vs 2 segmentation workers"),
                       ("footprint", "memory of workers and Triton stubs"),
                       ("all", "ingest, baseline, query, footprint, scaling on one stack"),
                       ("fastpath", "issue 17: before / after the CPU fast path, one run")):
        sp = sub.add_parser(name, parents=[common], help=text, description=text)
        if name == "all":
            sp.add_argument("--skip", default="", help="comma list of benchmarks to leave out")
    rel = sub.add_parser("relevance", parents=[common], help="shop-the-look recall on a rendered ground truth",
                         description="shop-the-look recall on a rendered ground truth (bench/relevance.py)")
    r = rel.add_argument_group("relevance")
    r.add_argument("--products", type=int, default=300, help="catalog products (default 300)")
    r.add_argument("--looks", type=int, default=300, help="street looks asked (default 300)")
    r.add_argument("--render-seed", type=int, default=1, help="rendering seed of the products and shop images")
    r.add_argument("--look-seed", type=int, default=1001, help="held-out rendering seed of the street looks")
    r.add_argument("--colour-mode", choices=["family", "random"], default="family",
                   help="garment colours in their label's hue family (today's colour-rule segmenter) or any hue")
    r.add_argument("--models", default=None, help="a Triton model source repository to serve (default: the "
                                                   "weights of --full/--use-repo-weights/declared random tiny)")
    r.add_argument("--segmenter", default="segformer", help="Triton model name of the segmenter (default segformer)")
    r.add_argument("--embedder", default="resnet50", help="Triton model name of the embedder (default resnet50)")
    r.add_argument("--look-clients", dest="rel_clients", type=int, default=4, help="concurrent LookClients (default 4)")
    r.add_argument("--variant", default="",
                   help="a tag for this model variant (e.g. '6000 steps'): its own RESULTS section and variants row, "
                        "not the row of another run with the same model names")
    r.add_argument("--blank-background", action="store_true",
                   help="crops with the pixels outside the garment mask greyed out (LOOKSTREAM_BLANK_BACKGROUND), shop "
                        "and look alike; adds 'masked crops' to the variant tag")
    r.add_argument("--int8-reference", action="store_true",
                   help="also score the embedder's dynamic INT8 ONNX graph in-process on the same crops (its recall cost)")
    return ap
