"""Milvus Lite vs a real Milvus server, side by side, through the store code the workers run.

``.venv/bin/python -m bench.store [--rows 100000]`` starts its own redis-server, Milvus Lite 2.5 and a Milvus
2.3.5 standalone server (one after the other), and measures on each:
- bulk fill: inserts of 129 rows per call on Lite, 999 on the server (+ the product states), rows/s;
- one filtered search at each consistency level (why searches run Bounded);
- look search cost: all 3 garments of a look (``search_garments``: one search per label, in parallel, Bounded)
  plus the product-state check, as ``QueryStage._search_and_reply`` runs it; and the old way (one Strong search
  per garment, in sequence);
- embedding-worker sink: ``CatalogWriter.apply`` on batches of 16 events x 3 garments, new products and updates
  (a new image: 3 rows in, 3 out), and the old path (``replace_product``: a Strong query per product);
- the delete race: 20 looks in flight for one product while it is deleted; looks that started after the delete
  returned (when the embedding worker would send its IndexedEvent) must never contain it.
Writes the table into bench/RESULTS.md (section ``store``) and bench/out/store.json.
"""

from __future__ import annotations

import argparse
import statistics
import shlex
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from bench import harness as h
from bench import report
from contracts import codec
from contracts.models import BBox, Filters, ImageRef, LookReply, LookRequest, ProductMetadata
from workers.local import stack
from workers.media.garments import GarmentCrop
from workers.stages.query import QueryStage
from workers.runtime.settings import Settings
from workers.adapters.triton_client import Embedder
from workers.adapters.catalog_writer import CatalogWriter, Change
from workers.adapters.milvus_index import GarmentIndex
from workers.adapters.garment_rows import GarmentRow, event_version, garment_id
from workers.adapters.product_state import MetadataCache, ProductState

LABELS = ("Upper-clothes", "Pants", "Left-shoe")
TENANT = "bench"


def log(msg: str) -> None:
    print(f"[bench store] {msg}", file=sys.stderr, flush=True)


def unit_rows(rng, n: int) -> np.ndarray:
    v = rng.standard_normal((n, BENCH_EMBEDDER.dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# Real embeddings cluster (a catalog holds families of similar garments, and a label's garments resemble each
# other more than other labels'); uniform random vectors do not, and on them an IVF index has no structure to
# exploit. Rows and queries of each label are drawn around its own CENTRES / 3 unit vectors with noise of cosine
# ~0.8 to their centre, and the look search reports its recall against an exact search.
CENTRES = 2000
NOISE = 0.75


def clustered_rows(rng, centres: np.ndarray, n: int) -> np.ndarray:
    v = centres[rng.integers(0, len(centres), n)] + NOISE * rng.standard_normal((n, centres.shape[1])).astype(
        np.float32) / np.sqrt(centres.shape[1])
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def version(i: int) -> str:
    from datetime import datetime, timedelta, timezone

    return event_version(datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=i), f"e{i}")


def change(pid: str, image: str, vecs: np.ndarray, v: str) -> Change:
    md = ProductMetadata(title=f"{pid} {image}", brand="b", price=10.0)
    rows = [GarmentRow(garment_id(TENANT, pid, image, label), TENANT, pid, image, label, [0, 0, 10, 10], md, vec, v)
            for label, vec in zip(LABELS, vecs)]
    return Change(TENANT, pid, "upsert", v, rows, md)


def p50(xs: list[float]) -> float:
    return float(np.percentile(xs, 50)) if xs else float("nan")


def p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95)) if xs else float("nan")


# The store alone, no Triton: the vectors' model is declared (random unit vectors of ResNet50's width).
BENCH_EMBEDDER = Embedder("storebench", "1", 2048)


class Kind:
    def __init__(self, kind: str, uri: str, redis_url: str, index: str = "FLAT", nlist: int = 128,
                 nprobe: int = 16):
        self.kind = kind
        self.s = Settings(milvus_uri=uri, redis_url=redis_url, milvus_collection=f"bench_{uuid.uuid4().hex[:8]}",
                          milvus_index=index, milvus_nlist=nlist, milvus_nprobe=nprobe,
                          milvus_timeout_s=120)  # throughput here; Lite's upserts at 100k rows took > 10 s once
        self.index, self.cache = GarmentIndex(self.s, embedder=BENCH_EMBEDDER), MetadataCache(self.s)
        self.cache.PREFIX = f"lookstream:bench{uuid.uuid4().hex[:6]}:"  # type: ignore[misc]
        self.writer = CatalogWriter(self.index, self.cache)
        self.stage = QueryStage(self.s, None, self.index, self.cache)
        self.rng = np.random.default_rng(7)
        self.centres = {label: unit_rows(self.rng, CENTRES // len(LABELS)) for label in LABELS}
        self.stored: dict[str, tuple[list[str], list[np.ndarray]]] = {label: ([], []) for label in LABELS}

    # ------------------------------------------------------------------ fill
    def fill(self, n_rows: int) -> dict:
        n_products = n_rows // len(LABELS)
        t0 = time.perf_counter()
        # Lite takes ~1000 rows/s in ~130-row calls but ~150 rows/s in 1000-row calls; the server the other way round
        per_call = (129 if self.kind == "lite" else 999) // len(LABELS)
        for start in range(0, n_products, per_call):
            pids = range(start, min(n_products, start + per_call))
            vecs = self.look_rows(len(pids))
            changes = [change(f"f{p}", "img", vecs[k * 3 : k * 3 + 3], version(1)) for k, p in enumerate(pids)]
            for c in changes:
                for r in c.rows:
                    self.stored[r.label][0].append(r.id)
                    self.stored[r.label][1].append(np.asarray(r.embedding, np.float32))
            # new ids: insert (an upsert also looks the ids up in every segment, which slows Lite down as it grows)
            self.index.client.insert(self.index.name, [r.to_milvus() for c in changes for r in c.rows])
            self.cache.put_states({c.key: ProductState(c.version, garment_ids=tuple(r.id for r in c.rows),
                                                       metadata=c.metadata) for c in changes})
            if start % (per_call * 80) == 0:
                log(f"{self.kind}: {start * 3} / {n_rows} rows")
        fill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.index.client.flush(self.index.name)
        deadline = time.monotonic() + INDEX_WAIT_S
        while True:  # searches should meet a built index, as in steady state; the table says if they did not
            info = self.index.client.describe_index(self.index.name, "embedding")
            built = info.get("pending_index_rows", 0) == 0 and info.get("indexed_rows", 0) >= info.get("total_rows", 0)
            if built or time.monotonic() > deadline:
                break
            time.sleep(1)
        flush_s = time.perf_counter() - t0
        count = self.index.count()
        # Milvus Lite searches brute force whatever index is asked for (describe_index: 0 of 0 rows indexed)
        lite_flat = self.kind == "lite" and not info.get("total_rows")
        return {"rows": count, "fill_s": fill_s, "fill_rows_per_s": n_products * 3 / fill_s, "flush_s": flush_s,
                "index": "FLAT (Lite builds no index)" if lite_flat else self.s.milvus_index, "index_built": built,
                "indexed_rows": info.get("indexed_rows"), "total_rows": info.get("total_rows")}

    # ------------------------------------------------------------------ searches
    def consistency(self, n: int = 20) -> dict:
        out = {}
        for level in ("Strong", "Bounded", "Session", "Eventually"):
            ts = []
            for _ in range(n):
                q = unit_rows(self.rng, 1)
                t0 = time.perf_counter()
                self.index.search(TENANT, "Pants", q, 3, Filters(), consistency=level)  # type: ignore[arg-type]
                ts.append((time.perf_counter() - t0) * 1000)
            out[level] = {"p50_ms": p50(ts), "p95_ms": p95(ts)}
        return out

    def _look(self, vecs: np.ndarray, top_k: int = 3) -> LookReply:
        req = LookRequest(tenant=TENANT, reply_to=f"looks.replies.{TENANT}", image=ImageRef(uri="file:///x.jpg"),
                          top_k=top_k)
        found = [GarmentCrop(label, BBox(x0=0, y0=0, x1=10, y1=10), 0.5, np.zeros((1, 1, 3), np.uint8))
                 for label in LABELS[: len(vecs)]]
        res = self.stage._search_and_reply(req, found, vecs, {})
        return codec.decode(LookReply, res.outputs[0].value)

    def look_rows(self, n: int) -> np.ndarray:
        """n products' rows, one per label in LABELS order (row 3k + j is product k's label j)."""
        per_label = [clustered_rows(self.rng, self.centres[label], n) for label in LABELS]
        return np.stack(per_label, axis=1).reshape(n * len(LABELS), -1)

    def exact_top(self, label: str, q: np.ndarray, k: int) -> set[str]:
        ids, vecs = self.stored[label]
        if isinstance(vecs, list):  # stacked once, on the first query
            vecs = np.stack(vecs)
            self.stored[label] = (ids, vecs)
        return {ids[i] for i in np.argsort(-(vecs @ q))[:k]}

    def look_cost(self, n: int = 60, n_old: int = 10, k: int = 6) -> dict:
        new, bare, old = [], [], []
        found = wanted = 0
        for _ in range(n):
            q = self.look_rows(1)
            t0 = time.perf_counter()
            self._look(q)
            new.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            hits = self.index.search_garments(TENANT, list(zip(LABELS, q)), k, Filters())
            bare.append((time.perf_counter() - t0) * 1000)
            for label, vec, got in zip(LABELS, q, hits):
                exact = self.exact_top(label, vec, k)
                found += 0 if isinstance(got, Exception) else len(exact & {h.id for h in got})
                wanted += len(exact)
        for _ in range(n_old):  # the old query worker: one Strong search per garment, one after another
            q = unit_rows(self.rng, 3)
            t0 = time.perf_counter()
            for label, vec in zip(LABELS, q):
                self.index.search(TENANT, label, vec[None, :], 3, Filters(), consistency="Strong")
            old.append((time.perf_counter() - t0) * 1000)
        return {"look_p50_ms": p50(new), "look_p95_ms": p95(new), "search_only_p50_ms": p50(bare),
                "recall_vs_exact": found / max(1, wanted), "recall_k": k,
                "old_look_p50_ms": p50(old),
                "old_look_p95_ms": p95(old)}

    # ------------------------------------------------------------------ sink
    def sink(self, batches: int = 12, batch: int = 16, n_old: int = 12) -> dict:
        base = 10_000_000
        t0 = time.perf_counter()
        for b in range(batches):
            vecs = unit_rows(self.rng, batch * 3)
            self.writer.apply([change(f"s{base + b * batch + k}", "imgA", vecs[k * 3 : k * 3 + 3], version(2))
                               for k in range(batch)])
        new_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        removed = 0
        for b in range(batches):
            vecs = unit_rows(self.rng, batch * 3)
            done = self.writer.apply([change(f"s{base + b * batch + k}", "imgB", vecs[k * 3 : k * 3 + 3], version(3))
                                      for k in range(batch)])
            removed += sum(d.removed for d in done)
        upd_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for k in range(n_old):
            c = change(f"o{k}", "img", unit_rows(self.rng, 3), version(2))
            self.index.replace_product(TENANT, c.product_id, c.rows)
        old_s = time.perf_counter() - t0
        rows = batches * batch * 3
        return {"new_rows_per_s": rows / new_s, "update_rows_per_s": rows / upd_s, "removed": removed,
                "old_rows_per_s": n_old * 3 / old_s, "batch_events": batch}

    # ------------------------------------------------------------------ the delete race
    def delete_race(self, rounds: int = 5, in_flight: int = 20) -> dict:
        after_ack, leaked, raw_after, raw_leaked, total = 0, 0, 0, 0, 0
        for r in range(rounds):
            pid = f"race{r}"
            vecs = unit_rows(self.rng, 3)
            self.writer.apply([change(pid, "img", vecs, version(10))])
            deadline = time.monotonic() + 20
            while pid not in {m.product_id for g in self._look(vecs).garments for m in g.matches}:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{pid} never became searchable")
                time.sleep(0.05)
            ack = {"t": None}
            stop = threading.Event()
            records: list[tuple[float, bool, str]] = []
            lock = threading.Lock()

            def looker(k: int) -> None:
                while not stop.is_set():
                    t0 = time.monotonic()
                    if k % 4 == 3:  # a quarter search without the state check, to show what Milvus alone returns
                        hits = self.index.search(TENANT, LABELS[0], vecs[:1], 3, Filters())[0]
                        found = any(h.product_id == pid for h in hits)
                        kind = "raw"
                    else:
                        reply = self._look(vecs)
                        found = any(m.product_id == pid for g in reply.garments for m in g.matches)
                        kind = "look"
                    with lock:
                        records.append((t0, found, kind))

            threads = [threading.Thread(target=looker, args=(k,), daemon=True) for k in range(in_flight)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            self.writer.apply([Change(TENANT, pid, "delete", version(11))])
            ack["t"] = time.monotonic()  # the embedding worker sends its IndexedEvent now
            time.sleep(1.0)
            stop.set()
            for t in threads:
                t.join(10)
            total += len(records)
            for t0, found, kind in records:
                if t0 > ack["t"]:
                    if kind == "look":
                        after_ack += 1
                        leaked += found
                    else:
                        raw_after += 1
                        raw_leaked += found
        return {"rounds": rounds, "in_flight": in_flight, "looks": total, "looks_after_ack": after_ack,
                "deleted_in_looks_after_ack": leaked, "raw_searches_after_ack": raw_after,
                "deleted_in_raw_searches_after_ack": raw_leaked}

    def close(self) -> None:
        try:
            self.index.client.drop_collection(self.index.name)
        finally:
            self.index.close()


# How long the fill waits for the index to be built before searching (HNSW at 100k x 2048-d took > 300 s here).
INDEX_WAIT_S = 900
# Milvus Lite accepts FLAT and IVF_FLAT (and searches brute force either way): asked for HNSW, its half asks IVF_FLAT.
LITE_INDEXES = ("FLAT", "IVF_FLAT")


def run_kind(kind: str, state: Path, redis_url: str, rows: int, index: str, nlist: int, nprobe: int) -> dict:
    if kind == "lite" and index not in LITE_INDEXES:
        log(f"lite: {index} is not built by Milvus Lite; its half uses IVF_FLAT")
        index = "IVF_FLAT"
    svc = (stack.milvus_service(state / kind, stack.free_port()) if kind == "lite"
           else stack.milvus_server_service(state / kind, stack.free_port()))
    t0 = time.monotonic()
    svc.start()
    try:
        warm = stack.milvus_warm_up(svc.env["LOOKSTREAM_MILVUS_URI"]) if kind == "server" else 0.0
        start_s = time.monotonic() - t0
        k = Kind(kind, svc.env["LOOKSTREAM_MILVUS_URI"], redis_url, index, nlist, nprobe)
        try:
            out = {"start_s": start_s, "warm_up_s": warm, "version": k.index.client and (k.index.version or "Lite 2.5.1")}
            log(f"{kind}: up in {start_s:.1f} s; filling {rows} rows")
            out["fill"] = k.fill(rows)
            log(f"{kind}: {out['fill']}")
            out["consistency"] = k.consistency()
            out["look"] = k.look_cost()
            log(f"{kind}: look {out['look']}")
            out["sink"] = k.sink()
            log(f"{kind}: sink {out['sink']}")
            out["race"] = k.delete_race()
            log(f"{kind}: race {out['race']}")
        finally:
            k.close()
        return out
    finally:
        svc.proc.stop()


def render(res: dict, rows: int) -> tuple[str, list[str]]:
    lite, srv = res["lite"], res["server"]

    def both(f, nd=1):
        return [report.fmt(f(lite), nd), report.fmt(f(srv), nd)]

    c = lambda lvl: (lambda r: r["consistency"][lvl]["p50_ms"])  # noqa: E731
    table = [
        ["server", lite["version"], srv["version"], ""],
        ["rows in the collection (flushed), index", *[f"{r['fill']['rows']}, {r['fill']['index']}" + (
            "" if r["fill"].get("index_built", True) else
            f" (NOT built when searched: {r['fill'].get('indexed_rows')} of {r['fill'].get('total_rows')} rows)")
            for r in (lite, srv)],
         ""],
        ["bulk fill rows/s (Lite: 129-row inserts, server: 999-row)", *both(lambda r: r["fill"]["fill_rows_per_s"], 0),
         ""],
        ["flush + index build, s", *both(lambda r: r["fill"]["flush_s"], 0), ""],
        ["one filtered search p50 ms: Strong", *both(c("Strong")), ""],
        ["... Bounded (the workers' setting)", *both(c("Bounded")), ""],
        ["... Session", *both(c("Session")), ""],
        ["... Eventually", *both(c("Eventually")), ""],
        [f"**look search, 3 garments (per label in parallel, Bounded) + state check, p50 ms at {rows // 1000}k**",
         *both(lambda r: r["look"]["look_p50_ms"]), "<= 10"],
        ["... p95 ms", *both(lambda r: r["look"]["look_p95_ms"]), ""],
        ["... of it the 3 searches alone (search_garments), p50 ms", *both(lambda r: r["look"]["search_only_p50_ms"]),
         ""],
        ["... their recall@6 vs an exact search", *both(lambda r: r["look"].get("recall_vs_exact"), 3), ""],
        ["old: 3 Strong searches in sequence, p50 ms", *both(lambda r: r["look"]["old_look_p50_ms"]), ""],
        ["**embedding sink rows/s, new products (batches of 16 events x 3 rows)**",
         *both(lambda r: r["sink"]["new_rows_per_s"], 0), ">= 200"],
        ["**... updates (new image: 3 rows in, 3 out)**", *both(lambda r: r["sink"]["update_rows_per_s"], 0), ">= 200"],
        ["old: replace_product per product, rows/s", *both(lambda r: r["sink"]["old_rows_per_s"], 0), ""],
        ["delete race: looks started after the delete's ack", *both(lambda r: r["race"]["looks_after_ack"]), ""],
        ["**... of them containing the deleted product**",
         *both(lambda r: r["race"]["deleted_in_looks_after_ack"]), "0"],
        ["... raw Bounded searches (no state check) after the ack containing it",
         *[f"{r['race']['deleted_in_raw_searches_after_ack']} of {r['race']['raw_searches_after_ack']}"
           for r in (lite, srv)], ""],
    ]
    md = report.md_table(["measure", "Milvus Lite", "Milvus server", "goal"], table)
    text = report.text_table(["measure", "Milvus Lite", "Milvus server", "goal"], [[x.replace("**", "") for x in r]
                                                                                   for r in table])
    return md, [text]


def index_desc(a) -> str:
    return {"IVF_FLAT": f"IVF_FLAT (nlist {a.nlist}, nprobe {a.nprobe})", "HNSW": "HNSW (M 16, efConstruction 200, "
            "ef 128)"}.get(a.index, a.index)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--kinds", default="lite,server")
    ap.add_argument("--index", default="FLAT", choices=["FLAT", "IVF_FLAT", "HNSW"],
                    help="vector index of the collection (HNSW: M 16, efConstruction 200, ef 128: the settings' "
                         "defaults)")
    ap.add_argument("--nlist", type=int, default=Settings.model_fields["milvus_nlist"].default,
                    help="IVF_FLAT clusters (LOOKSTREAM_MILVUS_NLIST; Milvus suggests ~4 x sqrt(rows))")
    ap.add_argument("--nprobe", type=int, default=Settings.model_fields["milvus_nprobe"].default,
                    help="IVF_FLAT clusters searched per query (LOOKSTREAM_MILVUS_NPROBE)")
    a = ap.parse_args(argv)
    machine = h.machine()
    meter = h.LoadMeter()
    t_all = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        state = Path(tmp)
        redis = stack.redis_service(state, stack.free_port())
        redis.start()
        try:
            res = {kind: run_kind(kind, state, redis.env["LOOKSTREAM_REDIS_URL"], a.rows, a.index, a.nlist, a.nprobe)
                   for kind in a.kinds.split(",")}
        finally:
            redis.proc.stop()
    load = meter.done()
    res["wall_s"] = time.monotonic() - t_all
    report.write_json("store", res)
    if set(res) >= {"lite", "server"}:
        md, text = render(res, a.rows)
        print(text[0])
        cmd = ".venv/bin/python -m bench.store " + shlex.join(sys.argv[1:] if argv is None else argv)
        ctx = {"machine": machine, "variant": "no models (store only)", "weights": "n/a", "load": load,
               "command": cmd.strip()}
        body = (
            "Both Milvus kinds through the workers' own store code (`workers/adapters/milvus_index.py`, "
            "`QueryStage._search_and_reply`), one after the other, with one redis-server. Vectors are random unit "
            f"{BENCH_EMBEDDER.dim}-d drawn around {CENTRES // len(LABELS)} centres per label (cosine ~0.8 to their centre, as real embeddings "
            f"cluster), {len(LABELS)} garment labels, one tenant, {index_desc(a)} index, flushed (and the index built) "
            "before the searches; the look search's recall is against an exact search of the same rows. "
            "Sink rows/s is the embedding worker's write path alone (`CatalogWriter.apply`; Triton excluded). "
            "Delete race: 20 threads run looks for one product while it is deleted, 5 rounds; a quarter of them "
            "run the bare Bounded search instead, to show what Milvus alone would have returned. "
            f"Whole run {res['wall_s']:.0f} s.\n\n" + md)
        report.bar_chart("store", "look search p50 (ms), 3 garments", ctx, [
            (f"{k} {what}", res[k]["look"][key], f"{res[k]['look'][key]:.1f} ms")
            for k in ("lite", "server") for what, key in (("new", "look_p50_ms"), ("old Strong x3", "old_look_p50_ms"))
        ], "ms", goal=10.0, goal_label="goal 10 ms")
        report.update_results("store", "store: Milvus Lite vs a Milvus 2.3.5 server", ctx, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
