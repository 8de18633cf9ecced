"""The Triton model repository at run time: render it, assemble the python backend, build the server command,
and manage the weights (through the model env's python: this module never imports torch).

The committed ``triton_models/`` holds one folder per model: ``config.pbtxt`` (the template, valid on its own for
S = 512 on one CPU instance) and the version folder ``1/`` (``model.py`` + the git-ignored ``weights/``).
``render_repository`` writes a runtime repository whose ``config.pbtxt`` files carry the chosen SegFormer size,
device kind, instance count and the parameters EXECUTION_ENV_PATH / TORCH_THREADS, and whose ``1/`` folders are
symlinks back to the source version folders, so the weights in the source are what is served.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[1]
MODELS_SRC = ROOT / "triton_models"
WEIGHTS_TOOL = ROOT / "modeltools" / "weights.py"
SETUP_HINT = "bash scripts/setup.sh"
RENDER_MARKER = ".lookstream-rendered"
PROVENANCE = "lookstream.json"
INIT_HINT = "lookstream models init --random [--tiny]"
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


def _find_block(text: str, start: int) -> int:
    """Index just past the bracket group ('{...}' or '[...]') opening at or after ``start``."""
    i = start
    while text[i] not in "{[":
        i += 1
    depth = 0
    while i < len(text):
        c = text[i]
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
        elif c == '"':
            i = text.index('"', i + 1)
        i += 1
    raise ValueError("unbalanced brackets in config.pbtxt")


def _remove_top_level(text: str, field: str, only_key: set[str] | None = None) -> str:
    """Drop ``field { ... }`` / ``field: [ ... ]`` entries (for ``parameters``, only those with a key in only_key)."""
    out, pos = [], 0
    for m in re.finditer(rf"(?m)^{field}\s*:?\s*(?=[{{\[])", text):
        if m.start() < pos:
            continue
        end = _find_block(text, m.end())
        body = text[m.start(): end]
        key = re.search(r'key\s*:\s*"([^"]*)"', body)
        if only_key is not None and (key is None or key.group(1) not in only_key):
            continue
        out.append(text[pos: m.start()])
        pos = end
        while pos < len(text) and text[pos] == "\n":
            pos += 1
    out.append(text[pos:])
    return "".join(out)


def _param(key: str, value: str) -> str:
    return f'parameters: {{ key: "{key}" value: {{ string_value: {json.dumps(value)} }} }}\n'


def render_config(
    text: str, *, model: str, env_path: Path | None, device: Device = "cpu", segformer_size: int = 512,
    instances: int = 1, torch_threads: int = 1,
) -> str:
    """A runtime config.pbtxt from the committed one (pure function: see render_repository)."""
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', not {device!r}")
    if instances < 1 or torch_threads < 1:
        raise ValueError("instances and torch_threads must be >= 1")
    if model == "segformer":
        if segformer_size < 32:
            raise ValueError(f"segformer_size must be >= 32, not {segformer_size}")
        n = 0

        def sub(m: re.Match) -> str:
            nonlocal n
            n += 1
            return f"dims: [ {segformer_size}, {segformer_size}{', 3' if m.group(1) else ''} ]"

        text = re.sub(r"dims\s*:\s*\[\s*\d+\s*,\s*\d+\s*(,\s*3\s*)?\]", sub, text)
        if n != 2:
            raise ValueError(f"segformer config.pbtxt: expected 2 square dims (IMAGE, LABELS), found {n}")
    text = _remove_top_level(text, "instance_group")
    keys = {"TORCH_THREADS"} | ({"EXECUTION_ENV_PATH"} if env_path is not None else set())
    text = _remove_top_level(text, "parameters", keys).rstrip() + "\n"
    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    text += "\n# --- rendered by workers/model_repo.py\n"
    text += f"instance_group [ {{ count: {instances} kind: {kind} }} ]\n"
    if env_path is not None:
        text += _param("EXECUTION_ENV_PATH", str(Path(env_path).absolute()))
    text += _param("TORCH_THREADS", str(torch_threads))
    return text


def render_repository(
    src: Path, dst: Path, *, env_path: Path, device: Device = "cpu", segformer_size: int = 512,
    instances: int = 1, torch_threads: int = 1,
) -> Path:
    """Write the runtime model repository into ``dst`` (replacing an earlier rendering) and return it.

    Per model: ``config.pbtxt`` = the committed one with S substituted (segformer), instance_group
    ``{count: instances, kind: KIND_CPU|KIND_GPU}`` and parameters EXECUTION_ENV_PATH (absolute) + TORCH_THREADS;
    ``1`` = a symlink to the source version folder (model.py + weights).
    """
    src, dst = Path(src).resolve(), Path(dst)
    names = model_names(src)
    if not names:
        raise FileNotFoundError(f"no models (*/config.pbtxt) in {src}")
    if dst.exists():
        if not (dst / RENDER_MARKER).exists() and any(dst.iterdir()):
            raise FileExistsError(f"{dst} exists and was not rendered by render_repository: not replacing it")
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in names:
        text = (src / name / "config.pbtxt").read_text()
        out = dst / name
        out.mkdir()
        (out / "config.pbtxt").write_text(render_config(
            text, model=name, env_path=Path(env_path), device=device, segformer_size=segformer_size,
            instances=instances, torch_threads=torch_threads,
        ))
        for version in sorted(p for p in (src / name).iterdir() if p.is_dir() and p.name.isdigit()):
            (out / version.name).symlink_to(version, target_is_directory=True)
    (dst / RENDER_MARKER).write_text(json.dumps({
        "src": str(src), "env_path": str(Path(env_path).absolute()), "device": device,
        "segformer_size": segformer_size, "instances": instances, "torch_threads": torch_threads,
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


# ------------------------------------------------------------------------------------------- weights
def weights_provenance(repo_src: Path = MODELS_SRC) -> dict[str, dict]:
    """Per model: its ``lookstream.json`` (``source``, ``random``, ``tiny``, ...) or ``{"missing": True, "hint"}``."""
    out: dict[str, dict] = {}
    for name in model_names(repo_src):
        p = Path(repo_src) / name / "1" / "weights" / PROVENANCE
        if p.is_file():
            try:
                out[name] = json.loads(p.read_text())
            except ValueError as exc:
                out[name] = {"missing": False, "error": f"unreadable {p}: {exc}"}
        else:
            out[name] = {"missing": True, "hint": f"run `{INIT_HINT}` or `{PULL_HINT}`"}
    return out


def provenance_summary(prov: dict[str, dict]) -> list[str]:
    """One human line per model, loud for random or missing weights (for the stack status)."""
    lines = []
    for name, info in prov.items():
        if info.get("missing"):
            lines.append(f"{name}: NO WEIGHTS ({info.get('hint', '')})")
        elif info.get("random"):
            lines.append(f"{name}: WARNING RANDOM WEIGHTS ({info.get('source')}, tiny={info.get('tiny')})")
        else:
            lines.append(f"{name}: {info.get('source')}")
    return lines


def _run_weights_tool(args: list[str], env_path: Path, quiet: bool) -> dict:
    py = env_python(env_path)
    if not WEIGHTS_TOOL.is_file():
        raise FileNotFoundError(f"{WEIGHTS_TOOL} not found (run from a lookstream checkout)")
    proc = subprocess.run(
        [str(py), str(WEIGHTS_TOOL), *args], cwd=str(ROOT), text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if quiet else None,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
    )
    if proc.returncode != 0:
        tail = "\n".join(((proc.stderr or "") + proc.stdout).strip().splitlines()[-15:])
        raise WeightsToolError(f"modeltools/weights.py {args[0]} failed (exit {proc.returncode}):\n{tail}")
    start = proc.stdout.find("\n{")
    blob = proc.stdout[start + 1:] if start >= 0 else proc.stdout
    return json.loads(blob[blob.index("{"):])


def init_weights(
    repo_src: Path = MODELS_SRC, env_path: Path | None = None, random: bool = True, tiny: bool = False, *,
    seed: int = 0, models: tuple[str, ...] = ("segformer", "resnet50"), quiet: bool = True,
) -> dict:
    """Write DECLARED random weights (``modeltools/weights.py init --random``); returns the provenance written."""
    if not random:
        raise ValueError(f"init only writes declared random weights; real weights come from `{PULL_HINT}`")
    args = ["init", "--repo", str(Path(repo_src).absolute()), "--random", "--seed", str(seed), "--models", ",".join(models)]
    if tiny:
        args.append("--tiny")
    return _run_weights_tool(args, Path(env_path or default_env_path()), quiet)


def pull_weights(
    repo_src: Path = MODELS_SRC, env_path: Path | None = None, *, segformer: str | None = "mattmdjaga/segformer_b2_clothes",
    resnet: str | None = "torchvision", force: bool = False, quiet: bool = True,
) -> dict:
    """Install real weights (HF id or local dir for SegFormer; 'torchvision' or a .pth for ResNet50; None skips)."""
    args = ["pull", "--repo", str(Path(repo_src).absolute()),
            "--segformer", segformer or "skip", "--resnet", resnet or "skip"]
    if force:
        args.append("--force")
    return _run_weights_tool(args, Path(env_path or default_env_path()), quiet)


if __name__ == "__main__":  # a quick look: python -m workers.model_repo
    json.dump(weights_provenance(), sys.stdout, indent=2)
    print()
