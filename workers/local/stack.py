"""The embedded stack: broker, tritonserver, Milvus, Redis and the workers as local processes, and the one way
the CLI (``lookstream stack up``), the test fixtures and the bench start them.

- ``start_services`` (services.py) starts services with rollback: a failure stops what was already started.
- ``Namespace``: one isolated pipeline on running services (topics, consumer groups and Milvus collection with a
  unique suffix, its settings) and the workers started in it.
- ``WorkerProc``: a worker process (``python -m workers.app KIND``) with its ``kind``, ``metrics_url`` and
  ``wait_ready()``.
- ``Stack``: ``lookstream stack up|down|status|logs`` on one state folder. Everything binds to 127.0.0.1 on free
  (or configured) ports; the folder holds a log and a pid file per process plus ``stack.env`` (the LOOKSTREAM_*
  endpoints every CLI command reads, so ``lookstream ingest`` finds a stack started by ``lookstream stack up``).
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from workers.local.procs import (  # noqa: F401  (the stack's process API, used by tests and bench as stack.X)
    KilledProc, Proc, StackError, _alive, free_port, http_ok, wait_until,
)
from workers.local.services import (  # noqa: F401
    MODELS_SRC, ROOT, SETUP_HINT, Service, broker_ready, broker_service, durable_broker_service, milvus_ready,
    milvus_server_service, milvus_service, milvus_warm_up, model_env, redis_ready, redis_service, require_file,
    s3_service, site_packages, start_services, stop_services, triton_service,
)

WORKER_KINDS = ("segmentation", "embedding", "query")


def settings_from_env(env: dict[str, str], **overrides):
    """Settings from the LOOKSTREAM_* entries of ``env`` (a stack's or a namespace's), which win over the process
    environment and ``.env``; ``overrides`` (field names) win over both."""
    from workers.runtime.settings import Settings

    fields = Settings.model_fields
    kwargs = {}
    for k, v in env.items():
        name = k.removeprefix("LOOKSTREAM_").lower()
        if k.startswith("LOOKSTREAM_") and name in fields:
            kwargs[name] = v
    return Settings(**{**kwargs, **overrides})


# --------------------------------------------------------------------------- workers


@dataclass
class WorkerProc(Proc):
    """One worker process: ``python -m workers.app KIND``, the production entry point (as in the worker image)."""

    kind: str = ""
    metrics_url: str = ""

    def wait_ready(self, timeout: float = 90) -> float:
        """Seconds until its /readyz answered 200; StackError (with its log tail) if it died or time ran out."""
        return wait_until(lambda: http_ok(self.metrics_url + "/readyz"), timeout, f"worker {self.name}", self)


def worker_proc(kind: str, state: Path, env: dict[str, str], name: str | None = None) -> WorkerProc:
    """A worker (not started) on its own metrics port (LOOKSTREAM_METRICS_PORT in ``env``, else a free one)."""
    port = env.get("LOOKSTREAM_METRICS_PORT") or str(free_port())
    # glibc's default of 8 malloc arenas per core lets the gRPC / Kafka threads each grow their own heap.
    env = {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"), **env, "LOOKSTREAM_METRICS_PORT": port}
    return WorkerProc(name or f"worker-{kind}", [sys.executable, "-m", "workers.app", kind], state, env=env, cwd=ROOT,
                      kind=kind, metrics_url=f"http://127.0.0.1:{port}")


@dataclass
class Namespace:
    """One isolated pipeline on running services: its topics, consumer groups and Milvus collection carry the
    suffix ``ns``, so namespaces never see each other's data; the workers started in it are stopped together."""

    ns: str
    env: dict[str, str]
    state: Path
    procs: list[WorkerProc] = field(default_factory=list)

    @classmethod
    def create(cls, services_env: dict[str, str], state: Path, tag: str = "t", **extra_env: str) -> Namespace:
        """A fresh namespace (``<tag><random hex>``) over these services' settings; its topics are created."""
        from workers.runtime.kafka_io import ensure_topics

        ns = f"{tag}{uuid.uuid4().hex[:8]}"
        n = cls(ns, namespace_env(services_env, ns, **extra_env), state)
        ensure_topics(n.settings)
        return n

    @property
    def settings(self):
        return settings_from_env(self.env)

    def start_worker(self, kind: str, name: str | None = None, **env: str) -> WorkerProc:
        proc = worker_proc(kind, self.state, {**self.env, **env}, name=name or f"{self.ns}-{kind}-{len(self.procs)}")
        proc.start()
        self.procs.append(proc)
        return proc

    def start_workers(self, kinds: list[str], timeout: float = 120) -> list[WorkerProc]:
        procs = [self.start_worker(k) for k in kinds]
        for p in procs:
            p.wait_ready(timeout)
        return procs

    def wait_ready(self, proc: WorkerProc, timeout: float = 60) -> float:
        return proc.wait_ready(timeout)

    def workers(self, kind: str) -> list[WorkerProc]:
        """The running workers of one kind."""
        return [p for p in self.procs if p.kind == kind and p.pid() is not None]

    def stop_all(self) -> None:
        for p in self.procs:
            p.stop(timeout=20)


def namespace_env(services_env: dict[str, str], ns: str, **extra_env: str) -> dict[str, str]:
    """The settings of namespace ``ns``: every topic, the group ids and the collection carry its name."""
    return {
        **services_env,
        "LOOKSTREAM_TOPIC_PRODUCTS": f"{ns}.products",
        "LOOKSTREAM_TOPIC_GARMENTS": f"{ns}.garments",
        "LOOKSTREAM_TOPIC_INDEXED": f"{ns}.indexed",
        "LOOKSTREAM_TOPIC_LOOK_REQUESTS": f"{ns}.requests",
        "LOOKSTREAM_GROUP_ID_PREFIX": ns,
        "LOOKSTREAM_MILVUS_COLLECTION": f"garments_{ns}",
        **extra_env,
    }


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
        warm_up = (lambda svc: milvus_warm_up(svc.env["LOOKSTREAM_MILVUS_URI"])
                   if svc.name == "milvus" and milvus == "server" else 0.0)
        env: dict[str, str] = {"LOOKSTREAM_STATE_DIR": str(self.state)}
        try:
            env.update(start_services(services, echo=echo, after_start=warm_up))
            self._write_env(env)
            if workers:
                from workers.runtime.kafka_io import ensure_topics

                ensure_topics(settings_from_env(env))
                procs = [worker_proc(kind, self.state, env) for kind in WORKER_KINDS]
                for w in procs:
                    w.start()
                    env[f"LOOKSTREAM_{w.kind.upper()}_METRICS_URL"] = w.metrics_url
                for w in procs:
                    echo(f"  worker {w.kind:<12} ready in {w.wait_ready(90):5.1f} s")
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
