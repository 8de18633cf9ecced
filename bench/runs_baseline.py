"""lookstream against the seed's one-process loop on the same images (``python -m bench baseline``)."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import report as rep
from bench.harness import ROOT
from bench.ingest_runs import log


class BaselineRuns:
    """Methods of ``Bench`` (bench/__main__.py): ``self`` is the running benchmark session."""

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
               "--embedder", s.embed_model, "--embedder-weights", str(self.weights.src / s.embed_model / "1" / "weights"),
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
