"""Named background processes with a log and a pid file in a state folder, and waiting for them to be ready."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class KilledProc(Proc):
    """A process whose only clean stop is SIGKILL of its group (the Milvus server)."""

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGKILL) -> None:
        super().stop(timeout=timeout, sig=signal.SIGKILL)



def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except Exception:
        return False
