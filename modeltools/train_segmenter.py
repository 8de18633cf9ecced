"""Fine-tune SegFormer on images + label maps and write it as a new version of the Triton ``segformer`` model.

Run with the model env's python (it imports torch); ``lookstream train segmenter DATA`` does that for you.

Data folder (what ATR / LIP / DeepFashion2 users convert their annotations to)::

    DATA/images/<name>.jpg|.jpeg|.png|.webp   RGB photos, any size
    DATA/labels/<name>.png                    8-bit single-channel PNG, same size; pixel = label id 0-17, 255 = ignore
    DATA/val.txt                              optional: names held out for validation (default: every 10th name)

The 18 label ids (mattmdjaga/segformer_b2_clothes, the map the pipeline reads)::

     0 Background   1 Hat          2 Hair        3 Sunglasses   4 Upper-clothes  5 Skirt
     6 Pants        7 Dress        8 Belt        9 Left-shoe   10 Right-shoe    11 Face
    12 Left-leg    13 Right-leg   14 Left-arm   15 Right-arm   16 Bag           17 Scarf

(Left/right are the person's own sides.) Images are letterboxed into S x S exactly as the workers do (scaled to
fit, black padding right/bottom, padding labelled Background); training takes random ``--crop`` squares of those
at the serving scale (the default crop is S: whole images), with horizontal flips that swap the Left-/Right- labels.

Output: ``<repo>/segformer/<N>/`` (N = the highest version + 1; Triton serves the highest version) holding
``weights/`` (``save_pretrained`` + ``lookstream.json``: data hash, steps, validation mIoU per label, loss curve,
init, device, time, the logit adjustment) and links to version 1's ``model.py``. ``--logit-adjust`` adds a last step:
the logit adjustment (modeltools/logit_adjust.py) that undoes the class weights' pull towards rare labels, chosen on
the validation split and folded into the classifier's bias. Off by default: on the relevance benchmark it raised
pixel IoU 0.634 -> 0.691 but lowered garment detection recall 0.900 -> 0.881 and R@10 0.765 -> 0.745 (smaller masks,
small garments' boxes under IoU 0.5; bench/RESULTS.md). The scores of every tau are recorded either way, and
``adjust`` folds them into a version already trained without it (a new version; no retraining).

    python modeltools/train_segmenter.py train DATA --repo triton_models [--steps 1500] [--init tiny|DIR|HF_ID]
    python modeltools/train_segmenter.py adjust DATA --repo triton_models --version N  # + logit adjustment
    python modeltools/train_segmenter.py render OUT --n 1200 --seed 0       # the rendered set (modeltools/segdata.py)
    python modeltools/train_segmenter.py default --repo triton_models       # rendered set + train, cached
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import logit_adjust  # noqa: E402
import segdata  # noqa: E402
from weights import ID2LABEL, LABELS, PROVENANCE, segformer_config  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
IGNORE = 255
NON_GARMENT = {"Background", "Hair", "Face", "Left-leg", "Right-leg", "Left-arm", "Right-arm"}
GARMENT_IDS = [i for i, n in enumerate(LABELS) if n not in NON_GARMENT]
FLIP = np.arange(256, dtype=np.uint8)
for a, b in ((9, 10), (12, 13), (14, 15)):
    FLIP[a], FLIP[b] = b, a
# The offline default: the tiny SegFormer trained on rendered people (cached by a hash of this recipe + code).
# Whole letterboxed images at S=128 (crops lost the body context that tells a skirt from a dress), loss at full
# resolution, 1/sqrt(frequency) class weights (uniform weights: the model says Background; 1/frequency: worse at
# equal steps), measured on held-out street looks (bench/segmenter.py, bench/RESULTS.md).
DEFAULT = {"n_images": 1200, "render_seed": 0, "steps": 1500, "batch": 8, "crop": 128, "size": 128, "lr": 2e-3,
           "seed": 0, "init": "tiny"}


def log(msg: str) -> None:
    print(f"[train] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- data
def find_pairs(data: Path) -> list[tuple[str, Path, Path]]:
    images, labels = Path(data) / "images", Path(data) / "labels"
    if not images.is_dir() or not labels.is_dir():
        raise SystemExit(f"{data}: expected images/ and labels/ folders (see `{Path(__file__).name} --help`)")
    pairs, missing = [], []
    for img in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        lab = labels / f"{img.stem}.png"
        (pairs.append((img.stem, img, lab)) if lab.is_file() else missing.append(img.name))
    if missing:
        raise SystemExit(f"{data}: {len(missing)} images without labels/<name>.png, e.g. {missing[:3]}")
    if len(pairs) < 2:
        raise SystemExit(f"{data}: need at least 2 labelled images (one for validation), found {len(pairs)}")
    return pairs


def data_hash(pairs) -> str:
    h = hashlib.sha256()
    for name, img, lab in pairs:
        h.update(name.encode() + b"\0" + hashlib.sha256(img.read_bytes()).digest() + hashlib.sha256(lab.read_bytes()).digest())
    return h.hexdigest()


def split(data: Path, pairs) -> tuple[list, list]:
    names = [p[0] for p in pairs]
    vf = Path(data) / "val.txt"
    if vf.is_file():
        held = {line.strip() for line in vf.read_text().splitlines() if line.strip()}
        unknown = held - set(names)
        if unknown:
            raise SystemExit(f"{vf}: names without an image: {sorted(unknown)[:3]}")
    else:
        held = set(names[::10])
    train = [p for p in pairs if p[0] not in held]
    val = [p for p in pairs if p[0] in held]
    if not train or not val:
        raise SystemExit(f"{data}: the split leaves {len(train)} training and {len(val)} validation images")
    return train, val


def letterbox_pair(img_path: Path, lab_path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """As workers/garments.letterbox: scale to fit S x S, pad right/bottom (image black, labels Background)."""
    img = Image.open(img_path).convert("RGB")
    lab = Image.open(lab_path)
    if lab.mode not in ("L", "P"):
        raise SystemExit(f"{lab_path}: label maps must be 8-bit single-channel PNGs, not mode {lab.mode}")
    if lab.size != img.size:
        raise SystemExit(f"{lab_path}: size {lab.size} differs from its image's {img.size}")
    arr = np.asarray(lab)
    bad = np.setdiff1d(np.unique(arr), [*range(len(LABELS)), IGNORE])
    if bad.size:
        raise SystemExit(f"{lab_path}: label ids {bad.tolist()[:5]} outside 0-{len(LABELS) - 1} (255 = ignore)")
    w, h = img.size
    scale = size / max(w, h)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    x = np.zeros((size, size, 3), np.uint8)
    y = np.zeros((size, size), np.uint8)
    x[:sh, :sw] = np.asarray(img.resize((sw, sh), Image.BILINEAR))
    y[:sh, :sw] = np.asarray(Image.fromarray(arr).resize((sw, sh), Image.NEAREST))
    return x, y


def load_set(pairs, size: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*(letterbox_pair(i, l, size) for _, i, l in pairs))
    return np.stack(xs), np.stack(ys)


# ----------------------------------------------------------------------------------------------- model
def load_model(init: str, seed: int):
    import torch
    from transformers import SegformerForSemanticSegmentation

    torch.manual_seed(seed)
    if init == "tiny":
        return SegformerForSemanticSegmentation(segformer_config(tiny=True)), f"random tiny SegFormer (seed {seed})"
    local = Path(init).expanduser()
    src = str(local) if local.is_dir() else init
    model = SegformerForSemanticSegmentation.from_pretrained(src)
    if {int(k): v for k, v in model.config.id2label.items()} != ID2LABEL:
        raise SystemExit(f"--init {init}: its label map is not the 18 labels of this pipeline")
    return model, (str(local.resolve()) if local.is_dir() else init)


def lowres_logits(model, x: np.ndarray, device, batch: int = 8) -> list:
    """The model's logits at its own 1/4 resolution, batch by batch, on the CPU."""
    import torch

    from weights import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    out = []
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            t = torch.from_numpy(x[i: i + batch]).to(device).permute(0, 3, 1, 2).float().div_(255.0)
            out.append(model(pixel_values=(t - mean) / std).logits.cpu())
    return out


def label_maps(logits: list, size: tuple[int, int], offset: np.ndarray | None = None) -> np.ndarray:
    """Label maps as served: bilinear upsampling, then argmax; ``offset`` is added to each label's logit (a constant
    per label commutes with the upsampling, so this equals the model with that offset in its classifier's bias)."""
    import torch

    add = 0 if offset is None else torch.from_numpy(offset).view(1, -1, 1, 1)
    with torch.inference_mode():
        return np.concatenate([
            torch.nn.functional.interpolate(lg + add, size=size, mode="bilinear", align_corners=False)
            .argmax(1).to(torch.uint8).numpy() for lg in logits])


def predict(model, x: np.ndarray, device, batch: int = 8) -> np.ndarray:
    return label_maps(lowres_logits(model, x, device, batch), x.shape[1:3])


def iou_per_label(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """IoU of every label present in the ground truth (pixels labelled 255 are ignored)."""
    keep = gt != IGNORE
    out = {}
    for i, name in enumerate(LABELS):
        g = (gt == i) & keep
        if not g.any():
            continue
        p = (pred == i) & keep
        out[name] = float((g & p).sum() / (g | p).sum())
    return out


def garment_miou(ious: dict[str, float]) -> float:
    vals = [v for k, v in ious.items() if k not in NON_GARMENT]
    return float(np.mean(vals)) if vals else float("nan")


# ----------------------------------------------------------------------------------------------- train
def train_threads(cores: int, load: float, asked: int = 0) -> int:
    """Torch threads for CPU training: ``asked`` (LOOKSTREAM_TRAIN_THREADS) when set; every core (up to 4) on an idle
    machine, one fewer when others run. Measured on 2 cores, S=128, batch 8: idle, 2 threads 0.15 s a step and 1 thread
    0.34 s; shared with other engineers' suites, 2 threads 2.4 s and 1 thread 0.3 s (they fight the other processes)."""
    if asked > 0:
        return asked
    return max(1, min(4, cores if load < 0.5 else cores - 1))


def train(data: Path, repo: Path, *, steps: int, batch: int, crop: int, size: int, lr: float, seed: int, init: str,
          device: str = "auto", extra_provenance: dict | None = None, out_dir: Path | None = None,
          adjust_logits: bool = False) -> dict:
    import torch

    t_start = time.time()
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    if dev.type == "cpu":
        torch.set_num_threads(train_threads(os.cpu_count() or 1, os.getloadavg()[0],
                                            int(os.environ.get("LOOKSTREAM_TRAIN_THREADS", "0"))))
    pairs = find_pairs(data)
    dhash = data_hash(pairs)
    train_pairs, val_pairs = split(data, pairs)
    xt, yt = load_set(train_pairs, size)
    xv, yv = load_set(val_pairs, size)
    crop = min(crop, size)
    log(f"{len(train_pairs)} training / {len(val_pairs)} validation images at S={size}, crops {crop}, device {dev}")

    model, init_desc = load_model(init, seed)
    model.to(dev).train()
    from weights import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    # Class weights ~ 1/sqrt(frequency) over the labels present: small garments (hats, shoes, bags) still count.
    w = logit_adjust.class_weights(yt, len(LABELS), IGNORE)
    weight = torch.tensor(w, dtype=torch.float32, device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / max(1, steps)))))
    rng = np.random.default_rng(seed)
    curve, window = [], []
    every = max(1, steps // 20)  # about 20 points on the loss curve
    for step in range(steps):
        idx = rng.integers(0, len(xt), batch)
        xb = np.empty((batch, crop, crop, 3), np.uint8)
        yb = np.empty((batch, crop, crop), np.uint8)
        for k, i in enumerate(idx):
            oy, ox = rng.integers(0, size - crop + 1, 2)
            xi, yi = xt[i, oy: oy + crop, ox: ox + crop], yt[i, oy: oy + crop, ox: ox + crop]
            if rng.random() < 0.5:
                xi, yi = xi[:, ::-1], FLIP[yi[:, ::-1]]
            xb[k], yb[k] = xi, yi
        x = torch.from_numpy(xb).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
        y = torch.from_numpy(yb.astype(np.int64)).to(dev)
        logits = model(pixel_values=(x - mean) / std).logits  # [B, 18, crop/4, crop/4]
        # The loss at the labels' own resolution, on logits upsampled as served (bilinear, then argmax).
        logits = torch.nn.functional.interpolate(logits, size=(crop, crop), mode="bilinear", align_corners=False)
        loss = torch.nn.functional.cross_entropy(logits, y, weight=weight, ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        window.append(loss.item())
        if (step + 1) % every == 0 or step + 1 == steps:
            curve.append([step + 1, round(float(np.mean(window)), 4)])
            print(json.dumps({"step": step + 1, "loss": curve[-1][1]}), flush=True)
            window = []
    train_s = time.time() - t_start
    adjust = fold_logit_adjustment(model, xv, yv, w, dev, apply=adjust_logits)
    pred = predict(model, xv, dev)
    ious = iou_per_label(pred, yv)
    miou = garment_miou(ious)
    log(f"validation mIoU over garment labels {miou:.3f} ({len(val_pairs)} images; logit adjustment "
        f"{'applied' if adjust_logits else 'not applied'}, tau {adjust['best_tau']} scores "
        f"{adjust['val_miou'][str(adjust['best_tau'])]:.3f}); {train_s:.0f} s")
    model.to("cpu")
    info = {
        "source": f"trained by lookstream train segmenter on {Path(data).resolve()}", "random": False,
        "trained": True, "tiny": list(model.config.hidden_sizes) == [16, 32, 64, 128],
        "architecture": "SegformerForSemanticSegmentation", "labels": LABELS, "init": init_desc,
        "data": {"path": str(Path(data).resolve()), "sha256": dhash, "train_images": len(train_pairs),
                 "val_images": len(val_pairs)},
        "training": {"steps": steps, "batch": batch, "crop": crop, "size": size, "lr": lr, "seed": seed,
                     "device": str(dev), "seconds": round(train_s, 1), "loss_curve": curve},
        "input_size": size,
        "validation": {"garment_miou": round(miou, 4), "iou": {k: round(v, 4) for k, v in ious.items()}},
        "logit_adjustment": adjust,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        **(extra_provenance or {}),
    }
    if out_dir is not None:  # a plain weights folder (the cache), installed into a repository later
        _save(model, info, out_dir)
        return info
    return install(repo, model=model, info=info)


def fold_logit_adjustment(model, xv: np.ndarray, yv: np.ndarray, weights: np.ndarray, device,
                          apply: bool = True) -> dict:
    """Score every tau on the validation split (modeltools/logit_adjust.py); with ``apply``, add the best one's
    offset to the classifier's bias."""
    import torch

    logits = lowres_logits(model, xv, device)
    best, scores = logit_adjust.choose_tau(lambda off: label_maps(logits, xv.shape[1:3], off), yv, weights,
                                           lambda p, y: garment_miou(iou_per_label(p, y)))
    tau = best if apply else 0.0
    with torch.no_grad():
        model.decode_head.classifier.bias += torch.from_numpy(logit_adjust.bias_for(weights, tau)).to(device)
    return {"tau": tau, "best_tau": best, "applied": apply, "offset": "-tau * log(class weight)",
            "chosen_on": "validation garment mIoU", "val_miou": {str(t): round(v, 4) for t, v in scores.items()}}


def _save(model, info: dict, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    (tmp / PROVENANCE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def install(repo: Path, *, model=None, info: dict | None = None, weights: Path | None = None) -> dict:
    """Write a new version ``<repo>/segformer/<N>/``: weights + links to version 1's model code."""
    base = Path(repo) / "segformer"
    v1 = base / "1"
    if not (v1 / "model.py").is_file():
        raise SystemExit(f"{v1}/model.py not found: --repo must be a lookstream model repository (triton_models/)")
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    n = max(versions) + 1
    dst = base / str(n)
    dst.mkdir()
    try:
        for entry in v1.iterdir():  # model.py and any helper it imports; version 1's own weights stay there
            if entry.name != "weights" and not entry.name.startswith(("weights.", "__pycache__")):
                (dst / entry.name).symlink_to(Path("..") / "1" / entry.name)
        if weights is not None:
            shutil.copytree(weights, dst / "weights")
            info = json.loads((dst / "weights" / PROVENANCE).read_text())
        else:
            _save(model, info, dst / "weights")
    except BaseException:
        shutil.rmtree(dst, ignore_errors=True)
        raise
    info = {**info, "version": n, "path": str(dst)}
    log(f"wrote segformer version {n} to {dst} (validation garment mIoU {info['validation']['garment_miou']})")
    return info


# ----------------------------------------------------------------------------------------------- default
def recipe_key(recipe: dict) -> str:
    """Hash of the recipe, the data generator and the code that shapes the weights (not of the CLI around it)."""
    import inspect

    h = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    h.update((HERE / "segdata.py").read_bytes())
    h.update((HERE / "logit_adjust.py").read_bytes())
    for fn in (train, load_model, letterbox_pair, load_set, split, render_set, iou_per_label, lowres_logits,
               label_maps, fold_logit_adjustment):
        h.update(inspect.getsource(fn).encode())
    return h.hexdigest()[:16]


def render_set(out: Path, n: int, seed: int) -> None:
    """``n`` rendered people with random garment colours, in the folder format above."""
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, lab = segdata.training_pair(rng)
        img.save(out / "images" / f"r{i:05d}.jpg", quality=92)
        Image.fromarray(lab).save(out / "labels" / f"r{i:05d}.png")


def default(repo: Path, cache_root: Path, device: str = "auto", overrides: dict | None = None) -> dict:
    """The offline default segmenter: render + train once per recipe (cached), then install it into ``repo``.
    ``overrides`` (e.g. more steps on a GPU) make another recipe, cached under its own key."""
    recipe = {**DEFAULT, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    key = recipe_key(recipe)
    cache = cache_root / f"segmenter-{key}"
    weights = cache / "weights"
    base = Path(repo) / "segformer"
    for p in sorted((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True):
        prov = p / "weights" / PROVENANCE
        if prov.is_file() and json.loads(prov.read_text()).get("recipe_key") == key:
            log(f"segformer version {p.name} already holds the default segmenter {key}")
            return {**json.loads(prov.read_text()), "version": int(p.name), "path": str(p)}
    if not (weights / PROVENANCE).is_file():
        data = cache / "data"
        if not (data / ".complete").is_file():
            log(f"rendering {recipe['n_images']} training images into {data}")
            shutil.rmtree(data, ignore_errors=True)
            render_set(data, recipe["n_images"], recipe["render_seed"])
            (data / ".complete").write_text("")
        log(f"training the default tiny segmenter ({recipe['steps']} steps; cached in {cache})")
        train(data, repo, steps=recipe["steps"], batch=recipe["batch"], crop=recipe["crop"], size=recipe["size"],
              lr=recipe["lr"], seed=recipe["seed"], init=recipe["init"], device=device, out_dir=weights,
              extra_provenance={"recipe_key": key, "recipe": recipe,
                                "declared": "trained on RENDERED people (modeltools/segdata.py), random garment "
                                            "colours; not trained on photographs"})
    else:
        log(f"using the cached default segmenter {weights}")
    return install(repo, weights=weights)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="modeltools/train_segmenter.py", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="fine-tune on DATA and write a new segformer version")
    t.add_argument("data", type=Path)
    t.add_argument("--repo", type=Path, required=True)
    t.add_argument("--init", default="tiny", help="'tiny' (random tiny SegFormer), a save_pretrained dir or an HF id")
    for name, typ in (("steps", int), ("batch", int), ("crop", int), ("size", int), ("lr", float), ("seed", int)):
        t.add_argument(f"--{name}", type=typ, default=DEFAULT[name])
    t.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    t.add_argument("--logit-adjust", action="store_true",
                   help="fold the validation-chosen logit adjustment into the classifier (pixel IoU up, detection down)")
    j = sub.add_parser("adjust", help="fold the logit adjustment into a version trained on DATA, as a new version")
    j.add_argument("data", type=Path)
    j.add_argument("--repo", type=Path, required=True)
    j.add_argument("--version", type=int, required=True)
    j.add_argument("--device", default="auto")
    r = sub.add_parser("render", help="write the rendered training set")
    r.add_argument("out", type=Path)
    r.add_argument("--n", type=int, default=DEFAULT["n_images"])
    r.add_argument("--seed", type=int, default=DEFAULT["render_seed"])
    d = sub.add_parser("default", help="the offline default segmenter (rendered set + training, cached)")
    d.add_argument("--repo", type=Path, required=True)
    d.add_argument("--cache", type=Path,
                   default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lookstream")
    d.add_argument("--device", default="auto")
    d.add_argument("--steps", type=int, help="another recipe: this many steps (cached under its own key)")
    d.add_argument("--n-images", type=int, help="another recipe: this many rendered images")
    a = ap.parse_args(argv)
    if a.cmd == "train":
        info = train(a.data, a.repo, steps=a.steps, batch=a.batch, crop=a.crop, size=a.size, lr=a.lr, seed=a.seed,
                     init=a.init, device=a.device, adjust_logits=a.logit_adjust)
    elif a.cmd == "adjust":
        from adjust_segmenter import adjust

        info = adjust(a.data, a.repo, a.version, a.device)
    elif a.cmd == "render":
        render_set(a.out, a.n, a.seed)
        info = {"rendered": a.n, "out": str(a.out)}
    else:
        info = default(a.repo, a.cache, a.device, {"steps": a.steps, "n_images": a.n_images})
    print(json.dumps({k: v for k, v in info.items() if k != "training"} | {"steps": info.get("training", {}).get("steps")},
                     sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
