"""ONNX runners for the python-backend models on CPU (onnxruntime or OpenVINO), shared by triton_models/*/1/model.py.

A model's ``1/weights/model.onnx`` (modeltools/onnx_export.py) is the served graph itself: uint8 pixels in, the
model's answer out, so a runner is just ``run(batch) -> output``; no torch is imported on this path.

``RUNTIME`` (config parameter, rendered from LOOKSTREAM_MODEL_RUNTIME): ``torch`` (the model's own torch code),
``onnxruntime``, ``openvino``, or ``auto``: the model's preferred runtime (``PREFERRED_RUNTIME``, rendered by
workers/local/model_repo.py from measurements, see docs/operations.md) when its ONNX file exists and that runtime is
installed (OpenVINO only on CPUs with bf16 units: ``bf16_cpu``), else onnxruntime when it is, else torch. ``PRECISION`` (OpenVINO only): ``f32`` or ``auto`` (OpenVINO's
default: bf16 on CPUs with AMX / AVX512-BF16, f32 elsewhere).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")


def installed(runtime: str) -> bool:
    return runtime == "torch" or importlib.util.find_spec(runtime) is not None


def bf16_cpu(cpuinfo: str | None = None) -> bool:
    """AMX or AVX512-BF16 on this CPU: there OpenVINO runs embedders in bf16, 5-14x onnxruntime. Elsewhere it
    runs f32 and was the slower one: ResNet50@256 on a 2-core AVX2 AMD EPYC, 1 thread, batch 3, 185 ms per
    image against onnxruntime's 170 (2026-12-02)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return "amx_bf16" in flags or "avx512_bf16" in flags


def choose(runtime: str, preferred: str, onnx_file: Path, kind: str) -> str:
    """The runtime a model instance uses (raises on an explicit choice that cannot work)."""
    if runtime not in RUNTIMES:
        raise RuntimeError(f"RUNTIME must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if kind == "GPU" and runtime in ("auto", "torch"):
        return "torch"  # the python backend on a GPU runs torch fp16; ONNX on GPU is the native onnxruntime backend
    if runtime == "torch":
        return "torch"
    if runtime != "auto":
        if not onnx_file.is_file():
            raise RuntimeError(f"RUNTIME={runtime} but no {onnx_file} (run `lookstream models init|pull`, which export it)")
        if not installed(runtime):
            raise RuntimeError(f"RUNTIME={runtime} but {runtime} is not installed in the model env")
        return runtime
    if not onnx_file.is_file():
        return "torch"
    if preferred == "openvino" and not bf16_cpu():
        preferred = "onnxruntime"
    for cand in (preferred, "onnxruntime"):
        if cand in ("onnxruntime", "openvino") and installed(cand):
            return cand
    return "torch"


class OnnxRuntimeRunner:
    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning worker threads burn the cores the other models and workers need between batches.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.detail = f"onnxruntime {ort.__version__} ({path.name}, {threads} thread(s))"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: batch})[0]


class OpenVinoRunner:
    def __init__(self, path: Path, threads: int, precision: str):
        import openvino as ov

        core = ov.Core()
        cfg = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
               "ENABLE_CPU_PINNING": False}
        if precision == "f32":
            cfg["INFERENCE_PRECISION_HINT"] = "f32"
        self.compiled = core.compile_model(str(path), "CPU", cfg)
        self.request = self.compiled.create_infer_request()
        prec = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.detail = f"openvino {ov.__version__} ({path.name}, {threads} thread(s), precision {prec})"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        # One request per instance: Triton calls execute() of an instance from one thread at a time.
        return np.array(self.request.infer({0: batch})[0], copy=True)


def make(runtime: str, path: Path, threads: int, precision: str = "auto"):
    if runtime == "onnxruntime":
        return OnnxRuntimeRunner(path, threads)
    if runtime == "openvino":
        return OpenVinoRunner(path, threads, precision)
    raise ValueError(f"no ONNX runner for {runtime!r}")
