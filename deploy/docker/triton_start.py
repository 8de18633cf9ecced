"""Container entry point of the Triton image: render the GPU model repository, then exec tritonserver.

The committed ``triton_models/*/config.pbtxt`` are CPU templates (one KIND_CPU instance, S = 512).
``workers.local.model_repo.render_config`` turns each into the runtime config (device kind, instance count, SegFormer
size, backend) as a structure (workers/adapters/triton_config.py). Backend ``onnxruntime`` (the default on a GPU): Triton's
native onnxruntime backend with the TensorRT execution provider in FP16 on ``<version>/weights/model.onnx`` (exported
by ``lookstream models pull``), dynamic batching from ``model_repo.GPU_BATCHING``; no Python in the request path.
Backend ``python``: model.py with torch (fp16 on a GPU); its version folders are symlinked back to the mounted source.

    python3 triton_start.py [--render-only] [tritonserver args...]

Environment: TRITON_MODEL_SOURCE (/models), TRITON_MODEL_REPOSITORY (/tmp/model_repository),
TRITON_DEVICE (gpu|cpu, default gpu), TRITON_BACKEND (onnxruntime|python, default onnxruntime), TRITON_INSTANCES (1),
LOOKSTREAM_SEGFORMER_SIZE (512: the workers' value).
After adding a version folder (e.g. ``2/``) run ``--render-only`` then POST /v2/repository/models/<m>/load.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, "/opt/lookstream")
from workers.local.model_repo import model_names, render_config, write_model_dir  # noqa: E402  (stdlib only)


def render(src: Path, dst: Path, device: str, instances: int, size: int, backend: str = "onnxruntime") -> None:
    names = model_names(src)
    if not names:
        raise SystemExit(f"no models (*/config.pbtxt) in {src}")
    tmp = dst.with_name(dst.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in names:
        text = render_config((src / name / "config.pbtxt").read_text(), model=name, env_path=None, device=device,
                             segformer_size=size, instances=instances, backend=backend)
        write_model_dir(src / name, tmp / name, text, backend)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    print(f"rendered {', '.join(names)} for {device} x{instances} (S={size}, backend {backend}) into {dst}", flush=True)


def main(argv: list[str]) -> None:
    src = Path(os.environ.get("TRITON_MODEL_SOURCE", "/models"))
    dst = Path(os.environ.get("TRITON_MODEL_REPOSITORY", "/tmp/model_repository"))
    render(src, dst, os.environ.get("TRITON_DEVICE", "gpu"), int(os.environ.get("TRITON_INSTANCES", "1")),
           int(os.environ.get("LOOKSTREAM_SEGFORMER_SIZE", "512")), os.environ.get("TRITON_BACKEND", "onnxruntime"))
    if argv[:1] == ["--render-only"]:
        return
    os.execvp("tritonserver", ["tritonserver", f"--model-repository={dst}", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
