"""The benchmark's own embedded stack and the measuring helpers ``python -m bench`` shares.

The stack is the one the tests start (workers/local/stack.py: Tansu, redis-server, Milvus Lite over TCP, tritonserver),
in a temporary state folder on free loopback ports, with model weights from ``prepare_weights``. Each measurement
runs in its own namespace (topics, consumer groups and Milvus collection with a unique suffix) with its own worker
processes, so runs never see each other's data or metrics.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"

from workers.local import model_repo, stack  # noqa: E402
from workers.runtime.settings import Settings  # noqa: E402


# --------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class Weights:
    src: Path  # a model source repository (config.pbtxt + 1/model.py + 1/weights)
    variant: str  # "tiny" | "full"
    origin: str  # "random" | "pulled" | "mixed"
    detail: str  # one line for tables

    @property
    def segformer(self) -> str:
        return "segformer-tiny" if self.variant == "tiny" else "segformer-b2"


def _sync_code(dst: Path) -> None:
    """Copy config.pbtxt / model.py etc. from triton_models/ into a cached source, keeping its weights."""
    for model_dir in (ROOT / "triton_models").iterdir():
        if not (model_dir / "config.pbtxt").exists() and model_dir.name != "_lib":  # _lib: the ONNX runners
            continue
        for p in model_dir.rglob("*"):
            rel = p.relative_to(ROOT / "triton_models")
            if "weights" in rel.parts or "__pycache__" in rel.parts or p.is_dir():
                continue
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dst / rel)


def prepare_weights(full: bool = False, use_repo_weights: bool = False, fresh: bool = False,
                    echo=print) -> Weights:
    """Declared random weights (tiny by default, SegFormer-b2 with ``full``), cached under bench/out/weights/;
    or, with ``use_repo_weights``, the weights already in triton_models/ (pulled or not: the provenance says)."""
    env = model_repo.default_env_path()
    model_repo.env_python(env)
    if use_repo_weights:
        prov = model_repo.weights_provenance(ROOT / "triton_models")
        missing = [m for m, p in prov.items() if p.get("missing")]
        if missing:
            raise SystemExit(f"--use-repo-weights: no weights for {', '.join(missing)} in triton_models/ "
                             f"(run `lookstream models pull`)")
        randoms = {m for m, p in prov.items() if p.get("random")}
        origin = "random" if len(randoms) == len(prov) else ("pulled" if not randoms else "mixed")
        seg = prov.get("segformer", {})
        variant = "tiny" if seg.get("tiny") else "full"
        detail = "; ".join(f"{m}: {'RANDOM ' if p.get('random') else ''}{p.get('source')}" for m, p in prov.items())
        return Weights(ROOT / "triton_models", variant, origin, f"repo weights ({detail})")
    key = "full" if full else "tiny"
    src = OUT / "weights" / f"random-{key}"
    prov = model_repo.weights_provenance(src) if src.exists() else {}
    seg = prov.get("segformer", {})
    ok = (bool(prov) and all(not p.get("missing") for p in prov.values()) and bool(seg.get("random"))
          and bool(seg.get("tiny")) == (not full))
    if fresh or not ok:
        if src.exists():
            shutil.rmtree(src)
        src.mkdir(parents=True)
        _sync_code(src)
        t0 = time.monotonic()
        echo(f"writing declared random {key} weights into {src.relative_to(ROOT)} ...")
        model_repo.init_weights(src, env, random=True, tiny=not full, seed=0)
        echo(f"  weights ready in {time.monotonic() - t0:.0f} s")
    else:
        _sync_code(src)
    if not model_repo.has_onnx(src):  # weights cached before the ONNX export existed
        echo(f"exporting ONNX graphs into {src.relative_to(ROOT)} ...")
        model_repo.export_onnx(src, env)
    detail = ("declared RANDOM weights: tiny SegFormer (colour probe) + random ResNet50" if not full
              else "declared RANDOM weights: SegFormer-b2 + ResNet50")
    return Weights(src, key, "random", detail)


def repo_weights(src: Path) -> Weights:
    """Any Triton model source repository (config.pbtxt + 1/model.py + 1/weights per model), as its provenance says."""
    prov = model_repo.weights_provenance(src)
    missing = [m for m, p in prov.items() if p.get("missing")]
    if missing:
        raise SystemExit(f"--models {src}: no weights for {', '.join(missing)}")
    randoms = {m for m, p in prov.items() if p.get("random")}
    origin = "random" if len(randoms) == len(prov) else ("pulled" if not randoms else "mixed")
    tiny = bool(prov.get("segformer", {}).get("tiny"))
    detail = "; ".join(f"{m}: {'RANDOM ' if p.get('random') else ''}{p.get('source')}" for m, p in prov.items())
    return Weights(src.resolve(), "tiny" if tiny else "full", origin, f"models from {src} ({detail})")


# --------------------------------------------------------------------------- the stack
Namespace = stack.Namespace  # one pipeline of a BenchStack: workers/local/stack.py


class BenchStack:
    """broker + redis + Milvus + tritonserver in a temporary state folder (removed at stop unless ``keep``)."""

    def __init__(self, weights: Weights, *, segformer_size: int = 512, batch_size: int | None = None,
                 keep: bool = False, echo=print, device: str = "cpu", embedder: str | None = None):
        self.weights = weights
        self.embedder = embedder  # the Triton embedding model to serve (None: model_repo.choose_embedder's pick)
        self.device = device
        self.segformer_size = segformer_size
        self.batch_size = batch_size
        self.keep = keep
        self.echo = echo
        self.state = Path(tempfile.mkdtemp(prefix="lookstream-bench-"))
        self.services: dict[str, stack.Service] = {}
        self.env: dict[str, str] = {}
        self.namespaces: list[stack.Namespace] = []

    def start(self) -> BenchStack:
        port = stack.free_port
        svcs = {
            "broker": stack.broker_service(self.state, port()),
            "redis": stack.redis_service(self.state, port()),
            "milvus": stack.milvus_service(self.state, port()),
            "triton": stack.triton_service(self.state, port(), port(), port(), models_src=self.weights.src,
                                           segformer_size=self.segformer_size, device=self.device,
                                           embedder=self.embedder),
        }
        env = {"LOOKSTREAM_STATE_DIR": str(self.state), "LOOKSTREAM_LOG_LEVEL": "INFO"}
        if self.batch_size:
            env["LOOKSTREAM_BATCH_SIZE"] = str(self.batch_size)
        try:
            env.update(stack.start_services(svcs.values(), echo=self.echo))
        except BaseException:
            self.stop()
            raise
        self.services = svcs
        self.env = env
        return self

    @property
    def settings(self) -> Settings:
        return stack.settings_from_env(self.env)

    def namespace(self, tag: str = "b") -> stack.Namespace:
        """One isolated pipeline on this stack (topics, groups, collection) with worker processes on demand."""
        n = stack.Namespace.create(self.env, self.state, tag=tag)
        self.namespaces.append(n)
        return n

    def triton_pid(self) -> int | None:
        svc = self.services.get("triton")
        return svc.proc.pid() if svc else None

    def own_pids(self) -> set[int]:
        """Every process of this stack: services, workers and their children (Triton stubs)."""
        pids = set()
        for svc in self.services.values():
            pid = svc.proc.pid()
            if pid:
                pids.add(pid)
        for n in self.namespaces:
            for p in n.procs:
                pid = p.pid()
                if pid:
                    pids.add(pid)
        for pid in list(pids):
            pids.update(children(pid))
        return pids

    def stop(self) -> None:
        for n in self.namespaces:
            n.stop_all()
            n.procs.clear()
        for svc in reversed(list(self.services.values())):
            svc.proc.stop()
        if not self.keep:
            shutil.rmtree(self.state, ignore_errors=True)
        else:
            self.echo(f"state kept in {self.state}")

    def __enter__(self) -> BenchStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------- catalogs
def catalog(n: int, seed: int = 11, tenant: str = "bench") -> list:
    """The synthetic sample catalog (workers/local/sample_catalog.py), cached under bench/out/catalogs/."""
    from workers.local.sample_catalog import generate
    from workers.local.ingest import read_catalog

    d = OUT / "catalogs" / f"{tenant}-{n}-s{seed}"
    if not (d / "catalog.jsonl").exists() or len(read_catalog(d)) != n:
        if d.exists():
            shutil.rmtree(d)
        generate(d, n=n, seed=seed, tenant=tenant)
    return read_catalog(d)


# --------------------------------------------------------------------------- metrics
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """A /metrics page as {(name, frozenset(labels)): value}."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            labels = frozenset(_LABEL.findall(m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric_sum(samples: dict, name: str, **match) -> dict[tuple, float]:
    """Values of ``name`` keyed by the remaining labels' values, for samples matching ``match``."""
    out: dict[tuple, float] = {}
    for (n, labels), v in samples.items():
        if n != name:
            continue
        d = dict(labels)
        if any(d.get(k) != val for k, val in match.items()):
            continue
        key = tuple(sorted((k, val) for k, val in d.items() if k not in match))
        out[key] = out.get(key, 0.0) + v
    return out


def scrape_all(procs) -> dict[str, dict]:
    return {p.name: scrape(p.metrics_url) for p in procs}


def diff(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def stage_seconds(samples: dict) -> dict[str, dict[str, float]]:
    """{worker: {stage: seconds}} from lookstream_stage_duration_seconds_sum."""
    out: dict[str, dict[str, float]] = {}
    for (n, labels), v in samples.items():
        if n == "lookstream_stage_duration_seconds_sum":
            d = dict(labels)
            out.setdefault(d["worker"], {})
            out[d["worker"]][d["stage"]] = out[d["worker"]].get(d["stage"], 0.0) + v
    return out


def batch_avg(samples: dict, worker: str) -> float:
    s = sum(v for (n, lab), v in samples.items() if n == "lookstream_batch_size_sum" and dict(lab).get("worker") == worker)
    c = sum(v for (n, lab), v in samples.items() if n == "lookstream_batch_size_count" and dict(lab).get("worker") == worker)
    return s / c if c else 0.0


# --------------------------------------------------------------------------- processes and the machine
def proc_memory(pid: int) -> dict:
    """RSS and PSS (MiB) of one process, and whether libtorch is mapped into it."""
    out = {"pid": pid, "rss_mb": None, "pss_mb": None, "libtorch": None}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_mb"] = int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss_mb"] = int(line.split()[1]) / 1024
        maps = Path(f"/proc/{pid}/maps").read_text()
        out["libtorch"] = "libtorch" in maps
        out["numpy_libs"] = "numpy" in maps
    except OSError:
        pass
    return out


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().split(") ")[-1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def foreign_load(own_pids: set[int] = frozenset()) -> dict[str, int]:
    """Other heavy processes on the machine (tests, other stacks) that share the cores with this benchmark."""
    counts: dict[str, int] = {}
    me = os.getpid()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        pid = int(d.name)
        if pid == me or pid in own_pids:
            continue
        c = cmdline(pid)
        for key in ("pytest", "tritonserver", "triton_python_backend_stub", "milvus", "tansu", "pip install",
                    "lookstream worker"):
            if key in c:
                counts[key] = counts.get(key, 0) + 1
                break
    return counts


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


class LoadMeter:
    """Machine CPU use during a measurement, and the other heavy processes seen at its start and end."""

    def __init__(self, own_pids=lambda: set()):
        self.own_pids = own_pids
        self.t0 = cpu_times()
        self.load0 = os.getloadavg()[0]
        self.foreign0 = foreign_load(own_pids())

    def done(self) -> dict:
        b1, t1 = cpu_times()
        busy = (b1 - self.t0[0]) / max(1, t1 - self.t0[1])
        f1 = foreign_load(self.own_pids())
        foreign = {k: max(self.foreign0.get(k, 0), f1.get(k, 0)) for k in {*self.foreign0, *f1}}
        return {"cpu_busy": round(busy, 3), "loadavg_start": round(self.load0, 2),
                "loadavg_end": round(os.getloadavg()[0], 2),
                "other_processes": [f"{k} x{v}" for k, v in sorted(foreign.items())]}


def machine() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    except (OSError, IndexError, ValueError):
        pass
    gpu = shutil.which("nvidia-smi") is not None
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = ""
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem, 1),
            "gpu": "yes" if gpu else "none", "python": platform.python_version(), "git": rev,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def percentiles(values_ms: list[float]) -> dict:
    import numpy as np

    if not values_ms:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    a = np.asarray(values_ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99))}
