"""In-process reference for the Triton models (run with the model env's python: it imports torch).

The same weights, loaded the same way, run in this process without Triton: the tests compare Triton's outputs with
these, and ``bench/models.py`` compares throughput. Pre/post-processing is written here again on purpose (not
imported from triton_models/*/1/model.py), so a mistake there shows up as a mismatch.

    python modeltools/reference.py infer segformer --weights DIR --input IMAGES.npy --output LABELS.npy
    python modeltools/reference.py infer resnet50 --weights DIR --input CROPS.npy --output EMB.npy
    python modeltools/reference.py infer efficientnet_lite0 --weights DIR --input CROPS.npy --output EMB.npy
    python modeltools/reference.py infer efficientnet_lite0_int8 --weights DIR ...   # its dynamic INT8 ONNX graph
    python modeltools/reference.py bench segformer --weights DIR --size 512 --batches 1,8 --n 32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _pixels(batch: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW, ImageNet-normalised."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 255.0
    return (x - MEAN) / STD


def load(model: str, weights: Path):
    if model == "segformer":
        from transformers import SegformerForSemanticSegmentation

        net = SegformerForSemanticSegmentation.from_pretrained(str(weights)).eval()

        def run(batch: np.ndarray) -> np.ndarray:
            s = batch.shape[1]
            with torch.inference_mode():
                logits = net(pixel_values=_pixels(batch)).logits
                up = torch.nn.functional.interpolate(logits, size=(s, s), mode="bilinear", align_corners=False)
                return up.argmax(dim=1).to(torch.uint8).numpy()

        return run
    if model == "resnet50":
        import torchvision

        net = torchvision.models.resnet50(weights=None)
        net.load_state_dict(torch.load(Path(weights) / "resnet50.pth", map_location="cpu", weights_only=True))
        net.fc = torch.nn.Identity()
        net.eval()

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                emb = net(_pixels(batch))
                return torch.nn.functional.normalize(emb, dim=1).numpy().astype(np.float32)

        return run
    if model == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        net.load_state_dict(torch.load(Path(weights) / "efficientnet-lite0.pth", map_location="cpu", weights_only=True))
        net.eval()

        def run(batch: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float()
            x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
            with torch.inference_mode():
                pooled = torch.nn.functional.adaptive_avg_pool2d(net.extract_features((x - 127.0) / 128.0), 1)
                return torch.nn.functional.normalize(pooled.flatten(1), dim=1).numpy().astype(np.float32)

        return run
    if model.endswith("_int8"):  # the dynamic INT8 ONNX variant of an embedder (modeltools/onnx_export.py)
        import onnxruntime as ort

        import onnx_export

        q = Path(weights) / onnx_export.INT8_FILE
        if not q.is_file():  # weights are <repo>/<name>/1/weights
            onnx_export.export_served(Path(weights).parents[2], model.removesuffix("_int8"), int8=True)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = max(1, torch.get_num_threads())
        sess = ort.InferenceSession(str(q), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def run(batch: np.ndarray) -> np.ndarray:
            return sess.run(None, {name: np.ascontiguousarray(batch, dtype=np.uint8)})[0].astype(np.float32)

        return run
    raise SystemExit(f"unknown model {model!r}")


def infer(run, data: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([run(data[i: i + batch]) for i in range(0, len(data), batch)])


def bench(run, model: str, size: int, batches: list[int], n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if model == "segformer" else (256, 256, 3)
    pool = rng.integers(0, 256, (max(batches), *shape), dtype=np.uint8)
    run(pool[:1])  # warm-up
    rows = []
    for b in batches:
        lat = []
        done = 0
        t0 = time.perf_counter()
        while done < n:
            t = time.perf_counter()
            run(pool[:b])
            lat.append(time.perf_counter() - t)
            done += b
        wall = time.perf_counter() - t0
        lat_ms = np.array(lat) * 1000
        rows.append({"batch": b, "images": done, "wall_s": wall, "images_per_s": done / wall,
                     "p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99))})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="modeltools/reference.py")
    ap.add_argument("cmd", choices=["infer", "bench"])
    ap.add_argument("model", choices=["segformer", "resnet50", "efficientnet_lite0", "resnet50_int8",
                                      "efficientnet_lite0_int8"])
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--input", type=Path)
    ap.add_argument("--output", type=Path)
    ap.add_argument("--batch", type=int, default=1, help="infer: images per forward pass")
    ap.add_argument("--batches", default="1,8", help="bench: batch sizes")
    ap.add_argument("--size", type=int, default=512, help="bench: segformer S")
    ap.add_argument("--n", type=int, default=32, help="bench: images per batch size")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (Triton instances use 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = load(args.model, args.weights)
    if args.cmd == "infer":
        out = infer(run, np.load(args.input), args.batch)
        np.save(args.output, out)
        print(json.dumps({"shape": list(out.shape), "dtype": str(out.dtype)}))
    else:
        rows = bench(run, args.model, args.size, [int(b) for b in args.batches.split(",")], args.n)
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
