"""Benchmarks of the lookstream pipeline on an embedded stack this command starts itself (broker, redis, Milvus Lite,
tritonserver and worker processes in a temporary state folder on free loopback ports).

    .venv/bin/python -m bench ingest   [--n 200]            end-to-end images/s vs the bottleneck model, stage shares
    .venv/bin/python -m bench baseline [--n 200]            lookstream vs the seed's one-process loop, same images
    .venv/bin/python -m bench query    [--clients 1,8,32]   LookRequest round trip p50/p95/p99, requests/s, stages
    .venv/bin/python -m bench scaling  [--quick]            ingest time vs catalog size, search vs vectors, 1 vs 2 workers
    .venv/bin/python -m bench footprint                     RSS/PSS of workers and Triton stubs, libtorch check
    .venv/bin/python -m bench all      [--quick]            all of the above on one stack
    .venv/bin/python -m bench fastpath [--n 100]            issue 17 before/after: torch + 500 ms fetch waits vs the
                                                            CPU fast path (ONNX runtimes, 20 ms fetch waits, arenas)
    .venv/bin/python -m bench relevance [--quick]           shop-the-look recall on a rendered ground truth (bench/relevance.py)

Weights: declared random tiny SegFormer + random ResNet50 by default (cached in bench/out/weights/); ``--full`` uses a
random SegFormer-b2; ``--use-repo-weights`` serves the weights in triton_models/ (pulled ones if ``lookstream models
pull`` ran). Each run prints tables, writes bench/out/<name>.json and .png, and replaces its section of
bench/RESULTS.md. Nothing here asserts on timings.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import harness as h  # noqa: E402
from bench import report as rep  # noqa: E402
from bench.args import build_parser  # noqa: E402
from bench.fastpath import FASTPATH_VARIANTS, render_fastpath  # noqa: E402
from bench.ingest_runs import log, run_ingest, warm_up  # noqa: E402
from bench.runs_baseline import BaselineRuns  # noqa: E402
from bench.runs_query import QueryRuns  # noqa: E402
from bench.runs_scaling import ScalingRuns  # noqa: E402


# --------------------------------------------------------------------------- the session
class Bench(BaselineRuns, QueryRuns, ScalingRuns):
    def __init__(self, args):
        self.a = args
        self.machine = h.machine()
        if getattr(args, "models", None):  # relevance: a model source repository of the caller's choice
            self.weights = h.repo_weights(Path(args.models))
        else:
            self.weights = h.prepare_weights(args.full, args.use_repo_weights, args.fresh_weights, echo=log)
        self.stack: h.BenchStack | None = None
        self.main_ns: h.Namespace | None = None
        self.ingest_result: dict | None = None
        self.entries = None
        self.results: dict[str, dict] = {}
        self.record = True  # False: results stay in self.results (fastpath writes its own section)

    # -- plumbing
    def start(self) -> None:
        log(f"starting the embedded stack ({self.weights.detail})")
        self.stack = h.BenchStack(self.weights, segformer_size=self.a.size, batch_size=self.a.batch_size,
                                  keep=self.a.keep_state, echo=log, device=self.a.device,
                                  embedder=getattr(self.a, "embedder", None)).start()

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()

    def ctx(self, load: dict) -> dict:
        w = self.weights
        from workers.runtime.settings import Settings

        st = Settings()
        variant = (f"{w.segformer}@{self.a.size} + resnet50@256, {st.model_instances} {self.a.device.upper()} instance x "
                   f"{st.model_threads} thread each, runtime {st.model_runtime}")
        from datetime import datetime, timezone

        machine = {**self.machine, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
        return {"machine": machine, "variant": variant, "weights": w.origin, "weights_detail": w.detail,
                "load": load, "command": self.command()}

    def command(self) -> str:
        return ".venv/bin/python -m bench " + shlex.join(sys.argv[1:])

    def meter(self) -> h.LoadMeter:
        return h.LoadMeter(self.stack.own_pids if self.stack else (lambda: set()))

    def ensure_main(self, kinds=("segmentation", "embedding")) -> h.Namespace:
        if self.main_ns is None:
            self.main_ns = self.stack.namespace("main")
            log("  starting workers " + ", ".join(kinds))
            self.main_ns.start_workers(list(kinds))
            warm_up(self.main_ns, self.a.warm)
        else:
            have = {getattr(p, "kind", "") for p in self.main_ns.procs}
            missing = [k for k in kinds if k not in have]
            if missing:
                log("  starting workers " + ", ".join(missing))
                self.main_ns.start_workers(missing)
        return self.main_ns

    def finish(self, name: str, title: str, ctx: dict, payload: dict, body_md: str, chart_rows, unit: str,
               goal=None, goal_label="") -> None:
        payload = {"context": ctx, **payload}
        self.results[name] = payload
        if not self.record:
            return
        jp = rep.write_json(name, payload)
        png = rep.bar_chart(name, title, ctx, chart_rows, unit, goal, goal_label)
        rep.update_results(name, title, ctx, body_md)
        print(f"\n[{rep.context_line(ctx)}]\nwrote {jp.relative_to(ROOT)}, {png.relative_to(ROOT)}, bench/RESULTS.md\n")

    # -- 1. ingest
    def do_ingest(self, measure_models: bool = True) -> dict:
        n = self.a.n
        ns = self.ensure_main()
        self.entries = h.catalog(n)
        procs = ns.workers("segmentation") + ns.workers("embedding")
        m0 = h.scrape_all(procs)
        meter = self.meter()
        log(f"ingest: {n} images through lookstream")
        r = run_ingest(ns, self.entries, "bench")
        load = meter.done()
        m1 = h.scrape_all(procs)
        self.ingest_result = r
        stages: dict[str, dict[str, float]] = {}
        batches: dict[str, float] = {}
        for p in procs:
            d = h.diff(m1[p.name], m0[p.name])
            for worker, st in h.stage_seconds(d).items():
                agg = stages.setdefault(worker, {})
                for k, v in st.items():
                    agg[k] = agg.get(k, 0.0) + v
            batches[p.kind] = h.batch_avg(d, p.kind)
        out = {"ingest": r, "stages_s": stages, "avg_batch_events": batches}
        if not measure_models:
            return out
        # The models alone, through Triton, at the batch sizes the workers sent in this run.
        from workers.media.garments import letterbox
        from workers.adapters.triton_client import TritonModels
        from PIL import Image

        gpi = max(r["garments_per_image"], 1e-9)
        seg_b = max(1, round(batches.get("segmentation") or self.stack.settings.batch_size))
        emb_b = max(1, round((batches.get("embedding") or self.stack.settings.batch_size) * gpi))
        tm = TritonModels(self.stack.settings.triton_url, timeout_s=600)
        imgs = [letterbox(Image.open(e.image).convert("RGB"), tm.segformer_size)[0] for e in self.entries[:seg_b]]
        while len(imgs) < seg_b:
            imgs += imgs[: seg_b - len(imgs)]
        crops = np.random.default_rng(0).integers(0, 256, (emb_b, 256, 256, 3), dtype=np.uint8)
        meter = self.meter()
        seg = self._model_rate(lambda: tm.segment(imgs), seg_b, "segformer")
        emb = self._model_rate(lambda: tm.embed(crops), emb_b, "resnet50")
        mload = meter.done()
        tm.close()
        models = {
            "segformer": {"batch": seg_b, **seg, "images_per_s": seg["items_per_s"]},
            "resnet50": {"batch": emb_b, **emb, "crops_per_s": emb["items_per_s"],
                         "images_per_s": emb["items_per_s"] / gpi},
        }
        bottleneck = min(models, key=lambda k: models[k]["images_per_s"])
        ratio = r["images_per_s"] / models[bottleneck]["images_per_s"]
        out.update(models=models, bottleneck=bottleneck, ratio=ratio, model_load=mload)

        # tables
        head = ["", "batch", "images/s", "items/s", "note"]
        rows = [
            ["lookstream end to end", "-", r["images_per_s"], "-",
             f"{r['images']} images, {r['garments']} garments ({gpi:.2f}/image), first indexed at "
             f"{r['first_outcome_s']:.1f} s, all at {r['wall_s']:.1f} s"],
            [f"{self.weights.segformer} alone (Triton)", str(seg_b), models["segformer"]["images_per_s"],
             models["segformer"]["items_per_s"], f"{seg['calls']} calls of {seg_b} images"],
            ["resnet50 alone (Triton)", str(emb_b), models["resnet50"]["images_per_s"], models["resnet50"]["crops_per_s"],
             f"{emb['calls']} calls of {emb_b} crops; images/s = crops/s / {gpi:.2f}"],
            [f"ratio end to end / {bottleneck} (bottleneck)", "-", f"{ratio:.2f}", "-", ""],
        ]
        srows = []
        for worker in ("segmentation", "embedding"):
            st = stages.get(worker, {})
            tot = sum(st.values())
            for stage, v in sorted(st.items(), key=lambda kv: -kv[1]):
                srows.append([worker, stage, v, f"{100 * v / tot:.1f}%" if tot else "-",
                              f"{1000 * v / max(1, r['images']):.1f}"])
            srows.append([worker, "(busy / wall)", tot, f"{100 * tot / r['wall_s']:.0f}% of wall", "-"])
        shead = ["worker", "stage", "seconds", "share", "ms / image"]
        print("\n== ingest: end-to-end vs the bottleneck model ==")
        print(rep.text_table(head, rows))
        print("\n== ingest: time per stage (workers' lookstream_stage_duration_seconds_sum, this run only) ==")
        print(rep.text_table(shead, srows))
        body = (f"{r['images']} product images published, then every IndexedEvent awaited. Models alone measured "
                f"right after, through Triton with `TritonModels`, at the batch sizes the workers sent in this run "
                f"(avg events per batch: segmentation {batches.get('segmentation', 0):.1f}, embedding "
                f"{batches.get('embedding', 0):.1f}).\n\n" + rep.md_table(head, rows) +
                "\n\nTime per stage from the workers' `/metrics` (`lookstream_stage_duration_seconds_sum` by stage, "
                "difference over the run; the runtime's `decode` (message) and the stage's `decode` (image) share "
                "a label):\n\n" + rep.md_table(shead, srows) +
                f"\n\nModels-alone measurement: {rep.context_line(self.ctx(mload))}")
        chart = [(f"end to end: lookstream", r["images_per_s"], f"{r['images_per_s']:.2f} img/s"),
                 (f"alone: {self.weights.segformer} b{seg_b}", models["segformer"]["images_per_s"],
                  f"{models['segformer']['images_per_s']:.2f} img/s"),
                 (f"alone: resnet50 b{emb_b}", models["resnet50"]["images_per_s"],
                  f"{models['resnet50']['images_per_s']:.2f} img/s ({models['resnet50']['crops_per_s']:.1f} crops/s)")]
        self.finish("ingest", "ingest: end-to-end product images/s vs the bottleneck model", self.ctx(load), out, body,
                    chart, "product images per second")
        return out

    def _model_rate(self, call, items: int, name: str) -> dict:
        call()  # warm
        t0 = time.perf_counter()
        lat = []
        while True:
            t = time.perf_counter()
            call()
            lat.append(time.perf_counter() - t)
            if len(lat) >= 2 and time.perf_counter() - t0 >= self.a.model_seconds:
                break
        wall = time.perf_counter() - t0
        log(f"  {name} alone: {len(lat)} calls x {items} in {wall:.1f} s")
        return {"calls": len(lat), "wall_s": wall, "items_per_s": items * len(lat) / wall,
                "ms_per_call_p50": float(np.percentile(np.array(lat) * 1000, 50))}

    # -- 2. baseline

    def do_footprint(self) -> dict:
        ns = self.ensure_main(("segmentation", "embedding", "query"))
        if self.ingest_result is None:
            self.entries = h.catalog(16)
            self.ingest_result = run_ingest(ns, self.entries, "bench")
        if "query" not in self.results:
            from contracts.client import LookClient

            s = ns.settings
            with LookClient(s.bootstrap_servers, tenant="bench", request_topic=s.topic_look_requests,
                            reply_fetch_max_wait_ms=s.fetch_max_wait_ms) as client:
                for e in self.entries[:3]:
                    client.ask(e.image.read_bytes(), top_k=3, timeout=120)
        meter = self.meter()
        rows, raw = [], []
        for p in ns.procs:
            pid = p.pid()
            if pid is None:
                continue
            m = h.proc_memory(pid)
            raw.append({"process": f"worker {p.kind}", **m})
        tpid = self.stack.triton_pid()
        if tpid:
            raw.append({"process": "tritonserver", **h.proc_memory(tpid)})
            for c in h.children(tpid):
                cl = h.cmdline(c)
                if "triton_python_backend_stub" in cl:
                    import re

                    mm = re.search(r"model_repository/([^/]+)/", cl)
                    raw.append({"process": f"triton stub {mm.group(1) if mm else '?'}", **h.proc_memory(c)})
        for name in ("broker", "redis", "milvus"):
            pid = self.stack.services[name].proc.pid()
            if pid:
                raw.append({"process": name, **h.proc_memory(pid)})
        load = meter.done()
        goal = self.a.rss_goal
        for r in raw:
            is_worker = r["process"].startswith("worker")
            verdict = ("ok" if r["rss_mb"] <= goal else "OVER") if is_worker and r["rss_mb"] is not None else ""
            rows.append([r["process"], str(r["pid"]), r["rss_mb"], r["pss_mb"],
                         "yes" if r["libtorch"] else "no", f"{verdict} (goal <= {goal} MB)" if verdict else ""])
        head = ["process", "pid", "RSS MiB", "PSS MiB", "libtorch mapped", "worker goal"]
        print("\n== footprint: resident memory after ingest + queries ==")
        print(rep.text_table(head, rows))
        body = ("Measured after the workers ingested and answered look requests (steady state). RSS = VmRSS from "
                "/proc/<pid>/status; PSS = /proc/<pid>/smaps_rollup (shared pages split); libtorch = whether "
                "/proc/<pid>/maps maps any libtorch*. Workers must stay torch-free (inference is in Triton).\n\n"
                + rep.md_table(head, rows))
        chart = [(r["process"], r["rss_mb"], f"{r['rss_mb']:.0f} MiB") for r in raw if r["rss_mb"] is not None]
        out = {"processes": raw, "goal_mb": goal}
        self.finish("footprint", "footprint: RSS per process", self.ctx(load), out, body, chart, "MiB (RSS)",
                    goal=goal, goal_label=f"worker goal {goal} MB")
        return out

    # -- 6. relevance
    def do_relevance(self) -> dict:
        from bench import relevance

        return relevance.run(self)

    # -- 4. scaling


def run_fastpath(args) -> dict:
    import os

    runs: dict[str, dict] = {}
    for variant, env in FASTPATH_VARIANTS.items():
        log(f"== fastpath: {variant} ({', '.join(f'{k}={v}' for k, v in env.items())})")
        os.environ.update(env)
        b = Bench(args)
        b.record = False
        b.start()
        try:
            b.do_ingest()
            b.do_query()
            b.do_footprint()
        finally:
            b.stop()
        runs[variant] = {"env": env, "results": b.results, "ctx": b.ctx(b.results["query"]["context"]["load"])}
    return render_fastpath(runs, args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    if args.cmd == "fastpath":
        t0 = time.monotonic()
        run_fastpath(args)
        log(f"done in {time.monotonic() - t0:.0f} s")
        return 0
    b = Bench(args)
    plan = {"ingest": ["ingest"], "baseline": ["baseline"], "query": ["query"], "scaling": ["scaling"],
            "footprint": ["footprint"], "relevance": ["relevance"],
            "all": ["ingest", "baseline", "query", "footprint", "scaling"]}[args.cmd]
    if args.cmd == "all":
        plan = [p for p in plan if p not in set(filter(None, args.skip.split(",")))]
    t0 = time.monotonic()
    b.start()
    try:
        for step in plan:
            getattr(b, f"do_{step}")()
    finally:
        b.stop()
    log(f"done in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
