"""Benchmark the Triton models: through Triton (gRPC, dynamic batching) at concurrency 1, 8, 32 vs the same model
in-process (the model env's python, modeltools/reference.py, 1 torch thread like a Triton CPU instance).

    .venv/bin/python bench/models.py --tiny --n 32            # tiny random SegFormer + random ResNet50
    .venv/bin/python bench/models.py --full --n 16            # b2 SegFormer: pulled weights if any, else random b2
    .venv/bin/python bench/models.py --tiny --runtimes torch,auto   # torch vs the ONNX fast path, same run

Triton at concurrency c: c client threads each sending single-image requests until n (at least c) are answered;
latency = per request. In-process at batch min(c, max_batch_size): consecutive forward passes; latency = per
batch. ratio = Triton images/s / in-process images/s. The weights for the run live in a scratch copy of
triton_models/ under bench/out/ (the committed repository's weights are only read, for --full when pulled).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workers.local import model_repo  # noqa: E402

MAX_BATCH = {"segformer": 8, "resnet50": 32}
IO = {"segformer": ("IMAGE", "LABELS"), "resnet50": ("CROPS", "EMBEDDINGS")}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_weights(out: Path, env: Path, full: bool) -> tuple[Path, str]:
    """A scratch model source with weights; returns (src, description of the SegFormer weights)."""
    src = out / ("src-full" if full else "src-tiny")
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(ROOT / "triton_models", src, ignore=shutil.ignore_patterns("weights", "weights.*", "__pycache__"))
    committed = model_repo.weights_provenance(ROOT / "triton_models")
    seg = committed.get("segformer", {})
    if full and not seg.get("missing") and not seg.get("random") and not seg.get("tiny"):
        shutil.copytree(ROOT / "triton_models" / "segformer" / "1" / "weights", src / "segformer" / "1" / "weights")
        model_repo.init_weights(src, env, random=True, tiny=False, models=("resnet50",))
        res = committed.get("resnet50", {})
        if not res.get("missing") and not res.get("random"):
            shutil.rmtree(src / "resnet50" / "1" / "weights")
            shutil.copytree(ROOT / "triton_models" / "resnet50" / "1" / "weights", src / "resnet50" / "1" / "weights")
        return src, f"pulled ({seg.get('source')})"
    model_repo.init_weights(src, env, random=True, tiny=not full)
    return src, "random tiny (colour probe)" if not full else "random b2"


def inprocess(env: Path, src: Path, model: str, size: int, batches: list[int], n: int) -> dict[int, dict]:
    cmd = [str(model_repo.env_python(env)), str(ROOT / "modeltools" / "reference.py"), "bench", model,
           "--weights", str(src / model / "1" / "weights"), "--size", str(size),
           "--batches", ",".join(map(str, batches)), "--n", str(n), "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return {row["batch"]: row for row in json.loads(proc.stdout.strip().splitlines()[-1])}


def start_server(env: Path, src: Path, out: Path, size: int, device: str = "cpu", runtime: str = "auto"):
    repo = model_repo.render_repository(src, out / "repo", env_path=env, device=device, segformer_size=size,
                                        runtime=runtime, models=["segformer", "resnet50"])
    be = model_repo.backend_dir(env, out / "backends")
    http, grpc, metrics = free_port(), free_port(), free_port()
    argv, penv = model_repo.tritonserver_command(env, repo, be, http, grpc, metrics)
    log = open(out / "tritonserver.log", "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=penv, stdout=log, stderr=subprocess.STDOUT)
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"tritonserver exited; see {out / 'tritonserver.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() - t0 > 300:
            proc.kill()
            raise SystemExit("tritonserver not ready in 300 s")
        time.sleep(0.2)
    print(f"tritonserver ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return proc, f"127.0.0.1:{grpc}", log


def triton_level(url: str, model: str, size: int, concurrency: int, n: int) -> dict:
    import tritonclient.grpc as grpcclient

    in_name, out_name = IO[model]
    shape = (1, size, size, 3) if model == "segformer" else (1, 256, 256, 3)
    rng = np.random.default_rng(concurrency)
    total = max(n, concurrency)
    lock = threading.Lock()
    issued = [0]
    lat: list[float] = []
    errors: list[str] = []

    def client_loop():
        client = grpcclient.InferenceServerClient(url)
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        inp = grpcclient.InferInput(in_name, list(shape), "UINT8")
        inp.set_data_from_numpy(x)
        outs = [grpcclient.InferRequestedOutput(out_name)]
        while True:
            with lock:
                if issued[0] >= total:
                    break
                issued[0] += 1
            t = time.perf_counter()
            try:
                client.infer(model, [inp], outputs=outs)
            except Exception as exc:  # noqa: BLE001
                errors.append(str(exc))
                continue
            with lock:
                lat.append(time.perf_counter() - t)
        client.close()

    stats0 = _stats(url, model)
    threads = [threading.Thread(target=client_loop) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    stats1 = _stats(url, model)
    ms = np.array(lat) * 1000
    return {"concurrency": concurrency, "images": len(lat), "errors": len(errors), "wall_s": wall,
            "images_per_s": len(lat) / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "avg_batch": (stats1[0] - stats0[0]) / max(1, stats1[1] - stats0[1])}


def _stats(url: str, model: str) -> tuple[int, int]:
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(url)
    s = c.get_inference_statistics(model, as_json=True)["model_stats"][0]
    c.close()
    return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))


def warmup(url: str, model: str, size: int) -> None:
    triton_level(url, model, size, 2, 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--tiny", action="store_true", default=True, help="tiny random SegFormer (default)")
    g.add_argument("--full", action="store_true", help="SegFormer-b2 (pulled weights if present, else random b2)")
    ap.add_argument("--n", type=int, default=32, help="images per level (at least the concurrency)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--models", default="segformer,resnet50")
    ap.add_argument("--size", type=int, default=512, help="SegFormer S")
    ap.add_argument("--runtimes", default="auto",
                    help="python-backend runtimes to serve one after the other (e.g. torch,auto: the same-run ratio)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="Triton instance kind")
    ap.add_argument("--no-inprocess", action="store_true", help="skip the in-process torch reference (e.g. on a GPU)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = ap.parse_args(argv)
    env = model_repo.default_env_path()
    model_repo.env_python(env)
    args.out.mkdir(parents=True, exist_ok=True)
    levels = [int(c) for c in args.concurrency.split(",")]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]

    t0 = time.monotonic()
    src, seg_weights = prepare_weights(args.out, env, args.full)
    print(f"weights ready in {time.monotonic() - t0:.1f} s (segformer: {seg_weights})", file=sys.stderr)

    ref: dict[str, dict[int, dict]] = {}
    if not args.no_inprocess:
        for m in models:
            batches = sorted({min(c, MAX_BATCH[m]) for c in levels})
            ref[m] = inprocess(env, src, m, args.size, batches, args.n)
            print(f"in-process {m} done", file=sys.stderr)

    rows = []
    for runtime in runtimes:
        proc, url, log = start_server(env, src, args.out, args.size, args.device, runtime)
        try:
            for m in models:
                warmup(url, m, args.size)
                for c in levels:
                    r = triton_level(url, m, args.size, c, args.n)
                    ip = ref.get(m, {}).get(min(c, MAX_BATCH[m]), {})
                    rows.append({"model": m, "runtime": runtime, **r, "inproc_batch": ip.get("batch"),
                                 "inproc_images_per_s": ip.get("images_per_s"), "inproc_p50_ms": ip.get("p50_ms"),
                                 "inproc_p99_ms": ip.get("p99_ms"),
                                 "ratio": r["images_per_s"] / ip["images_per_s"] if ip else None})
                    print(f"triton {runtime} {m} c={c} done", file=sys.stderr)
            served = sorted({ln.split("runtime ", 1)[1].split(":")[0] for ln in
                             (args.out / "tritonserver.log").read_text(errors="replace").splitlines()
                             if ": runtime " in ln})
            print(f"runtime {runtime}: served with {', '.join(served) or '?'}", file=sys.stderr)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()

    variant = "full" if args.full else "tiny"
    label = {"segformer": f"segformer-{'b2' if args.full else 'tiny'}@{args.size}", "resnet50": "resnet50@256"}
    print(f"\n{variant}: segformer weights {seg_weights}; 1 thread per instance, 1 {args.device.upper()} instance per "
          "model; runtime auto = workers/local/model_repo.py PREFERRED_RUNTIME when model.onnx exists")
    fmt = lambda v, f: format(v, f) if v is not None else "-"  # noqa: E731
    head = (f"{'model':<22}{'runtime':>12}{'conc':>5}{'n':>5}{'avg batch':>10}{'triton img/s':>13}{'p50 ms':>9}"
            f"{'p99 ms':>9}{'| inproc b':>11}{'img/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>7}{'vs 1st':>7}")
    print(head)
    print("-" * len(head))
    first = {(r["model"], r["concurrency"]): r["images_per_s"] for r in rows if r["runtime"] == runtimes[0]}
    for r in rows:
        r["vs_first_runtime"] = r["images_per_s"] / first[(r["model"], r["concurrency"])]
        print(f"{label[r['model']]:<22}{r['runtime']:>12}{r['concurrency']:>5}{r['images']:>5}{r['avg_batch']:>10.1f}"
              f"{r['images_per_s']:>13.2f}{r['p50_ms']:>9.0f}{r['p99_ms']:>9.0f}"
              f"{'| ' + str(r['inproc_batch'] or '-'):>11}{fmt(r['inproc_images_per_s'], '.2f'):>8}"
              f"{fmt(r['inproc_p50_ms'], '.0f'):>9}{fmt(r['inproc_p99_ms'], '.0f'):>9}{fmt(r['ratio'], '.2f'):>7}"
              f"{r['vs_first_runtime']:>7.2f}" + (f"  ({r['errors']} errors)" if r["errors"] else ""))
    (args.out / f"models-{variant}.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
