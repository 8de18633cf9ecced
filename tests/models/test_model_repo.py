"""Unit tests of workers/model_repo.py (no server, no torch)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from workers import model_repo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def src(tmp_path) -> Path:
    return Path(shutil.copytree(ROOT / "triton_models", tmp_path / "src",
                                ignore=shutil.ignore_patterns("weights", "weights.*", "__pycache__")))


def params(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in re.findall(r'parameters:\s*\{\s*key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"', text):
        out.setdefault(k, []).append(v)
    return out


def test_committed_configs_are_the_contract():
    seg = (ROOT / "triton_models" / "segformer" / "config.pbtxt").read_text()
    res = (ROOT / "triton_models" / "resnet50" / "config.pbtxt").read_text()
    assert 'name: "IMAGE"' in seg and 'name: "LABELS"' in seg and "dims: [ 512, 512, 3 ]" in seg
    assert "max_batch_size: 8" in seg and "TYPE_UINT8" in seg
    assert 'name: "CROPS"' in res and 'name: "EMBEDDINGS"' in res and "dims: [ 2048 ]" in res
    assert "max_batch_size: 32" in res and "TYPE_FP32" in res
    for text in (seg, res):
        assert 'backend: "python"' in text
        delay = int(re.search(r"max_queue_delay_microseconds:\s*(\d+)", text).group(1))
        assert 0 < delay <= 10_000


def test_render_cpu(src, tmp_path):
    env = tmp_path / "env"
    dst = model_repo.render_repository(src, tmp_path / "out", env_path=env, device="cpu", segformer_size=384,
                                       instances=2, torch_threads=3)
    assert sorted(p.name for p in dst.iterdir() if p.is_dir()) == ["resnet50", "segformer"]
    seg = (dst / "segformer" / "config.pbtxt").read_text()
    assert "dims: [ 384, 384, 3 ]" in seg and "dims: [ 384, 384 ]" in seg and "512" not in seg.split("# ---")[1]
    assert re.search(r"dims:\s*\[\s*512", seg) is None
    res = (dst / "resnet50" / "config.pbtxt").read_text()
    assert "dims: [ 256, 256, 3 ]" in res and "dims: [ 2048 ]" in res  # not touched by the SegFormer size
    for text in (seg, res):
        assert len(re.findall(r"(?m)^instance_group", text)) == 1
        assert "instance_group [ { count: 2 kind: KIND_CPU } ]" in text
        p = params(text)
        assert p == {"EXECUTION_ENV_PATH": [str(env.absolute())], "TORCH_THREADS": ["3"]}  # no duplicates
    for name in ("segformer", "resnet50"):
        link = dst / name / "1"
        assert link.is_symlink() and link.resolve() == (src / name / "1").resolve()
        assert (link / "model.py").is_file()
    # Weights written into the source later are what the rendered repository serves.
    (src / "segformer" / "1" / "weights").mkdir()
    assert (dst / "segformer" / "1" / "weights").is_dir()


def test_render_gpu_and_rerender_replaces(src, tmp_path):
    out = tmp_path / "out"
    model_repo.render_repository(src, out, env_path=tmp_path / "env", device="cpu")
    model_repo.render_repository(src, out, env_path=tmp_path / "env", device="gpu", instances=1)
    for name in ("segformer", "resnet50"):
        text = (out / name / "config.pbtxt").read_text()
        assert "kind: KIND_GPU" in text and "KIND_CPU" not in text


def test_render_refuses_a_foreign_folder_and_bad_arguments(src, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        model_repo.render_repository(src, foreign, env_path=tmp_path / "env")
    assert (foreign / "keep.txt").exists()
    with pytest.raises(ValueError):
        model_repo.render_repository(src, tmp_path / "o1", env_path=tmp_path / "env", device="tpu")
    with pytest.raises(ValueError):
        model_repo.render_repository(src, tmp_path / "o2", env_path=tmp_path / "env", instances=0)
    with pytest.raises(FileNotFoundError):
        model_repo.render_repository(tmp_path / "empty", tmp_path / "o3", env_path=tmp_path / "env")


def test_render_config_replaces_existing_parameters():
    text = ('name: "x"\nbackend: "python"\ninput [ { name: "IMAGE" dims: [ 64, 64, 3 ] } ]\n'
            'output [ { name: "LABELS" dims: [ 64, 64 ] } ]\n'
            'instance_group [\n  { count: 4\n kind: KIND_GPU }\n]\n'
            'parameters: { key: "TORCH_THREADS" value: { string_value: "9" } }\n'
            'parameters: { key: "EXECUTION_ENV_PATH" value: { string_value: "/old" } }\n'
            'parameters: { key: "OTHER" value: { string_value: "kept {braces}" } }\n')
    out = model_repo.render_config(text, model="segformer", env_path=Path("/new/env"), segformer_size=128)
    assert params(out) == {"OTHER": ["kept {braces}"], "EXECUTION_ENV_PATH": ["/new/env"], "TORCH_THREADS": ["1"]}
    assert "dims: [ 128, 128, 3 ]" in out and "dims: [ 128, 128 ]" in out
    assert out.count("instance_group") == 1 and "KIND_CPU" in out


def test_weights_provenance_reads_lookstream_json(src):
    prov = model_repo.weights_provenance(src)
    assert prov["segformer"]["missing"] is True and "lookstream models init --random" in prov["segformer"]["hint"]
    w = src / "resnet50" / "1" / "weights"
    w.mkdir()
    (w / "lookstream.json").write_text('{"source": "random (seed 0)", "random": true, "tiny": false}')
    prov = model_repo.weights_provenance(src)
    assert prov["resnet50"] == {"source": "random (seed 0)", "random": True, "tiny": False}
    lines = model_repo.provenance_summary(prov)
    assert any(line.startswith("resnet50: WARNING RANDOM") for line in lines)
    assert any(line.startswith("segformer: NO WEIGHTS") for line in lines)


def test_missing_model_env_names_the_setup_script(src, tmp_path):
    with pytest.raises(model_repo.ModelEnvError, match="scripts/setup.sh"):
        model_repo.init_weights(src, tmp_path / "no-env", random=True, tiny=True)
    with pytest.raises(model_repo.ModelEnvError, match="scripts/setup.sh"):
        model_repo.pull_weights(src, tmp_path / "no-env")
    with pytest.raises(model_repo.ModelEnvError, match="scripts/setup.sh"):
        model_repo.backend_dir(tmp_path / "no-env", tmp_path / "be")
    with pytest.raises(ValueError, match="lookstream models pull"):
        model_repo.init_weights(src, tmp_path / "no-env", random=False)


@pytest.mark.skipif(not (model_repo.default_env_path() / "bin" / "python").exists(), reason="no model env")
def test_backend_dir_and_command(tmp_path):
    env = model_repo.default_env_path()
    be = model_repo.backend_dir(env, tmp_path / "be")
    names = sorted(p.name for p in (be / "python").iterdir())
    assert names == ["libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py"]
    assert all((be / "python" / n).exists() for n in names)
    model_repo.backend_dir(env, tmp_path / "be")  # idempotent
    argv, penv = model_repo.tritonserver_command(env, tmp_path / "repo", be, 1, 2, 3)
    assert Path(argv[0]).name == "tritonserver" and Path(argv[0]).exists()
    assert "--model-control-mode=none" in argv and "--exit-on-error=true" in argv
    assert {"--http-port=1", "--grpc-port=2", "--metrics-port=3", "--http-address=127.0.0.1"} <= set(argv)
    assert "nvidia_pytriton.libs" in penv["LD_LIBRARY_PATH"].split(":")[0]
    argv, _ = model_repo.tritonserver_command(env, tmp_path / "repo", be, 1, 2, 3, exit_on_error=False)
    assert "--exit-on-error=false" in argv
