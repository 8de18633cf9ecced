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
from pathlib import Path

import pytest
from support.pipeline import new_pipeline, start_services
from support.waits import Collector

from workers.local import stack

ROOT = Path(__file__).resolve().parent.parent


def _copy_models(dst: Path) -> Path:
    shutil.copytree(ROOT / "triton_models", dst, ignore=shutil.ignore_patterns("weights", "__pycache__"))
    return dst


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    from workers.local import model_repo

    state = tmp_path_factory.mktemp("stack")
    models_src = _copy_models(state / "triton_models_src")
    model_repo.init_weights(models_src, tiny=True, seed=0)
    svcs = start_services(state, models_src)
    yield svcs
    stack.stop_services(svcs.services.values())


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
