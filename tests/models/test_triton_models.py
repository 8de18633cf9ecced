"""The Triton models end to end: a real tritonserver (from the model env's nvidia-pytriton) started by this module
on free loopback ports, over a rendered copy of triton_models/ with declared random weights (tiny SegFormer).

The test process has no torch: the in-process reference runs with the model env's python (modeltools/reference.py).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from workers.local import model_repo
from workers.runtime.errors import DependencyError, PoisonError

ROOT = Path(__file__).resolve().parents[2]
ENV = model_repo.default_env_path()
S = 256  # rendered SegFormer size (the committed config says 512: this also checks the substitution)
LABELS = [
    "Background", "Hat", "Hair", "Sunglasses", "Upper-clothes", "Skirt", "Pants", "Dress", "Belt",
    "Left-shoe", "Right-shoe", "Face", "Left-leg", "Right-leg", "Left-arm", "Right-arm", "Bag", "Scarf",
]
BODY = {2, 3, 11, 12, 13, 14, 15}  # Hair, Sunglasses, Face, legs, arms: not garments

if not (ENV / "bin" / "python").exists():  # a missing prerequisite is a failure, never a skip
    pytest.fail(f"no model env at {ENV}: run bash scripts/setup.sh", pytrace=False)

import tritonclient.grpc as grpcclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from workers.adapters.triton_client import TritonModels  # noqa: E402


# ----------------------------------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_models_without_weights(dst: Path) -> Path:
    shutil.copytree(ROOT / "triton_models", dst,  # without weights and without locally trained versions (2/, ...)
                    ignore=shutil.ignore_patterns("weights", "weights.*", "__pycache__", "[2-9]", "[1-9][0-9]*"))
    return dst


class Server:
    def __init__(self, repo_src: Path, work: Path, *, exit_on_error: bool = True, runtime: str = "torch"):
        # runtime torch: these tests compare with the torch reference exactly; test_onnx_parity.py checks the
        # ONNX runtimes (the default when model.onnx exists) against it with tolerances.
        self.work = work
        self.repo = model_repo.render_repository(repo_src, work / "repo", env_path=ENV, device="cpu",
                                                 segformer_size=S, instances=1, torch_threads=1, runtime=runtime,
                                                 models=["segformer", "resnet50"])  # EfficientNet: test_offline_models
        be = model_repo.backend_dir(ENV, work / "backends")
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        argv, env = model_repo.tritonserver_command(ENV, self.repo, be, self.http, self.grpc, self.metrics,
                                                    exit_on_error=exit_on_error)
        self.log_path = work / "tritonserver.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def http_get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError:
            return 0, b""

    def http_get_metrics(self) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=5) as r:
                return r.status, r.read()
        except OSError:
            return 0, b""

    def http_post(self, path: str, body: dict) -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()

    def wait(self, path: str = "/v2/health/ready", timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited ({self.proc.returncode}):\n{self.log()[-4000:]}")
            if self.http_get(path)[0] == 200:
                return
            time.sleep(0.25)
        raise TimeoutError(f"tritonserver not answering {path} within {timeout} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def run_reference(model: str, weights: Path, data: np.ndarray, tmp: Path, batch: int = 1) -> np.ndarray:
    src, out = tmp / f"{model}-in.npy", tmp / f"{model}-out.npy"
    np.save(src, data)
    subprocess.run(
        [str(model_repo.env_python(ENV)), str(ROOT / "modeltools" / "reference.py"), "infer", model,
         "--weights", str(weights), "--input", str(src), "--output", str(out), "--batch", str(batch)],
        check=True, capture_output=True, timeout=300,
    )
    return np.load(out)


def person(bg, colours, size: int = S) -> np.ndarray:
    """A 'person' drawn as garment blocks (hat, top, trousers, bag) on a plain background."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = bg
    boxes = [(0.23, 0.55, 0.33, 0.66), (0.55, 0.92, 0.37, 0.63), (0.08, 0.22, 0.40, 0.60), (0.40, 0.65, 0.70, 0.88)]
    for (y0, y1, x0, x1), c in zip(boxes, colours):
        img[int(y0 * size): int(y1 * size), int(x0 * size): int(x1 * size)] = c
    return img


RED, BLUE, GREEN, YELLOW, MAGENTA, CYAN = (200, 40, 40), (40, 60, 200), (40, 160, 60), (220, 200, 40), (200, 40, 200), (30, 180, 190)
SCENES = [
    ((235, 235, 235), [RED, BLUE]),
    ((250, 250, 250), [RED, BLUE, MAGENTA]),
    ((225, 220, 210), [YELLOW, GREEN, MAGENTA, CYAN]),
    ((240, 240, 240), [GREEN, RED, MAGENTA, CYAN]),
    ((245, 245, 245), [CYAN, YELLOW]),
    ((230, 230, 235), [BLUE, GREEN, RED]),
]


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def models_src(tmp_path_factory) -> Path:
    src = copy_models_without_weights(tmp_path_factory.mktemp("models") / "triton_models")
    model_repo.init_weights(src, ENV, random=True, tiny=True, seed=0)
    return src


@pytest.fixture(scope="module")
def server(models_src, tmp_path_factory):
    srv = Server(models_src, tmp_path_factory.mktemp("triton"))
    try:
        srv.wait()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server):
    c = grpcclient.InferenceServerClient(server.url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def models(server):
    m = TritonModels(server.url, timeout_s=120)
    yield m
    m.close()


def stats(client, model: str) -> tuple[int, int]:
    s = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))


# ----------------------------------------------------------------------------------------------- tests
def test_metadata_names_shapes_dtypes(client, models):
    seg = client.get_model_metadata("segformer", as_json=True)
    assert [(t["name"], t["datatype"], t["shape"]) for t in seg["inputs"]] == [("IMAGE", "UINT8", ["-1", str(S), str(S), "3"])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in seg["outputs"]] == [("LABELS", "UINT8", ["-1", str(S), str(S)])]
    res = client.get_model_metadata("resnet50", as_json=True)
    assert [(t["name"], t["datatype"], t["shape"]) for t in res["inputs"]] == [("CROPS", "UINT8", ["-1", "256", "256", "3"])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in res["outputs"]] == [("EMBEDDINGS", "FP32", ["-1", "2048"])]
    seg_cfg = client.get_model_config("segformer", as_json=True)["config"]
    res_cfg = client.get_model_config("resnet50", as_json=True)["config"]
    assert (seg_cfg["max_batch_size"], res_cfg["max_batch_size"]) == (8, 32)
    for cfg in (seg_cfg, res_cfg):
        assert 0 < int(cfg["dynamic_batching"]["max_queue_delay_microseconds"]) <= 10_000
        assert cfg["instance_group"][0]["kind"] == "KIND_CPU"
        assert cfg["parameters"]["EXECUTION_ENV_PATH"]["string_value"] == str(ENV.absolute())
        assert cfg["parameters"]["TORCH_THREADS"]["string_value"] == "1"
    assert models.ready()
    assert models.segformer_size == S and models.crop_shape == (256, 256, 3)
    assert models.max_batch("segformer") == 8 and models.max_batch("resnet50") == 32


def pending(server, model: str) -> float:
    """Requests waiting in Triton's queue for ``model`` right now (nv_inference_pending_request_count)."""
    _, body = server.http_get_metrics()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
               if line.startswith("nv_inference_pending_request_count{") and f'model="{model}"' in line)


def send_behind_a_busy_instance(server, client, model: str, call, busy, inputs):
    """Occupy the model's only instance with a full batch (``busy``), then send ``inputs`` one request each.

    They can only wait in Triton's queue meanwhile, however loaded the machine is; the test sees them all
    queued at once (the pending-request gauge), so the dynamic batcher must combine them. Returns
    (results, inferences, executions, most queued at once) for the singles plus the busy batch."""
    before = stats(client, model)
    most = 0.0
    with ThreadPoolExecutor(len(inputs) + 1) as pool:
        first = pool.submit(call, busy)
        futures = [pool.submit(call, x) for x in inputs]
        while not all(f.done() for f in futures):
            most = max(most, pending(server, model))
            time.sleep(0.02)
        first.result(timeout=120)
        results = [f.result(timeout=120) for f in futures]
    after = stats(client, model)
    return results, after[0] - before[0], after[1] - before[1], most


@pytest.fixture(scope="module")
def segmented(server, client, models):
    """12 single-image requests queued together: (images, label maps, statistics delta)."""
    images = np.stack([person(bg, cols) for bg, cols in SCENES] * 2)
    busy = np.stack([images[0]] * 8)  # max_batch_size 8: nothing can join it
    labels, inferences, executions, most = send_behind_a_busy_instance(
        server, client, "segformer", lambda ims: models.segment(list(ims)), busy, [im[None] for im in images])
    return images, np.concatenate(labels), (inferences, executions, most)


def test_segment_concurrent_requests_are_batched(segmented):
    images, labels, (inferences, executions, most) = segmented
    assert labels.shape == (len(images), S, S) and labels.dtype == np.uint8
    assert inferences == 8 + len(images)
    assert most >= 2, f"the single requests were never queued together ({most})"
    # requests queued together must share executions: fewer executions than requests (1 busy + 12 singles)
    assert executions < 1 + len(images), f"no dynamic batching: {executions} executions for {inferences} inferences"


def test_segment_equals_in_process_reference(segmented, models_src, tmp_path):
    images, labels, _ = segmented
    ref = run_reference("segformer", models_src / "segformer" / "1" / "weights", images, tmp_path)
    assert ref.shape == labels.shape and ref.dtype == np.uint8
    assert np.array_equal(ref, labels), f"{(ref != labels).sum()} pixels differ"


def test_tiny_random_segformer_finds_the_garment_blocks(segmented):
    """The declared colour probe of the tiny random model: 2-4 garment labels on a drawn person, no body parts."""
    images, labels, _ = segmented
    for (bg, colours), lab in zip(SCENES, labels):
        counts = np.bincount(lab.ravel(), minlength=len(LABELS)) / lab.size
        garments = {i for i in range(1, len(LABELS)) if counts[i] >= 0.01 and i not in BODY}
        assert 2 <= len(garments) <= 4, {LABELS[i]: round(counts[i], 3) for i in np.nonzero(counts)[0]}
        assert len(garments) >= len(colours) - 1
        assert counts[sorted(BODY)].sum() < 0.01
        assert counts[0] > 0.4  # the plain background stays background
    # Deterministic and colour-driven: the same scene twice gives the same map; red is Upper-clothes, blue Pants.
    assert np.array_equal(labels[0], labels[len(SCENES)])
    top = labels[0][int(0.3 * S): int(0.5 * S), int(0.4 * S): int(0.6 * S)]
    legs = labels[0][int(0.6 * S): int(0.9 * S), int(0.42 * S): int(0.58 * S)]
    assert (top == LABELS.index("Upper-clothes")).mean() > 0.9
    assert (legs == LABELS.index("Pants")).mean() > 0.9


def test_segment_more_than_max_batch_in_one_call(models, segmented):
    images, labels, _ = segmented
    again = models.segment(list(images))  # 12 > max_batch_size 8: two chunks
    assert np.array_equal(again, labels)


def test_embed_batched_equals_reference_and_unit_norm(server, client, models, models_src, tmp_path):
    rng = np.random.default_rng(7)
    crops = rng.integers(0, 256, (36, 256, 256, 3), dtype=np.uint8)
    crops[:8] = np.stack([person(bg, cols, 256) for bg, cols in SCENES[:4]] * 2)
    emb = models.embed(crops)  # 36 > 32: two chunks
    assert emb.shape == (36, 2048) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    single, inferences, executions, most = send_behind_a_busy_instance(
        server, client, "resnet50", models.embed, crops[:32], [c[None] for c in crops[:16]])
    single = np.concatenate(single)
    assert inferences == 32 + 16 and most >= 2, most
    assert executions < 1 + 16, executions  # the queued singles shared executions

    ref = run_reference("resnet50", models_src / "resnet50" / "1" / "weights", crops, tmp_path, batch=8)
    np.testing.assert_allclose(emb, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(single, ref[:16], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "model,name,arr,fragment",
    [
        ("segformer", "IMAGE", np.zeros((1, S, S + 8, 3), np.uint8), "unexpected shape"),
        ("segformer", "IMAGE", np.zeros((1, S, S, 3), np.float32), "data-type"),
        ("resnet50", "CROPS", np.zeros((2, 224, 224, 3), np.uint8), "unexpected shape"),
        ("resnet50", "CROPS", np.zeros((2, 256, 256), np.uint8), "unexpected shape"),
        ("resnet50", "CROPS", np.zeros((33, 256, 256, 3), np.uint8), "batch-size must be <= 32"),
    ],
)
def test_bad_input_is_a_clear_error_and_the_server_stays_up(client, models, server, model, name, arr, fragment):
    inp = grpcclient.InferInput(name, list(arr.shape), "UINT8" if arr.dtype == np.uint8 else "FP32")
    inp.set_data_from_numpy(arr)
    with pytest.raises(InferenceServerException) as exc:
        client.infer(model, [inp])
    assert exc.value.status() == "StatusCode.INVALID_ARGUMENT"
    msg = exc.value.message()
    assert fragment in msg and (name in msg or repr(model) in msg), msg
    # The typed client: server-side rejections and client-side checks are PoisonError.
    with pytest.raises(PoisonError):
        models._infer_one(model, name, "LABELS" if model == "segformer" else "EMBEDDINGS", arr)
    with pytest.raises(PoisonError, match="expected uint8"):
        models.segment([np.zeros((S, S, 3), np.float32)]) if model == "segformer" else models.embed(arr.astype(np.float32))
    assert server.proc.poll() is None and models.ready()
    ok = models.embed(np.zeros((1, 256, 256, 3), np.uint8))
    assert ok.shape == (1, 2048)


def test_unreachable_server_is_a_dependency_error():
    m = TritonModels(f"127.0.0.1:{free_port()}", timeout_s=3)
    assert m.ready() is False
    with pytest.raises(DependencyError):
        m.embed(np.zeros((1, 256, 256, 3), np.uint8))
    with pytest.raises(DependencyError):
        m.segment([np.zeros((S, S, 3), np.uint8)])


def test_random_weights_are_flagged(models_src, server):
    prov = model_repo.weights_provenance(models_src)
    assert prov["segformer"]["random"] is True and prov["segformer"]["tiny"] is True
    assert prov["segformer"]["classifier"] == "colour-probe"
    assert prov["resnet50"]["random"] is True
    assert any("RANDOM" in line for line in model_repo.provenance_summary(prov))
    log = server.log()
    assert "segformer is serving DECLARED RANDOM WEIGHTS" in log
    assert "resnet50 is serving DECLARED RANDOM WEIGHTS" in log


def test_missing_weights_fail_the_load_naming_the_command(tmp_path):
    src = copy_models_without_weights(tmp_path / "triton_models")
    assert model_repo.weights_provenance(src)["segformer"]["missing"] is True
    srv = Server(src, tmp_path / "server", exit_on_error=False)
    try:
        srv.wait("/v2/health/live", timeout=120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            index = json.loads(srv.http_post("/v2/repository/index", {})[1])
            if index and all(m.get("state") == "UNAVAILABLE" for m in index) and len(index) == 2:
                break
            time.sleep(0.5)
        by_name = {m["name"]: m for m in index}
        assert set(by_name) == {"segformer", "resnet50"}
        for name, entry in by_name.items():
            assert entry["state"] == "UNAVAILABLE"
            assert "lookstream models init --random" in entry["reason"], entry
            assert "lookstream models pull" in entry["reason"]
        assert srv.http_get("/v2/health/ready")[0] != 200  # strict readiness: not ready without its models
        assert "no weights" in srv.log()
    finally:
        srv.stop()
