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

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import harness as h  # noqa: E402
from bench import report as rep  # noqa: E402
from contracts.models import DeadLetter, IndexedEvent  # noqa: E402
from workers.local.ingest import ingest  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- ingest runs
def run_ingest(ns: h.Namespace, entries, tenant: str, timeout: float = 3600, progress: bool = True) -> dict:
    """``lookstream ingest``'s own ``ingest()``: publish ``entries``, wait for every outcome; wall time, first
    outcome, garments."""
    t0 = time.monotonic()
    last = [-1.0]

    def show(done: int) -> None:
        if progress and (done == len(entries) or time.monotonic() - last[0] > 5):
            last[0] = time.monotonic()
            log(f"    {done}/{len(entries)} outcomes after {time.monotonic() - t0:.0f} s")

    rep = ingest(ns.settings, entries, tenant, timeout=timeout, progress=show)
    outs = list(rep.outcomes.values())
    times = sorted(rep.arrival_s.values())
    indexed = [o for o in outs if isinstance(o, IndexedEvent)]
    garments = sum(len(o.labels) for o in indexed)
    wall = times[-1] if times else float("nan")
    return {
        "images": rep.published, "tenant": tenant, "publish_s": rep.publish_seconds, "wall_s": wall,
        "first_outcome_s": times[0] if times else None,
        "images_per_s": len(times) / wall if times else 0.0,
        "indexed": rep.indexed,
        "no_garments": rep.no_garments,
        "dead_letters": sum(1 for o in outs if isinstance(o, DeadLetter)),
        "missing": len(rep.missing),
        "garments": garments, "garments_per_image": garments / max(1, len(indexed)),
        "latency_ms_p50": float(np.percentile([o.latency_ms for o in indexed], 50)) if indexed else None,
    }


def warm_up(ns: h.Namespace, n: int) -> None:
    if n > 0:
        r = run_ingest(ns, h.catalog(n, seed=99, tenant="warm"), "warm", timeout=600, progress=False)
        log(f"  warm-up: {r['images']} images in {r['wall_s']:.1f} s")


# --------------------------------------------------------------------------- the session
class Bench:
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
                                  keep=self.a.keep_state, echo=log, device=self.a.device).start()

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
        return ".venv/bin/python -m bench " + " ".join(sys.argv[1:])

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
    def do_baseline(self) -> dict:
        if self.ingest_result is None or self.ingest_result["images"] != self.a.n:
            self.do_ingest(measure_models=False)
        r = self.ingest_result
        entries = self.entries
        b, bload = self._seed_run(entries)
        ratio = r["images_per_s"] / b["images_per_s"] if b["images_per_s"] else None
        head = ["", "images", "garments", "wall s", "images/s", "first item searchable s", "note"]
        rows = [
            ["lookstream (stack, 3 processes + Triton)", str(r["images"]), str(r["garments"]), r["wall_s"],
             r["images_per_s"], r["first_outcome_s"], "first IndexedEvent (Strong consistency: searchable)"],
            ["seed way (one process, in-process torch)", str(b["images"]), str(b["garments"]), b["wall_s"],
             b["images_per_s"], b["wall_s"], f"searchable after the final flush; torch threads {b['threads']}"],
            ["lookstream / seed", "-", "-", "-", f"{ratio:.2f}" if ratio else "-",
             f"{b['wall_s'] / r['first_outcome_s']:.0f}x sooner" if r["first_outcome_s"] else "-", ""],
        ]
        srows = [[k, v, f"{100 * v / b['wall_s']:.1f}%"] for k, v in b["seconds"].items()]
        print("\n== baseline: lookstream vs the seed's one-process loop (same images) ==")
        print(rep.text_table(head, rows))
        print("\n== baseline: where the seed loop spends its time ==")
        print(rep.text_table(["stage", "seconds", "share"], srows))
        body = ("Same catalog images, same weights, same garment extraction. Seed way: one process (model env python, "
                "torch in process): per image decode -> SegFormer batch 1 -> masks -> crops; ResNet50 in batches of "
                "128 crops; each batch inserted into Milvus (same embedded Milvus Lite, same schema) before going on; "
                "one flush at the end. Model loading is excluded from the seed's time (as the stack's start-up is "
                "from lookstream's).\n\n" + rep.md_table(head, rows) + "\n\nSeed loop stages:\n\n" +
                rep.md_table(["stage", "seconds", "share"], srows) +
                f"\n\nlookstream part measured with: {rep.context_line(self.ctx(self.results.get('ingest', {}).get('context', {}).get('load', {})))}")
        chart = [("images/s: lookstream", r["images_per_s"], f"{r['images_per_s']:.2f}"),
                 ("images/s: seed", b["images_per_s"], f"{b['images_per_s']:.2f}")]
        out = {"lookstream": r, "seed": b, "ratio": ratio}
        self.finish("baseline", "baseline: lookstream vs the seed's one-process loop", self.ctx(bload), out, body,
                    chart, "product images per second")
        return out

    def _seed_run(self, entries) -> tuple[dict, dict]:
        from workers.local import model_repo
        from workers.adapters.milvus_index import GarmentIndex
        from workers.adapters.garment_rows import GarmentRow, garment_id, image_id_of
        from contracts.models import ProductMetadata

        env = model_repo.default_env_path()
        tenant = "seed"
        s = self.stack.settings.model_copy(update={"milvus_collection": f"seed_{int(time.time())}"})
        index = GarmentIndex(s)
        client = index.client  # creates the collection (same schema and index as the workers')
        work = Path(tempfile.mkdtemp(prefix="seed-", dir=self.stack.state))
        lst = work / "images.json"
        lst.write_text(json.dumps([str(e.image) for e in entries]))
        ids = [image_id_of(e.image.read_bytes()) for e in entries]
        md = [ProductMetadata.model_validate(e.metadata) for e in entries]
        cmd = [str(model_repo.env_python(env)), str(ROOT / "bench" / "seed_baseline.py"),
               "--segformer", str(self.weights.src / "segformer" / "1" / "weights"),
               "--resnet", str(self.weights.src / "resnet50" / "1" / "weights"),
               "--size", str(self.a.size), "--images", str(lst), "--work", str(work),
               "--threads", str(self.a.seed_threads)]
        log(f"baseline: the seed's loop on {len(entries)} images (loading models in the model env)")
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        insert_s = 0.0
        try:
            ready = json.loads(proc.stdout.readline())
            meter = self.meter()
            t0 = time.monotonic()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            done = None
            for line in proc.stdout:
                msg = json.loads(line)
                if "batch" in msg:
                    t = time.perf_counter()
                    vec = np.load(msg["file"])
                    rows = [GarmentRow(garment_id(tenant, entries[i].product_id, ids[i], label), tenant,
                                       entries[i].product_id, ids[i], label, bbox, md[i], v).to_milvus()
                            for (i, label, bbox), v in zip(msg["rows"], vec)]
                    client.insert(index.name, rows)
                    insert_s += time.perf_counter() - t
                    proc.stdin.write("ok\n")
                    proc.stdin.flush()
                    log(f"    seed: batch {msg['batch']} inserted at {time.monotonic() - t0:.0f} s")
                elif msg.get("done"):
                    done = msg
                    break
            t = time.perf_counter()
            client.flush(index.name)
            flush_s = time.perf_counter() - t
            wall = time.monotonic() - t0
            load = meter.done()
        finally:
            if proc.poll() is None:
                proc.stdin.close()
                proc.wait(30)
        if done is None:
            raise SystemExit(f"the seed loop ended without a result (exit {proc.returncode})")
        secs = dict(done["seconds"])
        secs.pop("wait_insert", None)
        secs["milvus insert"] = insert_s
        secs["milvus flush"] = flush_s
        count = index.count(f'tenant == "{tenant}"')
        index.close()
        return ({"images": done["images"], "garments": done["garments"], "rows_in_milvus": count, "wall_s": wall,
                 "images_per_s": done["images"] / wall, "model_load_s": ready["ready"], "threads": ready["threads"],
                 "seconds": secs}, load)

    # -- 3. query
    def do_query(self) -> dict:
        from contracts.client import LookClient

        ns = self.ensure_main(("segmentation", "embedding", "query"))
        if self.ingest_result is None:
            self.entries = h.catalog(self.a.q_catalog)
            log(f"query: indexing a catalog of {len(self.entries)} images first")
            self.ingest_result = run_ingest(ns, self.entries, "bench")
        images = [e.image.read_bytes() for e in self.entries[: max(8, min(len(self.entries), 64))]]
        s = ns.settings
        levels = [int(c) for c in self.a.clients.split(",")]
        rows, raw = [], []
        meter = self.meter()
        with LookClient(s.bootstrap_servers, tenant="bench", request_topic=s.topic_look_requests,
                        reply_fetch_max_wait_ms=s.fetch_max_wait_ms) as client:
            for k in range(2):  # warm-up
                client.ask(images[k], top_k=3, timeout=120)
            for c in levels:
                n = max(self.a.q_n, 3 * c)
                res = self._query_level(client, images, c, n)
                raw.append(res)
                log(f"  {c} clients: {res['ok']}/{n} ok, {res['requests_per_s']:.2f} req/s, p50 {res['p50_ms']:.0f} ms")
        load = meter.done()
        return self.render_query({"levels": raw, "products": len(self.entries)}, self.ctx(load))

    def render_query(self, out: dict, ctx: dict) -> dict:
        raw = out["levels"]
        stage_keys = ["fetch", "decode", "segment", "crop", "embed", "search", "enrich"]
        head = ["clients", "requests", "ok", "req/s", "p50 ms", "p95 ms", "p99 ms", *[f"{k} ms" for k in stage_keys],
                "queued ms", "sent->reply ms", "delivery ms"]
        rows = []
        for r in raw:
            st = r["stages_ms"]
            work = sum(st.get(k, 0.0) for k in stage_keys)
            rows.append([str(r["clients"]), str(r["requests"]), str(r["ok"]), r["requests_per_s"], r["p50_ms"],
                         r["p95_ms"], r["p99_ms"], *[st.get(k) for k in stage_keys],
                         st.get("total", 0.0) - work, st.get("total"), r["outside_ms"]])
        print("\n== query: LookRequest round trip (publish -> reply) ==")
        print(rep.text_table(head, rows))
        body = (f"Threads sharing one `LookClient`, each asking with a catalog image (top_k 3) and waiting for the "
                f"reply; {out.get('products', '?')} products indexed. p50/p95/p99 = round trip measured by the client. Stage "
                "columns: mean of the reply's `timings_ms` (the query worker's clock; segment and embed are one "
                "Triton call per batch, shared by the requests of that batch). sent->reply = the reply's `total` "
                "(from the request's sent_at to the reply being built); queued = sent->reply minus the stages "
                "(waiting in Kafka and behind earlier batches); delivery = round trip minus sent->reply (reply "
                "produce + the client's consumer).\n\n" + rep.md_table(head, rows))
        chart = []
        for r in raw:
            for p in ("p50", "p95", "p99"):
                chart.append((f"{r['clients']} clients ({r['requests_per_s']:.2f} req/s): {p}", r[f"{p}_ms"],
                              f"{r[f'{p}_ms']:.0f} ms"))
        self.finish("query", "query: LookRequest round trip latency and throughput", ctx, out, body, chart,
                    "milliseconds, round trip")
        return out

    def _query_level(self, client, images, c: int, n: int) -> dict:
        lock = threading.Lock()
        issued = [0]
        lat, timings, errors = [], [], []
        ok = [0]

        def loop(k: int) -> None:
            while True:
                with lock:
                    if issued[0] >= n:
                        return
                    i = issued[0]
                    issued[0] += 1
                t = time.perf_counter()
                try:
                    reply = client.ask(images[(i * 7 + k) % len(images)], top_k=3, timeout=300)
                except Exception as e:  # noqa: BLE001
                    with lock:
                        errors.append(str(e))
                    continue
                dt = (time.perf_counter() - t) * 1000
                with lock:
                    lat.append(dt)
                    timings.append((dt, dict(reply.timings_ms or {})))
                    if reply.status.value in ("ok", "partial"):
                        ok[0] += 1

        threads = [threading.Thread(target=loop, args=(k,)) for k in range(c)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        keys = sorted({k for _, tm in timings for k in tm})
        stages = {k: float(np.mean([tm.get(k, 0.0) for _, tm in timings])) for k in keys}
        outside = float(np.mean([dt - tm.get("total", 0.0) for dt, tm in timings])) if timings else None
        return {"clients": c, "requests": n, "ok": ok[0], "errors": len(errors), "wall_s": wall,
                "requests_per_s": len(lat) / wall, **h.percentiles(lat), "stages_ms": stages, "outside_ms": outside,
                "error_samples": errors[:3]}

    # -- 5. footprint
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
    def do_scaling(self) -> dict:
        quick = self.a.quick
        sizes = [int(x) for x in (self.a.sizes or ("200,500" if quick else "1000,5000")).split(",")]
        vectors = [int(x) for x in (self.a.vectors or ("10000,20000" if quick else "10000,50000")).split(",")]
        wn = self.a.workers_n or (100 if quick else 200)
        meter = self.meter()
        ingest_rows = []
        one_worker: dict[int, dict] = {}
        for n in sizes:
            r = self._fresh_ingest(n, seg_workers=1)
            one_worker[n] = r
            ingest_rows.append(r)
        w1 = one_worker.get(wn) or self._fresh_ingest(wn, seg_workers=1)
        w2 = self._fresh_ingest(wn, seg_workers=2)
        search_rows = self._vector_scaling(vectors)
        load = meter.done()
        ihead = ["images", "seg workers", "wall s", "images/s", "first indexed s", "garments"]
        irows = [[str(r["images"]), str(r["seg_workers"]), r["wall_s"], r["images_per_s"], r["first_outcome_s"],
                  str(r["garments"])] for r in ingest_rows]
        whead = ["images", "segmentation workers (one group)", "wall s", "images/s", "speed-up"]
        wrows = [[str(wn), "1", w1["wall_s"], w1["images_per_s"], "1.00"],
                 [str(wn), "2", w2["wall_s"], w2["images_per_s"], f"{w2['images_per_s'] / w1['images_per_s']:.2f}"]]
        shead = ["vectors", "insert rows/s", "searches", "p50 ms", "p95 ms", "p99 ms"]
        srows = [[str(r["vectors"]), r["insert_rows_per_s"], str(r["searches"]), r["p50_ms"], r["p95_ms"], r["p99_ms"]]
                 for r in search_rows]
        print("\n== scaling: ingest time vs catalog size (1 segmentation + 1 embedding worker) ==")
        print(rep.text_table(ihead, irows))
        print("\n== scaling: 1 vs 2 segmentation workers (one consumer group, 4 partitions) ==")
        print(rep.text_table(whead, wrows))
        print("\n== scaling: search latency vs collection size (2048-d, FLAT, IP, tenant+label filter, Strong) ==")
        print(rep.text_table(shead, srows))
        body = ("Each row in a fresh namespace with fresh workers (warm-up excluded).\n\nIngest time vs catalog size:\n\n"
                + rep.md_table(ihead, irows) + "\n\n1 vs 2 segmentation workers:\n\n" + rep.md_table(whead, wrows) +
                "\n\nSearch latency: random unit vectors inserted directly as garment rows (same schema/index as "
                "GarmentIndex) into the embedded Milvus Lite, then single-vector `GarmentIndex.search` calls (the "
                "query worker's path: tenant + label filter, top 3, Strong consistency):\n\n" +
                rep.md_table(shead, srows))
        chart = [(f"ingest s: {r['images']} img", r["wall_s"], f"{r['wall_s']:.0f} s") for r in ingest_rows]
        chart += [(f"workers s: {wn} img, 1 seg", w1["wall_s"], f"{w1['wall_s']:.0f} s"),
                  (f"workers s: {wn} img, 2 seg", w2["wall_s"], f"{w2['wall_s']:.0f} s")]
        chart += [(f"search ms x10: {r['vectors']} vec p50", r["p50_ms"] * 10, f"{r['p50_ms']:.1f} ms")
                  for r in search_rows]
        out = {"ingest": ingest_rows, "workers": {"one": w1, "two": w2}, "search": search_rows}
        self.finish("scaling", "scaling: catalog size, vector count, segmentation workers", self.ctx(load), out, body,
                    chart, "seconds (search rows: ms x10)")
        return out

    def _fresh_ingest(self, n: int, seg_workers: int) -> dict:
        ns = self.stack.namespace("sc")
        log(f"scaling: {n} images with {seg_workers} segmentation worker(s)")
        ns.start_workers(["segmentation"] * seg_workers + ["embedding"])
        warm_up(ns, min(self.a.warm, 8))
        r = run_ingest(ns, h.catalog(n), "bench")
        ns.stop_all()
        return {**r, "seg_workers": seg_workers}

    def _vector_scaling(self, targets: list[int]) -> list[dict]:
        from contracts.models import Filters, ProductMetadata
        from workers.adapters.milvus_index import GarmentIndex
        from workers.adapters.garment_rows import GarmentRow

        s = self.stack.settings.model_copy(update={"milvus_collection": f"scale_{int(time.time())}"})
        index = GarmentIndex(s)
        client = index.client
        rng = np.random.default_rng(0)
        labels = ["Upper-clothes", "Pants", "Skirt", "Dress", "Hat", "Bag"]
        md = ProductMetadata(title="synthetic", brand="Contoso", category="tops", price=20.0)
        have, out = 0, []
        for target in sorted(targets):
            t0 = time.perf_counter()
            added = 0
            while have < target:
                k = min(self.a.insert_batch, target - have)
                v = rng.standard_normal((k, 2048)).astype(np.float32)
                v /= np.linalg.norm(v, axis=1, keepdims=True)
                rows = [GarmentRow(f"v{have + j:08d}", "scale", f"p{(have + j) // 3:07d}", "img", labels[(have + j) % 6],
                                   [0, 0, 10, 10], md, v[j]).to_milvus() for j in range(k)]
                client.insert(index.name, rows)
                have += k
                added += k
                if have % 5000 < k:
                    log(f"    {have}/{target} vectors inserted ({added / (time.perf_counter() - t0):.0f} rows/s)")
            client.flush(index.name)
            ins = added / (time.perf_counter() - t0) if added else None
            q = rng.standard_normal((self.a.searches + 3, 2048)).astype(np.float32)
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            for i in range(3):  # warm
                index.search("scale", labels[i], q[i: i + 1], 3, Filters())
            lat = []
            for i in range(3, len(q)):
                t = time.perf_counter()
                index.search("scale", labels[i % 6], q[i: i + 1], 3, Filters())
                lat.append((time.perf_counter() - t) * 1000)
            r = {"vectors": have, "insert_rows_per_s": ins, "searches": len(lat), **h.percentiles(lat)}
            log(f"  {have} vectors: search p50 {r['p50_ms']:.1f} ms")
            out.append(r)
        client.drop_collection(index.name)
        index.close()
        return out


# --------------------------------------------------------------------------- issue 17: before / after
# "before" = the pipeline as it was: torch in the python backend, kafka-python's 500 ms fetch wait, glibc's default
# arenas (8 per core), pandas imported by pymilvus at start; "after" = the defaults now. One invocation runs both, one after the other, on fresh stacks.
FASTPATH_VARIANTS = {
    "before": {"LOOKSTREAM_MODEL_RUNTIME": "torch", "LOOKSTREAM_FETCH_MAX_WAIT_MS": "500", "MALLOC_ARENA_MAX": "16",
               "LOOKSTREAM_DEFER_PANDAS": "0"},
    "after": {"LOOKSTREAM_MODEL_RUNTIME": "auto", "LOOKSTREAM_FETCH_MAX_WAIT_MS": "20", "MALLOC_ARENA_MAX": "2",
              "LOOKSTREAM_DEFER_PANDAS": "1"},
}


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

    def row(what, b, a, goal="", higher=True):
        ratio = (a / b if higher else b / a) if (a and b) else None
        rows.append([what, b, a, f"{ratio:.2f}x" if ratio else "-", goal])

    for m, unit in (("resnet50", "crops/s"), ("segformer", "images/s")):
        key = "crops_per_s" if m == "resnet50" else "images_per_s"
        row(f"{m} alone through Triton, {unit} (batch as the workers sent)", ingest("before")["models"][m][key],
            ingest("after")["models"][m][key], ">= 2x (embedder)" if m == "resnet50" else "")
    row("ingest end to end, images/s", ingest("before")["ingest"]["images_per_s"],
        ingest("after")["ingest"]["images_per_s"])
    row("ingest / bottleneck model alone", ingest("before")["ratio"], ingest("after")["ratio"], ">= 0.8")
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
    ctx = {**ctx_a, "command": ".venv/bin/python -m bench " + " ".join(sys.argv[1:])}
    rep.write_json("fastpath", {"context": ctx, **out})
    chart = [(f"{r[0][:48]}: after/before", float(r[3][:-1]), r[3]) for r in rows if r[3] != "-"]
    rep.bar_chart("fastpath", "fastpath: after vs before (higher is better)", ctx, chart, "x (after vs before)")
    rep.update_results("fastpath", "fastpath: CPU before / after (issue 17)", ctx, body)
    print(f"wrote bench/out/fastpath.json, bench/RESULTS.md")
    return out


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
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
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
