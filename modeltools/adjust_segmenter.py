"""``train_segmenter.py adjust``: fold the logit adjustment into a version trained without it (a new version).

What ``train --logit-adjust`` does as its last step, for a version already trained: the tau chosen on the
validation split of the data it was trained on (modeltools/logit_adjust.py), added to its classifier bias.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import logit_adjust
from train_segmenter import (IGNORE, LABELS, PROVENANCE, data_hash, find_pairs, fold_logit_adjustment, garment_miou,
                             install, iou_per_label, load_set, log, predict, split)


def adjust(data: Path, repo: Path, version: int, device: str = "auto") -> dict:
    """``train --logit-adjust``'s last step for a version trained without it: the tau chosen on the validation split
    of the data it was trained on, folded into its classifier bias, written as a new version (no retraining)."""
    import torch
    from transformers import SegformerForSemanticSegmentation

    src = Path(repo) / "segformer" / str(version) / "weights"
    if not (src / PROVENANCE).is_file():
        raise SystemExit(f"{src}/{PROVENANCE} not found: segformer version {version} has no weights in {repo}")
    info = json.loads((src / PROVENANCE).read_text())
    if not info.get("trained"):
        raise SystemExit(f"segformer version {version} was not trained here (no class weights to undo)")
    if (info.get("logit_adjustment") or {}).get("applied"):
        raise SystemExit(f"segformer version {version} already holds a logit adjustment (tau "
                         f"{info['logit_adjustment']['tau']})")
    pairs = find_pairs(data)
    if data_hash(pairs) != info["data"]["sha256"]:
        raise SystemExit(f"{data} is not the data segformer version {version} was trained on (sha256 "
                         f"{info['data']['sha256'][:12]}): its class weights and validation split come from that data")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    train_pairs, val_pairs = split(data, pairs)
    _, yt = load_set(train_pairs, info["input_size"])
    xv, yv = load_set(val_pairs, info["input_size"])
    model = SegformerForSemanticSegmentation.from_pretrained(src).to(dev)
    adj = fold_logit_adjustment(model, xv, yv, logit_adjust.class_weights(yt, len(LABELS), IGNORE), dev)
    ious = iou_per_label(predict(model, xv, dev), yv)
    log(f"version {version} + logit adjustment tau {adj['tau']}: validation garment mIoU "
        f"{info['validation']['garment_miou']} -> {garment_miou(ious):.4f}")
    model.to("cpu")
    keep = {k: v for k, v in info.items() if k not in ("version", "path")}
    return install(repo, model=model, info={
        **keep, "logit_adjustment": adj, "adjusted_from": {"version": version, "validation": info["validation"]},
        "validation": {"garment_miou": round(garment_miou(ious), 4), "iou": {k: round(v, 4) for k, v in ious.items()}},
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()})
