"""Container entry point of the Triton image: render the GPU model repository, then exec tritonserver.

The committed ``triton_models/*/config.pbtxt`` are CPU templates (one KIND_CPU instance, S = 512).
``workers.model_repo.render_config`` turns each into the runtime config (device kind, instance count, SegFormer
size); the version folders are symlinked back to the mounted source, so the weights served are those in
``triton_models/<model>/<version>/weights`` (materialised by ``lookstream models pull``).

    python3 triton_start.py [--render-only] [tritonserver args...]

Environment: TRITON_MODEL_SOURCE (/models), TRITON_MODEL_REPOSITORY (/tmp/model_repository),
TRITON_DEVICE (gpu|cpu, default gpu), TRITON_INSTANCES (1), LOOKSTREAM_SEGFORMER_SIZE (512: the workers' value).
After adding a version folder (e.g. ``2/``) run ``--render-only`` then POST /v2/repository/models/<m>/load.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, "/opt/lookstream")
from workers.model_repo import model_names, render_config  # noqa: E402  (stdlib-only module)


def render(src: Path, dst: Path, device: str, instances: int, size: int) -> None:
    names = model_names(src)
    if not names:
        raise SystemExit(f"no models (*/config.pbtxt) in {src}")
    tmp = dst.with_name(dst.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in names:
        out = tmp / name
        out.mkdir()
        text = (src / name / "config.pbtxt").read_text()
        out.joinpath("config.pbtxt").write_text(
            render_config(text, model=name, env_path=None, device=device, segformer_size=size, instances=instances)
        )
        for version in sorted(p for p in (src / name).iterdir() if p.is_dir() and p.name.isdigit()):
            (out / version.name).symlink_to(version.resolve(), target_is_directory=True)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    print(f"rendered {', '.join(names)} for {device} x{instances} (S={size}) into {dst}", flush=True)


def main(argv: list[str]) -> None:
    src = Path(os.environ.get("TRITON_MODEL_SOURCE", "/models"))
    dst = Path(os.environ.get("TRITON_MODEL_REPOSITORY", "/tmp/model_repository"))
    render(src, dst, os.environ.get("TRITON_DEVICE", "gpu"), int(os.environ.get("TRITON_INSTANCES", "1")),
           int(os.environ.get("LOOKSTREAM_SEGFORMER_SIZE", "512")))
    if argv[:1] == ["--render-only"]:
        return
    os.execvp("tritonserver", ["tritonserver", f"--model-repository={dst}", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
