"""The colour probe (``init --random --tiny`` only, recorded in lookstream.json as ``"classifier": "colour-probe"``):
a randomly initialised SegFormer labels a synthetic image mostly with body-part classes (Hair, Face, legs), which
the product ignores, so an offline end-to-end run would find no garments. So after the random init, and with the
random encoder and decode MLPs left untouched, ``--tiny`` refits ONLY the decode head's final 1x1 classifier
(128 -> 18) as a softmax regression on the random features of seeded synthetic images (plain low-saturation
backgrounds with 2-5 saturated rectangles; ~20 s on 2 cores). Its targets come from a fixed colour rule,
``COLOUR_RULE``: low saturation (< 0.3) or dark (value < 0.15) -> Background; otherwise the nearest of six hues ->
red Upper-clothes, yellow Dress, green Skirt, cyan Bag, blue Pants, magenta Hat. The 11 other classes get zero
weights and a bias of -100, so they never win. The result is deterministic for a seed: a "person" drawn as 2-4
coloured garment blocks on a plain background is segmented into those garment labels, by colour. It is a test
fixture with a declared behaviour, not a clothes parser: real photographs give colour blobs.
"""

from __future__ import annotations

import colorsys

import numpy as np

from weights import IMAGENET_MEAN, IMAGENET_STD, LABEL2ID, LABELS

COLOUR_RULE = {0: "Upper-clothes", 60: "Dress", 120: "Skirt", 180: "Bag", 240: "Pants", 300: "Hat"}
MIN_SATURATION = 0.3
MIN_VALUE = 0.15


def colour_label(rgb: np.ndarray) -> np.ndarray:
    """COLOUR_RULE applied per pixel: uint8 [..., 3] -> label ids [...]."""
    x = rgb.astype(np.float32) / 255.0
    mx, mn = x.max(-1), x.min(-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    d = np.maximum(mx - mn, 1e-6)
    hue = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) * 60.0
    centres = np.array(sorted(COLOUR_RULE))
    dist = np.abs(((hue[..., None] - centres) + 180.0) % 360.0 - 180.0)
    ids = np.array([LABEL2ID[COLOUR_RULE[c]] for c in centres])[dist.argmin(-1)]
    return np.where((sat < MIN_SATURATION) | (mx < MIN_VALUE), 0, ids).astype(np.int64)


def synthetic_scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """A plain low-saturation background with 2-5 saturated rectangles and mild noise."""
    bg = rng.uniform(0.55, 1.0) if rng.random() < 0.6 else rng.uniform(0.05, 0.55)
    tint = rng.uniform(-0.04, 0.04, size=3)
    img = np.empty((size, size, 3), np.float32)
    img[:] = np.clip(bg + tint, 0, 1)
    for _ in range(rng.integers(2, 6)):
        h = rng.uniform(0.12, 0.55) * size
        w = rng.uniform(0.12, 0.55) * size
        y0 = rng.uniform(0, size - h)
        x0 = rng.uniform(0, size - w)
        hue = rng.uniform(0, 1)
        colour = colorsys.hsv_to_rgb(hue, rng.uniform(0.45, 1.0), rng.uniform(0.35, 1.0))
        img[int(y0): int(y0 + h), int(x0): int(x0 + w)] = colour
    img += rng.normal(0, 0.015, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _normalise(batch_uint8: np.ndarray):
    import torch

    x = torch.from_numpy(batch_uint8).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _probe_features(model, images: np.ndarray):
    """Inputs of the decode head's classifier, [N*h*w, C], and their pixel positions (h, w = S/4)."""
    import torch

    captured = {}
    hook = model.decode_head.classifier.register_forward_hook(lambda m, i, o: captured.__setitem__("x", i[0]))
    try:
        with torch.no_grad():
            model(pixel_values=_normalise(images))
    finally:
        hook.remove()
    x = captured["x"]  # [N, C, h, w]
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]), x.shape[2:]


def fit_colour_probe(
    model, seed: int, size: int = 256, n_images: int = 64, pixels: int = 65536, steps: int = 300
) -> dict:
    """Refit the decode head's classifier to COLOUR_RULE (see the module docstring). Returns fit statistics."""
    import torch

    rng = np.random.default_rng(seed + 1)
    feats, targets = [], []
    for start in range(0, n_images, 8):
        imgs = np.stack([synthetic_scene(rng, size) for _ in range(8)])
        f, (h, w) = _probe_features(model, imgs)
        stride = size // h
        # Target: the colour rule at the centre of each feature cell.
        lab = colour_label(imgs[:, stride // 2:: stride, stride // 2:: stride][:, :h, :w])
        feats.append(f)
        targets.append(torch.from_numpy(lab.reshape(-1)))
    x = torch.cat(feats)
    y = torch.cat(targets)
    pick = torch.from_numpy(rng.permutation(len(y))[:pixels])  # a seeded subsample keeps the fit ~5 s
    x, y = x[pick], y[pick]
    classes = sorted({0, *(LABEL2ID[v] for v in COLOUR_RULE.values())})
    remap = torch.full((len(LABELS),), -1, dtype=torch.long)
    remap[classes] = torch.arange(len(classes))
    yc = remap[y]
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-4)
    xs = (x - mu) / sd
    torch.manual_seed(seed)
    lin = torch.nn.Linear(x.shape[1], len(classes))
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    # Balance classes: the background dominates the pixels.
    counts = torch.bincount(yc, minlength=len(classes)).float().clamp_min(1)
    weight = (counts.sum() / counts) / len(classes)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(lin(xs), yc)
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (lin(xs).argmax(1) == yc).float().mean().item()
        # Fold the feature standardisation into the 1x1 conv: W' = W / sd, b' = b - W' mu.
        w_fold = lin.weight / sd
        b_fold = lin.bias - (w_fold * mu).sum(1)
        conv = model.decode_head.classifier
        conv.weight.zero_()
        conv.bias.fill_(-100.0)
        for k, cls in enumerate(classes):
            conv.weight[cls, :, 0, 0] = w_fold[k]
            conv.bias[cls] = b_fold[k]
    return {"train_pixel_accuracy": round(acc, 4), "images": n_images, "size": size, "pixels": len(y),
            "steps": steps, "final_loss": round(loss.item(), 4)}


# ----------------------------------------------------------------------------------------------- init
