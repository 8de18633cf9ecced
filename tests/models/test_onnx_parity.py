"""ONNX export parity: the graphs ``lookstream models init`` exports (modeltools/onnx_export.py) served by a real
tritonserver through the CPU fast path (onnxruntime, OpenVINO) agree with the torch reference (modeltools/reference.py):
label maps on >= 99.9% of pixels, embeddings with cosine >= 0.9999 (issue 17's thresholds), at several batch sizes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from workers.local import model_repo

from test_triton_models import ENV, ROOT, SCENES, Server, person, run_reference  # noqa: E402  (same folder)

S = 256
MIN_LABEL_AGREEMENT = 0.999
MIN_COSINE = 0.9999

pytestmark = pytest.mark.skipif(
    not (ENV / "bin" / "python").exists(), reason=f"no model env at {ENV} (bash scripts/setup.sh)"
)


@pytest.fixture(scope="module")
def models_src(tmp_path_factory) -> Path:
    src = Path(shutil.copytree(ROOT / "triton_models", tmp_path_factory.mktemp("onnx") / "triton_models",
                               ignore=shutil.ignore_patterns("weights", "weights.*", "__pycache__")))
    model_repo.init_weights(src, ENV, random=True, tiny=True, seed=0)  # exports model.onnx too
    return src


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(3)
    images = np.stack([person(bg, cols, S) for bg, cols in SCENES])
    crops = rng.integers(0, 256, (12, 256, 256, 3), dtype=np.uint8)
    crops[:4] = np.stack([person(bg, cols, 256) for bg, cols in SCENES[:4]])
    return images, crops


@pytest.fixture(scope="module")
def torch_outputs(models_src, inputs, tmp_path_factory):
    images, crops = inputs
    tmp = tmp_path_factory.mktemp("ref")
    return (run_reference("segformer", models_src / "segformer" / "1" / "weights", images, tmp),
            run_reference("resnet50", models_src / "resnet50" / "1" / "weights", crops, tmp, batch=4))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_export_writes_dynamic_batch_graphs_and_records_parity(models_src):
    prov = model_repo.weights_provenance(models_src)
    for name in ("segformer", "resnet50"):
        w = models_src / name / "1" / "weights"
        assert (w / "model.onnx").is_file()
        onnx = prov[name]["onnx"]
        assert onnx["file"] == "model.onnx" and "batch" in onnx["dynamic_axes"]
    assert (models_src / "resnet50" / "1" / "weights" / "model.int8.onnx").is_file()  # the opt-in INT8 variant
    assert not (models_src / "segformer" / "1" / "weights" / "model.int8.onnx").exists()
    # The graphs' own signatures, read by onnx: symbolic batch axis, Triton's tensor names and dtypes.
    probe = (
        "import json, sys, onnx\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    g = onnx.load(p, load_external_data=False).graph\n"
        "    sig = lambda v: [v.name, v.type.tensor_type.elem_type,"
        " [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]]\n"
        "    out[p] = [sig(g.input[0]), sig(g.output[0])]\n"
        "print(json.dumps(out))\n"
    )
    files = [str(models_src / m / "1" / "weights" / "model.onnx") for m in ("segformer", "resnet50")]
    proc = subprocess.run([str(model_repo.env_python(ENV)), "-c", probe, *files], capture_output=True, text=True,
                          check=True, timeout=120)
    sig = json.loads(proc.stdout)
    uint8, fp32 = 2, 1  # onnx.TensorProto.UINT8 / FLOAT
    assert sig[files[0]] == [["IMAGE", uint8, ["batch", "height", "width", 3]], ["LABELS", uint8, ["batch", "height", "width"]]]
    assert sig[files[1]] == [["CROPS", uint8, ["batch", 256, 256, 3]], ["EMBEDDINGS", fp32, ["batch", 2048]]]


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_served_onnx_matches_torch(runtime, models_src, inputs, torch_outputs, tmp_path):
    images, crops = inputs
    ref_labels, ref_emb = torch_outputs
    srv = Server(models_src, tmp_path, runtime=runtime)
    try:
        srv.wait()
        from workers.adapters.triton_client import TritonModels

        with TritonModels(srv.url, timeout_s=120) as models:
            labels = models.segment(list(images))  # one batch of 6
            with ThreadPoolExecutor(3) as pool:  # and single requests, batched by Triton
                singles = np.stack(list(pool.map(lambda im: models.segment([im])[0], images[:3])))
            emb = models.embed(crops)
            emb_single = np.concatenate([models.embed(crops[i:i + 1]) for i in range(3)])
        log = srv.log()
    finally:
        srv.stop()
    assert f"segformer: runtime {runtime}" in log and f"resnet50: runtime {runtime}" in log  # not torch
    assert labels.shape == ref_labels.shape and labels.dtype == np.uint8
    agreement = (labels == ref_labels).mean()
    assert agreement >= MIN_LABEL_AGREEMENT, f"{runtime}: {agreement:.5f} of label pixels agree with torch"
    assert (singles == ref_labels[:3]).mean() >= MIN_LABEL_AGREEMENT
    assert emb.shape == ref_emb.shape and emb.dtype == np.float32
    assert cosine(emb, ref_emb).min() >= MIN_COSINE, f"{runtime}: min cosine {cosine(emb, ref_emb).min():.6f}"
    assert cosine(emb_single, ref_emb[:3]).min() >= MIN_COSINE
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)


def test_explicit_onnx_runtime_without_onnx_file_fails_loading(models_src, tmp_path):
    """RUNTIME=onnxruntime is a promise: without model.onnx the model refuses to load instead of running torch."""
    src = Path(shutil.copytree(models_src, tmp_path / "src"))
    (src / "resnet50" / "1" / "weights" / "model.onnx").unlink()
    srv = Server(src, tmp_path / "srv", runtime="onnxruntime", exit_on_error=False)
    try:
        srv.wait("/v2/health/live")
        srv.wait("/v2/models/segformer/ready")
        assert srv.http_get("/v2/models/resnet50/ready")[0] != 200
    finally:
        srv.stop()
    assert "RUNTIME=onnxruntime but no" in srv.log()
