"""ONNX export of the served models, with a parity check against torch (run with the model env's python).

One function, :func:`export`, turns any torch module into ``model.onnx`` with a dynamic batch axis and checks it
against torch on the example input. The graph exported is the *served* computation, with Triton's input and
output tensors exactly (uint8 pixels in, the model's answer out): pre-processing (ImageNet normalisation) and
post-processing (upsampling + argmax, L2 normalisation) are inside the graph, so the python backend only calls
``session.run`` on the CPU and the GPU path needs no Python at all (Triton's native onnxruntime backend).

Each served model registers a :class:`Served` entry in ``SERVED``: how to load its torch module from its weights
folder, wrap it into the served graph, and make an example input. ``export_served(repo, name)`` writes
``<repo>/<name>/1/weights/model.onnx`` (+ ``model.int8.onnx`` for an embedder: dynamic INT8 quantisation) and
records the parity figures in the weights' ``lookstream.json`` under ``"onnx"``.

Hooking a new model in (e.g. another embedder): write ``_load_<name>(weights) -> torch.nn.Module`` returning the
served graph (uint8 NHWC in), add ``SERVED["<name>"] = Served(...)`` with its Triton tensor names and ``kind``
("labels" or "embedding", which picks the parity metric), and call ``export_served`` after its weights are written
(``modeltools/weights.py`` does for every model in SERVED after init, pull and train).

    python modeltools/onnx_export.py --repo triton_models [--models segformer,resnet50] [--no-int8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
PROVENANCE = "lookstream.json"
OPSET = 17
# Parity thresholds of issue 17 (the export fails if they are not met).
MIN_LABEL_AGREEMENT = 0.999
MIN_COSINE = 0.9999
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def log(msg: str) -> None:
    print(f"[onnx] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- served graphs
class _Pixels(torch.nn.Module):
    """uint8 NHWC -> float32 NCHW, ImageNet-normalised (the same arithmetic as triton_models/*/1/model.py)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std


class SegmenterGraph(torch.nn.Module):
    """IMAGE uint8 [N, S, S, 3] -> LABELS uint8 [N, S, S]: logits upsampled to S x S (bilinear), argmax."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.pixels, self.net = _Pixels(), net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.net(pixel_values=self.pixels(image), return_dict=False)[0]
        out = torch.nn.functional.interpolate(out, size=image.shape[1:3], mode="bilinear", align_corners=False)
        return out.argmax(dim=1).to(torch.uint8)


class EmbedderGraph(torch.nn.Module):
    """CROPS uint8 [N, H, W, 3] -> EMBEDDINGS float32 [N, D], L2-normalised."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.pixels, self.net = _Pixels(), net

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.net(self.pixels(crops)).float(), p=2.0, dim=1)


def _load_segformer(weights: Path) -> torch.nn.Module:
    from transformers import SegformerForSemanticSegmentation

    return SegmenterGraph(SegformerForSemanticSegmentation.from_pretrained(str(weights)))


def _load_resnet50(weights: Path) -> torch.nn.Module:
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    net.load_state_dict(torch.load(weights / "resnet50.pth", map_location="cpu", weights_only=True))
    net.fc = torch.nn.Identity()
    return EmbedderGraph(net)


@dataclass(frozen=True)
class Served:
    load: Callable[[Path], torch.nn.Module]  # weights folder -> the served graph (uint8 NHWC in)
    input_name: str
    output_name: str
    kind: str  # "labels" (agreement of label maps) | "embedding" (cosine of vectors)
    example_hw: tuple[int, int]  # example input size; the segmenter's spatial axes are dynamic too
    spatial_dynamic: bool = False


class EfficientNetGraph(torch.nn.Module):
    """CROPS uint8 [N, H, W, 3] -> EMBEDDINGS float32 [N, 1280]: triton_models/efficientnet_lite0/1/model.py's
    computation (bilinear resize to 224, (x - 127) / 128, pooled last conv block, L2-normalised)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.permute(0, 3, 1, 2).float()
        x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        emb = self.net.extract_features((x - 127.0) / 128.0).mean(dim=(2, 3))
        return torch.nn.functional.normalize(emb, p=2.0, dim=1)


def _load_efficientnet(weights: Path) -> torch.nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(weights / "efficientnet-lite0.pth", map_location="cpu", weights_only=True))
    return EfficientNetGraph(net)


SERVED: dict[str, Served] = {
    "segformer": Served(_load_segformer, "IMAGE", "LABELS", "labels", (256, 256), spatial_dynamic=True),
    "resnet50": Served(_load_resnet50, "CROPS", "EMBEDDINGS", "embedding", (256, 256)),
    # Exported for the INT8 recall measurement (bench relevance --int8-reference); its model.py runs torch.
    "efficientnet_lite0": Served(_load_efficientnet, "CROPS", "EMBEDDINGS", "embedding", (256, 256)),
}


# ----------------------------------------------------------------------------------------------- the export
def example_images(n: int, hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Smooth random scenes (blocks of colour + noise), closer to photos than white noise for argmax parity."""
    rng = np.random.default_rng(seed)
    h, w = hw
    coarse = rng.integers(0, 256, (n, max(1, h // 32), max(1, w // 32), 3)).astype(np.float32)
    img = np.repeat(np.repeat(coarse, 32, axis=1), 32, axis=2)[:, :h, :w]
    img = np.pad(img, ((0, 0), (0, h - img.shape[1]), (0, w - img.shape[2]), (0, 0)), mode="edge")
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def export(module: torch.nn.Module, example: np.ndarray, path: Path, *, input_name: str, output_name: str,
           spatial_dynamic: bool = False, opset: int = OPSET) -> Path:
    """Export ``module`` (uint8 NHWC in) to ``path`` with a dynamic batch axis (and H, W if ``spatial_dynamic``).

    Written to a temporary file and renamed, so a failed export never leaves a half-written model.
    """
    module = module.eval()
    axes = {0: "batch", 1: "height", 2: "width"} if spatial_dynamic else {0: "batch"}
    out_axes = {0: "batch", 1: "height", 2: "width"} if spatial_dynamic else {0: "batch"}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python control flow
        with torch.no_grad():
            # The TorchScript exporter: it traces HF SegFormer with dynamic spatial axes in seconds and needs no
            # onnxscript; the graph is checked against torch right after (check_parity).
            torch.onnx.export(module, (torch.from_numpy(example),), str(tmp), input_names=[input_name],
                              output_names=[output_name], dynamic_axes={input_name: axes, output_name: out_axes},
                              opset_version=opset, do_constant_folding=True, dynamo=False)
    _static_output_dims(tmp, module, example, set(out_axes))
    tmp.replace(path)
    return path


def _static_output_dims(path: Path, module: torch.nn.Module, example: np.ndarray, dynamic: set[int]) -> None:
    """The tracer leaves some fixed output sizes symbolic (``DivEMBEDDINGS_dim_1``): write the real ones, so the
    graph's signature says [batch, 2048] like the Triton config."""
    import onnx

    with torch.inference_mode():
        shape = module(torch.from_numpy(example)).shape
    model = onnx.load(str(path))
    for i, dim in enumerate(model.graph.output[0].type.tensor_type.shape.dim):
        if i not in dynamic and not dim.HasField("dim_value"):
            dim.Clear()
            dim.dim_value = int(shape[i])
    onnx.save(model, str(path))


def session(path: Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_parity(module: torch.nn.Module, path: Path, inputs: np.ndarray, *, input_name: str, kind: str) -> dict:
    """Run torch and onnxruntime on ``inputs``: label-map agreement or min cosine, plus timings."""
    with torch.inference_mode():
        t0 = time.perf_counter()
        ref = module.eval()(torch.from_numpy(inputs)).numpy()
        torch_ms = (time.perf_counter() - t0) * 1000
    sess = session(path)
    t0 = time.perf_counter()
    got = sess.run(None, {input_name: inputs})[0]
    ort_ms = (time.perf_counter() - t0) * 1000
    if got.shape != ref.shape or got.dtype != ref.dtype:
        raise AssertionError(f"{path.name}: onnx output {got.dtype} {got.shape} != torch {ref.dtype} {ref.shape}")
    out = {"inputs": list(inputs.shape), "torch_ms": round(torch_ms, 1), "onnxruntime_ms": round(ort_ms, 1)}
    if kind == "labels":
        out["label_agreement"] = float((got == ref).mean())
    else:
        cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1) + 1e-12)
        out["min_cosine"] = float(cos.min())
    return out


def parity_ok(kind: str, stats: dict) -> bool:
    if kind == "labels":
        return stats["label_agreement"] >= MIN_LABEL_AGREEMENT
    return stats["min_cosine"] >= MIN_COSINE


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic INT8 quantisation (weights int8, activations quantised at run time): an opt-in embedder variant."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = dst.with_name(dst.name + ".tmp")
    quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QUInt8)
    tmp.replace(dst)
    return dst


def export_served(repo: Path, name: str, *, int8: bool = True, parity_n: int = 4) -> dict:
    """Export model ``name`` of the repository from its weights folder; returns (and records) the parity figures.

    Raises if parity is below the thresholds: an ONNX file that disagrees with torch is never left in place.
    """
    spec = SERVED[name]
    weights = Path(repo) / name / "1" / "weights"
    t0 = time.time()
    module = spec.load(weights).eval()
    example = example_images(2, spec.example_hw)
    path = export(module, example, weights / ONNX_FILE, input_name=spec.input_name, output_name=spec.output_name,
                  spatial_dynamic=spec.spatial_dynamic)
    # Parity at another batch size (and, for the segmenter, another square size): the axes are really dynamic.
    hw = (spec.example_hw[0] + 64, spec.example_hw[1] + 64) if spec.spatial_dynamic else spec.example_hw
    stats = check_parity(module, path, example_images(parity_n, hw, seed=1), input_name=spec.input_name, kind=spec.kind)
    if not parity_ok(spec.kind, stats):
        path.unlink(missing_ok=True)
        raise SystemExit(f"{name}: ONNX export disagrees with torch: {stats}")
    info = {"file": ONNX_FILE, "opset": OPSET, "dynamic_axes": "batch, height, width" if spec.spatial_dynamic
            else "batch", "parity": stats, "export_s": round(time.time() - t0, 1)}
    if int8 and spec.kind == "embedding":
        q = quantize_int8(path, weights / INT8_FILE)
        info["int8"] = {"file": q.name, "parity": check_parity(module, q, example_images(parity_n, hw, seed=1),
                                                               input_name=spec.input_name, kind=spec.kind)}
    else:
        (weights / INT8_FILE).unlink(missing_ok=True)
    _record(weights, info)
    log(f"{name}: wrote {path} ({_parity_line(spec.kind, stats)}, {info['export_s']} s)")
    return info


def _parity_line(kind: str, stats: dict) -> str:
    return (f"label agreement {stats['label_agreement']:.5f}" if kind == "labels"
            else f"min cosine {stats['min_cosine']:.6f}")


def _record(weights: Path, info: dict) -> None:
    p = weights / PROVENANCE
    prov = json.loads(p.read_text()) if p.is_file() else {}
    prov["onnx"] = info
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(prov, indent=2, sort_keys=True) + "\n")
    tmp.replace(p)


def export_all(repo: Path, models: list[str] | None = None, *, int8: bool = True) -> dict:
    """Every model of SERVED whose weights exist in ``repo`` (or just ``models``)."""
    out = {}
    for name in models or list(SERVED):
        if name not in SERVED:
            raise SystemExit(f"no ONNX export registered for {name!r} (modeltools/onnx_export.py SERVED)")
        if (Path(repo) / name / "1" / "weights" / PROVENANCE).is_file():
            out[name] = export_served(repo, name, int8=int8)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="modeltools/onnx_export.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--models", default="", help="comma-separated; default: every model of SERVED with weights")
    ap.add_argument("--no-int8", action="store_true", help="skip the INT8 embedder variant")
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()] or None
    print(json.dumps(export_all(args.repo, models, int8=not args.no_int8), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
