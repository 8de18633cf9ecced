"""Real services for the tests, started once per session on free loopback ports.

The same code as ``lookstream stack up`` starts them (workers/local/stack.py): the Tansu broker, redis-server,
Milvus Lite served over TCP, and tritonserver with the tiny declared-random SegFormer and ResNet50
written into a temporary copy of triton_models/. Nothing here is a mock.

Each test that runs workers gets its own namespace: topics, consumer groups and the Milvus
collection carry a unique suffix, so tests never see each other's data.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from workers.local import stack
from workers.runtime.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

# Short sessions: Tansu holds a join for ~session/2 (ENVIRONMENT.md).
FAST_GROUP = {"LOOKSTREAM_SESSION_TIMEOUT_MS": "2000", "LOOKSTREAM_HEARTBEAT_INTERVAL_MS": "500"}


@dataclass
class Services:
    state: Path
    env: dict[str, str]
    services: dict[str, stack.Service]
    models_src: Path

    def settings(self, **overrides) -> Settings:
        return Settings(**{**stack._settings_kwargs(self.env), **overrides})


def _copy_models(dst: Path) -> Path:
    shutil.copytree(ROOT / "triton_models", dst, ignore=shutil.ignore_patterns("weights", "__pycache__"))
    return dst


@pytest.fixture(scope="session")
def services(tmp_path_factory) -> Services:
    from workers.local import model_repo

    state = tmp_path_factory.mktemp("stack")
    models_src = _copy_models(state / "triton_models_src")
    model_repo.init_weights(models_src, tiny=True, seed=0)
    port = stack.free_port
    svcs = {
        "broker": stack.broker_service(state, port()),
        "redis": stack.redis_service(state, port()),
        "milvus": stack.milvus_service(state, port()),
        "triton": stack.triton_service(state, port(), port(), port(), models_src=models_src),
    }
    env = {**FAST_GROUP}
    started = []
    try:
        for svc in svcs.values():
            svc.start()
            started.append(svc)
            env.update(svc.env)
    except BaseException:
        for svc in started:
            svc.proc.stop()
        raise
    yield Services(state, env, svcs, models_src)
    for svc in reversed(list(svcs.values())):
        svc.proc.stop()


@dataclass
class Pipeline:
    """One isolated namespace on the shared services, with worker processes started on demand."""

    services: Services
    ns: str
    env: dict[str, str]
    procs: list[stack.Proc] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return Settings(**stack._settings_kwargs(self.env))

    def start_worker(self, kind: str, name: str | None = None, **env) -> stack.Proc:
        name = name or f"{self.ns}-{kind}-{len(self.procs)}"
        wenv = {**self.env, "LOOKSTREAM_METRICS_PORT": str(stack.free_port()), **env}
        proc = stack.worker_proc(kind, self.services.state, wenv, name=name)
        proc.metrics_url = f"http://127.0.0.1:{wenv['LOOKSTREAM_METRICS_PORT']}"  # type: ignore[attr-defined]
        proc.start()
        self.procs.append(proc)
        return proc

    def wait_ready(self, proc: stack.Proc, timeout: float = 60) -> None:
        stack.wait_until(lambda: stack.http_ok(proc.metrics_url + "/readyz"), timeout,  # type: ignore[attr-defined]
                         f"worker {proc.name}", proc)

    def stop_all(self) -> None:
        for p in self.procs:
            p.stop(timeout=20)


def new_pipeline(services: Services) -> Pipeline:
    """A fresh namespace: unique topics, groups and collection."""
    from workers.runtime.kafka_io import ensure_topics

    ns = f"t{uuid.uuid4().hex[:8]}"
    env = {
        **services.env,
        "LOOKSTREAM_TOPIC_PRODUCTS": f"{ns}.products",
        "LOOKSTREAM_TOPIC_GARMENTS": f"{ns}.garments",
        "LOOKSTREAM_TOPIC_INDEXED": f"{ns}.indexed",
        "LOOKSTREAM_TOPIC_LOOK_REQUESTS": f"{ns}.requests",
        "LOOKSTREAM_GROUP_ID_PREFIX": ns,
        "LOOKSTREAM_MILVUS_COLLECTION": f"garments_{ns}",
        "LOOKSTREAM_BATCH_SIZE": "8",
        "LOOKSTREAM_LOG_LEVEL": "INFO",
    }
    p = Pipeline(services, ns, env)
    ensure_topics(p.settings)
    return p


@pytest.fixture
def pipeline(services, request):
    """A fresh namespace for one test; its workers are stopped afterwards (logs shown on failure)."""
    p = new_pipeline(services)
    yield p
    p.stop_all()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        for proc in p.procs:
            print(f"\n==== log of {proc.name} ====\n{proc.tail(60)}")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


# A skipped test is a promise nobody checked: every skip (and xfail) fails the session, whatever ran it.
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED:
        terminalreporter.write_line(f"FAILED: {len(_SKIPPED)} test(s) skipped; a skip is a failure here "
                                    f"(install what they need: bash scripts/setup.sh): {', '.join(_SKIPPED)}",
                                    red=True)


@pytest.fixture(scope="session")
def sample_catalog(tmp_path_factory):
    from workers.local.sample_catalog import generate

    out = tmp_path_factory.mktemp("catalog")
    return out, generate(out, n=50, seed=11, tenant="acme")


def wait_for(check, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Collector:
    """Collects every record of some topics from their current end (a TopicTail)."""

    def __init__(self, settings: Settings, topic_names: list[str]):
        from contracts.client import TopicTail

        self.records = []
        self.lock = threading.Lock()
        self.tail = TopicTail(settings.kafka_common(), topic_names, self._on)

    def _on(self, r):
        with self.lock:
            self.records.append(r)

    def of(self, topic: str):
        with self.lock:
            return [r for r in self.records if r.topic == topic]

    def close(self):
        self.tail.close()


@pytest.fixture
def collector_factory():
    made = []

    def make(settings, topic_names):
        c = Collector(settings, topic_names)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


os.environ.setdefault("LOOKSTREAM_LOG_LEVEL", "INFO")


# ----------------------------------------------------------------------------- strict helpers
def count_by_event(records, model, key: str = "event_id") -> "Counter[str]":
    """Every record counted (not the first per id): a duplicate outcome shows up as a count of 2."""
    from collections import Counter

    from contracts import codec

    return Counter(getattr(codec.decode(model, r.value), key) for r in records)


def settled(read, quiet: float = 0.5, timeout: float = 10):
    """``read()`` once it has stopped changing for ``quiet`` seconds (a collector that caught up)."""
    last, since, deadline = read(), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"still changing after {timeout} s (last: {last!r})")


def metric(proc, name: str, **labels) -> float | None:
    """Sum of a worker's /metrics samples called ``name`` with these labels (None if absent or unreachable)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = urllib.request.urlopen(proc.metrics_url + "/metrics", timeout=2).read().decode()
    except OSError:
        return None
    hits = [s.value for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name == name and labels.items() <= s.labels.items()]
    return sum(hits) if hits else None


def terminate(proc: stack.Proc, grace: float) -> tuple[int, float]:
    """SIGTERM the worker (pid recorded first) and wait for it to exit BY ITSELF within ``grace``.

    Returns (exit code, seconds). Fails, and only then kills it, if it is still running after ``grace``.
    """
    import signal

    popen = proc._popen  # type: ignore[attr-defined]
    assert popen.poll() is None, f"{proc.name} was not running (exit code {popen.returncode})"
    t0 = time.monotonic()
    popen.send_signal(signal.SIGTERM)
    try:
        rc = popen.wait(timeout=grace)
    except Exception:
        proc.kill()
        raise AssertionError(f"{proc.name} ignored SIGTERM for {grace} s (killed now)\n{proc.tail(40)}")
    proc.pid_file.unlink(missing_ok=True)
    return rc, time.monotonic() - t0


class frozen:
    """SIGSTOP a service process for a moment (every call into it blocks); SIGCONT in any case."""

    def __init__(self, proc: stack.Proc):
        self.pid = proc.pid()
        assert self.pid is not None, f"{proc.name} is not running"

    def __enter__(self):
        import signal

        os.kill(self.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc):
        import signal

        os.kill(self.pid, signal.SIGCONT)
        return False


def rewind_group(settings: Settings, group: str, topic: str) -> int:
    """Commit offset 0 on every partition of ``topic`` for the (stopped) consumer group ``group``: a real
    replay of the very same records once its workers start again. Returns the number of partitions."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    c = KafkaConsumer(**settings.kafka_common(), group_id=group, enable_auto_commit=False)
    try:
        parts = sorted(c.partitions_for_topic(topic) or ())
        assert parts, f"no partitions for {topic}"
        tps = [TopicPartition(topic, p) for p in parts]
        c.commit({tp: OffsetAndMetadata(0, None, -1) for tp in tps})
        assert all(c.committed(tp) == 0 for tp in tps), {tp: c.committed(tp) for tp in tps}
        return len(tps)
    finally:
        c.close()
