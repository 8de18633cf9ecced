"""The segmenter trainer's pure logic: class weights and logit adjustment (modeltools/logit_adjust.py, numpy only),
its CPU thread choice, the CLI's refusals."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location(
    "logit_adjust", Path(__file__).resolve().parents[2] / "modeltools" / "logit_adjust.py")
la = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(la)


def test_class_weights_favour_rare_labels_and_skip_absent_and_ignored_ones():
    y = np.array([0] * 900 + [1] * 100 + [255] * 50 + [3] * 0)
    w = la.class_weights(y, 4, ignore=255)
    assert w[2] == w[3] == 0.0  # absent labels: no weight, no offset
    assert w[1] > w[0] > 0
    assert np.isclose(w[1] / w[0], 3.0)  # 1/sqrt(frequency): 9x rarer -> 3x the weight
    assert np.isclose(w[[0, 1]].mean(), 1.0)
    assert np.all(la.bias_for(w, 1.0)[[2, 3]] == 0.0)


def test_choose_tau_undoes_the_prior_shift_of_the_weighting():
    """Logits that carry +log(w) (what weighted training does to a rare label) are best read with tau = 1."""
    rng = np.random.default_rng(0)
    q = rng.beta(0.3, 2.5, (200, 16, 16))  # each pixel's true chance of the rare label 1 (~11 % on average)
    y = (rng.random(q.shape) < q).astype(np.uint8)
    w = la.class_weights(y, 2, ignore=255)
    clean = np.log(np.stack([1 - q, q], 1) + 1e-9).astype(np.float32)  # calibrated: its argmax is Bayes-optimal
    logits = clean + np.log(w).astype(np.float32).reshape(1, 2, 1, 1)

    def accuracy(pred, labels):
        return (pred == labels).mean()

    def read(off):
        return (logits + off.reshape(1, -1, 1, 1)).argmax(1)

    tau, scores = la.choose_tau(read, y, w, accuracy)
    assert set(scores) == set(la.TAUS)
    assert tau == 1.0, scores  # the shift it undoes
    assert scores[1.0] > scores[0.0], scores


def test_choose_tau_keeps_the_smaller_shift_on_a_tie():
    y = np.zeros((2, 4, 4), np.uint8)
    tau, scores = la.choose_tau(lambda off: y, y, np.array([1.0, 2.0]), lambda p, t: 1.0)
    assert tau == 0.0 and len(set(scores.values())) == 1


def test_train_cli_refuses_adjust_without_its_data(capsys):
    """`--adjust VERSION` needs the data VERSION was trained on (class weights, validation split), not --default."""
    from workers.local import cli

    assert cli.main(["train", "segmenter", "--default", "--adjust", "2"]) == 2
    assert "--adjust VERSION takes DATA" in capsys.readouterr().err
    assert cli.main(["train", "segmenter", "--adjust", "2"]) == 2
    assert "needs DATA" in capsys.readouterr().err


def test_training_threads_take_every_core_only_on_an_idle_machine():
    spec = importlib.util.spec_from_file_location(
        "train_segmenter", Path(__file__).resolve().parents[2] / "modeltools" / "train_segmenter.py")
    ts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ts)  # numpy and Pillow at import; torch only inside train()

    assert ts.train_threads(2, 0.1) == 2 and ts.train_threads(2, 3.0) == 1 and ts.train_threads(1, 3.0) == 1
    assert ts.train_threads(16, 0.0) == 4 and ts.train_threads(16, 9.0) == 4
    assert ts.train_threads(2, 0.1, asked=1) == 1 and ts.train_threads(2, 9.0, asked=2) == 2
