"""LookRequest round trips at several client counts (``python -m bench query``)."""

from __future__ import annotations

import threading
import time

import numpy as np

from bench import harness as h
from bench import report as rep
from bench.ingest_runs import log, run_ingest


class QueryRuns:
    """Methods of ``Bench`` (bench/__main__.py): ``self`` is the running benchmark session."""

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
