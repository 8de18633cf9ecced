"""`lookstream stack up|status|down` as a user runs it: every process ready, then none left."""

import os
import subprocess
import sys
from pathlib import Path

from workers.local.stack import Stack, _alive

LOOKSTREAM = [sys.executable, "-m", "workers.local.cli"]


def run(args, env, timeout=300):
    return subprocess.run([*LOOKSTREAM, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[2])


def test_stack_up_status_down_leaves_nothing_running(services, tmp_path):
    env = {**os.environ, "LOOKSTREAM_MODEL_REPOSITORY": str(services.models_src),
           "LOOKSTREAM_SESSION_TIMEOUT_MS": "2000", "LOOKSTREAM_HEARTBEAT_INTERVAL_MS": "500"}
    state = tmp_path / "state"
    up = run(["stack", "up", "--state", str(state)], env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "WARNING RANDOM WEIGHTS" in up.stdout  # declared random weights are never silent
        status = run(["stack", "status", "--state", str(state)], env)
        assert status.returncode == 0, status.stdout + status.stderr
        for name in ("broker", "redis", "milvus", "triton", "worker-segmentation", "worker-embedding", "worker-query"):
            assert any(line.split()[:2] == [name, "ready"] for line in status.stdout.splitlines()), status.stdout
        again = run(["stack", "up", "--state", str(state)], env)
        assert again.returncode == 2 and "already running" in again.stderr
        pids = [p.pid() for p in Stack(state).procs() if p.pid()]
        assert len(pids) == 7
    finally:
        down = run(["stack", "down", "--state", str(state)], env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(_alive(pid) for pid in pids)
    assert Stack(state).running() == []
    status = run(["stack", "status", "--state", str(state)], env)
    assert status.returncode == 1


def test_missing_weights_are_refused_with_the_command_to_run(tmp_path):
    empty = tmp_path / "models"
    (empty / "segformer").mkdir(parents=True)
    (empty / "segformer" / "config.pbtxt").write_text('name: "segformer"\n')
    env = {**os.environ, "LOOKSTREAM_MODEL_REPOSITORY": str(empty)}
    env.pop("LOOKSTREAM_ALLOW_RANDOM_WEIGHTS", None)
    r = run(["stack", "up", "--state", str(tmp_path / "s")], env, timeout=60)
    assert r.returncode == 2
    assert "lookstream models pull" in r.stderr and "lookstream models init --random --tiny" in r.stderr
    assert Stack(tmp_path / "s").running() == []
