"""Class weights for the segmenter's loss, and the logit adjustment that undoes their prior shift after training.

The trainer weights each label's loss by ~1/sqrt(frequency) so that small garments (hats, bags, shoes) count at all
(uniform weights: the model says Background). The same weights shift every decision towards the rare labels: on
held-out rendered street looks a trained tiny SegFormer labelled 91 % of the true hat pixels Hat but reached an IoU of
0.48, most of its hat pixels being somebody's hair or background. Adding ``-tau * log(w_c)`` to label c's logit
(logit adjustment, Menon et al. 2021, "Long-tail learning via logit adjustment") moves the decisions back; ``tau`` is
chosen on the validation split (1 is the shift the weighting made in theory) and folded into the classifier's bias,
so the served model needs no change. numpy only: the trainer passes its own predict function.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

TAUS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)


def class_weights(labels: np.ndarray, n_classes: int, ignore: int) -> np.ndarray:
    """~1/sqrt(frequency) over the labels present (0 for absent ones), normalised to mean 1 over the present ones."""
    freq = np.bincount(labels[labels != ignore].ravel(), minlength=n_classes).astype(np.float64)
    w = np.where(freq > 0, 1.0 / np.sqrt(np.maximum(freq, 1.0) / max(freq.sum(), 1.0)), 0.0)
    return w / w[freq > 0].mean()


def bias_for(weights: np.ndarray, tau: float) -> np.ndarray:
    """The per-label logit offset ``-tau * log(w)`` (absent labels, w = 0, are left alone)."""
    return (-tau * np.log(np.where(weights > 0, weights, 1.0))).astype(np.float32)


def choose_tau(predict: Callable[[np.ndarray], np.ndarray], labels: np.ndarray, weights: np.ndarray,
               score: Callable[[np.ndarray, np.ndarray], float], taus=TAUS) -> tuple[float, dict[float, float]]:
    """The tau whose offset scores best on (``predict(offset)``, ``labels``); ties go to the smaller shift.
    Returns it and every tau's score."""
    scores = {float(t): float(score(predict(bias_for(weights, t)), labels)) for t in taus}
    best = max(scores, key=lambda t: (round(scores[t], 6) if np.isfinite(scores[t]) else -np.inf, -t))
    return best, scores
