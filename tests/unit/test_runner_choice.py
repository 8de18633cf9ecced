"""Which ONNX runtime a python-backend model instance takes (triton_models/_lib/runners.py ``choose``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "triton_models" / "_lib"))
import runners  # noqa: E402

AMX = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\n"


def test_bf16_units_are_read_from_the_cpu_flags():
    assert runners.bf16_cpu(AMX) and not runners.bf16_cpu(AVX2)
    assert not runners.bf16_cpu("model name\t: avx512_bf16 in a name is not a flag\n")


@pytest.mark.parametrize("cpu, want", [(AMX, "openvino"), (AVX2, "onnxruntime")])
def test_auto_takes_openvino_for_an_embedder_only_where_it_runs_bf16(tmp_path, monkeypatch, cpu, want):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"graph")
    monkeypatch.setattr(runners, "installed", lambda rt: True)
    real = runners.bf16_cpu
    monkeypatch.setattr(runners, "bf16_cpu", lambda cpuinfo=None: real(cpu))
    assert runners.choose("auto", "openvino", onnx, "CPU") == want
    assert runners.choose("openvino", "onnxruntime", onnx, "CPU") == "openvino"  # an explicit choice stands


def test_auto_without_an_onnx_file_serves_torch(tmp_path):
    assert runners.choose("auto", "openvino", tmp_path / "missing.onnx", "CPU") == "torch"
