"""Triton python-backend model: ResNet50 garment embeddings, uint8 crops in -> L2-normalised float32 [2048] out.

Loaded through the real path: ``torchvision.models.resnet50(weights=None)`` + ``load_state_dict`` of
``<this folder>/weights/resnet50.pth`` (``lookstream models init --random`` or ``lookstream models pull``), then
``fc`` is replaced by Identity. Device: a KIND_GPU instance runs on its CUDA device in fp16 (the embedding is
normalised in fp32); a KIND_CPU instance runs fp32 with ``torch.set_num_threads(TORCH_THREADS)`` (default 1).

CPU fast path: when ``1/weights/model.onnx`` exists (exported by ``lookstream models init|pull``) a KIND_CPU
instance runs it with onnxruntime or OpenVINO instead of torch (config parameters RUNTIME, PREFERRED_RUNTIME,
PRECISION, TORCH_THREADS = threads per instance; ``triton_models/_lib/runners.py``). ``ONNX_INT8=1`` serves the
dynamically quantised ``model.int8.onnx`` (opt-in: measure its recall cost first).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

MODEL = "resnet50"
INPUT = "CROPS"
OUTPUT = "EMBEDDINGS"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HINT = ("run `lookstream models init --random` (declared random weights, offline) or "
        "`lookstream models pull` (real weights)")


def _log(level: str, msg: str) -> None:
    try:
        getattr(pb_utils.Logger, f"log_{level}")(msg)
    except Exception:  # noqa: BLE001 - older stubs without Logger
        print(f"[{MODEL}] {level.upper()}: {msg}", file=sys.stderr, flush=True)


def _params(model_config: dict) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}


def _error(msg: str):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(msg, pb_utils.TritonError.INVALID_ARG))


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])
        params = _params(self.model_config)
        dims = pb_utils.get_input_config_by_name(self.model_config, INPUT)["dims"]
        self.shape = tuple(int(d) for d in dims)
        here = Path(args["model_repository"]) / str(args["model_version"])
        weights = Path(params.get("WEIGHTS_DIR") or here / "weights")
        checkpoint = weights / "resnet50.pth"
        if not checkpoint.is_file():
            raise RuntimeError(f"{MODEL}: no weights at {checkpoint}: {HINT}")
        self.provenance = _read_provenance(weights)

        kind = str(args.get("model_instance_kind", "CPU")).upper()
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_lib"))
        import runners

        threads = int(params.get("TORCH_THREADS") or 1)
        onnx_file = weights / ("model.int8.onnx" if params.get("ONNX_INT8") == "1" else "model.onnx")
        self.runtime = runners.choose(params.get("RUNTIME") or "auto", params.get("PREFERRED_RUNTIME") or "onnxruntime",
                                      onnx_file, kind)
        if self.runtime != "torch":
            self.runner = runners.make(self.runtime, onnx_file, threads, params.get("PRECISION") or "auto")
            self._run = self.runner
            self._announce(f"{self.runner.detail} from {weights}")
            return
        import torch
        import torchvision

        if kind == "GPU":
            if not torch.cuda.is_available():
                raise RuntimeError(f"{MODEL}: instance kind GPU but torch sees no CUDA device")
            self.device = torch.device(f"cuda:{int(args.get('model_instance_device_id', 0))}")
            self.dtype = torch.float16
        else:
            torch.set_num_threads(int(params.get("TORCH_THREADS") or 1))
            self.device = torch.device("cpu")
            self.dtype = torch.float32

        model = torchvision.models.resnet50(weights=None)
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        model.fc = torch.nn.Identity()
        self.model = model.to(self.device, self.dtype).eval()
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self.torch = torch
        self._run = self._run_torch
        self._announce(f"torch {checkpoint} on {self.device} {self.dtype}, threads={torch.get_num_threads()}")

    def _announce(self, what: str) -> None:
        if self.provenance.get("random"):
            _log("warn", "=" * 72)
            _log("warn", f"WARNING: {MODEL} is serving DECLARED RANDOM WEIGHTS ({self.provenance.get('source')}). "
                         "Its embeddings carry no visual similarity. Install real weights: `lookstream models pull`.")
            _log("warn", "=" * 72)
        _log("info", f"{MODEL}: runtime {self.runtime}: {what} (source={self.provenance.get('source')})")

    def _run_torch(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
            x = (x - self.mean) / self.std
            emb = self.model(x).float()
            emb = torch.nn.functional.normalize(emb, p=2.0, dim=1)
            return emb.cpu().numpy().astype(np.float32, copy=False)

    def execute(self, requests):
        responses = [None] * len(requests)
        arrays, owners = [], []
        for i, request in enumerate(requests):
            tensor = pb_utils.get_input_tensor_by_name(request, INPUT)
            if tensor is None:
                responses[i] = _error(f"{MODEL}: missing input {INPUT}")
                continue
            arr = tensor.as_numpy()
            if arr.dtype != np.uint8 or arr.ndim != 4 or tuple(arr.shape[1:]) != self.shape or arr.shape[0] < 1:
                responses[i] = _error(
                    f"{MODEL}: {INPUT} must be uint8 [N, {', '.join(map(str, self.shape))}], "
                    f"got {arr.dtype} {list(arr.shape)}"
                )
                continue
            arrays.append(arr)
            owners.append(i)
        if arrays:
            try:
                emb = self._run(np.ascontiguousarray(np.concatenate(arrays)))
            except Exception as exc:  # noqa: BLE001 - one bad batch must not take the server down
                _log("error", f"{MODEL}: inference failed: {type(exc).__name__}: {exc}")
                for i in owners:
                    responses[i] = pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError(f"{MODEL}: inference failed: {exc}")
                    )
                return responses
            start = 0
            for i, arr in zip(owners, arrays):
                out = emb[start: start + arr.shape[0]]
                start += arr.shape[0]
                responses[i] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT, out)])
        return responses

    def finalize(self):
        self.model = None


def _read_provenance(weights: Path) -> dict:
    p = weights / "lookstream.json"
    if not p.is_file():
        return {"source": "unknown (no lookstream.json)", "random": False}
    try:
        return json.loads(p.read_text())
    except ValueError:
        return {"source": "unreadable lookstream.json", "random": False}
