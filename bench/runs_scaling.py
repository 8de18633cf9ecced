"""Catalog size, vector count, 1 vs 2 segmentation workers (``python -m bench scaling``)."""

from __future__ import annotations

import time

import numpy as np

from bench import harness as h
from bench import report as rep
from bench.ingest_runs import log, run_ingest, warm_up


class ScalingRuns:
    """Methods of ``Bench`` (bench/__main__.py): ``self`` is the running benchmark session."""

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
        rep.print_tables(("scaling: ingest time vs catalog size (1 segmentation + 1 embedding worker)", ihead, irows),
                         ("scaling: 1 vs 2 segmentation workers (one consumer group, 4 partitions)", whead, wrows),
                         ("scaling: search latency vs collection size (served embedder's dim, FLAT, IP, tenant+label "
                          "filter, Strong)", shead, srows))
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
        dim = index.embedder.dim  # the served embedder's width, from Triton's model config
        rng = np.random.default_rng(0)
        labels = ["Upper-clothes", "Pants", "Skirt", "Dress", "Hat", "Bag"]
        md = ProductMetadata(title="synthetic", brand="Contoso", category="tops", price=20.0)
        have, out = 0, []
        for target in sorted(targets):
            t0 = time.perf_counter()
            added = 0
            while have < target:
                k = min(self.a.insert_batch, target - have)
                v = rng.standard_normal((k, dim)).astype(np.float32)
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
            q = rng.standard_normal((self.a.searches + 3, dim)).astype(np.float32)
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
