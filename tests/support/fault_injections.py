"""The fault suite's injections: each breaks one part of a running pipeline and checks that it did.

A kill -9 confirms the process died; a SIGTERM must end in exit code 0 within the grace time; every injection
first asserts that the stage it breaks still has work of the phase in hand (a fault on an idle worker proves
nothing). Every injected fault is undone in a ``finally``.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Callable

from contracts import codec
from workers.local import stack

from kafka_batches import CODECS, librdkafka_producer, produce_all
from support.pipeline import Pipeline


def _worker(p: Pipeline, kind: str) -> stack.Proc:
    return next(x for x in reversed(p.procs) if kind in x.name)


def _restart(p: Pipeline, kind: str) -> None:
    old = _worker(p, kind)
    p.procs.remove(old)
    p.wait_ready(p.start_worker(kind, name=old.name), timeout=90)


@dataclass
class Phase:
    """What an injection may look at: whether every event of the phase has its outcome, and whether
    the stage it breaks still has work of the phase in hand (a fault on an idle worker proves nothing)."""

    finished: Callable[[], bool]
    replies_pending: Callable[[], int]
    note: str = ""

    def assert_in_flight(self, kind: str) -> None:
        if kind == "query":
            assert self.replies_pending() > 0, "the query fault came after every look was answered"
        else:
            assert not self.finished(), f"the {kind} fault came after every event had its outcome"


def _busy_worker(p: Pipeline, kind: str, phase: Phase) -> tuple[stack.Proc, int]:
    """The running worker of ``kind`` and its pid, checked to have work of the phase in hand."""
    proc = _worker(p, kind)
    pid = proc.pid()
    assert pid is not None, f"{kind} worker is not running before its fault"
    phase.assert_in_flight(kind)
    return proc, pid


def kill9(kind):
    def inject(p, svc, phase):
        proc, pid = _busy_worker(p, kind, phase)
        proc.kill()
        assert not stack._alive(pid), f"{kind} worker (pid {pid}) survived kill -9"
        time.sleep(1)
        _restart(p, kind)
    return inject


SIGTERM_GRACE_S = 30


def sigterm(kind):
    """The worker finishes its batch, commits, leaves the group and exits 0 by itself within the grace."""
    def inject(p, svc, phase):
        proc, pid = _busy_worker(p, kind, phase)
        os.kill(pid, signal.SIGTERM)
        popen = proc._popen  # started by this harness: its exit status is ours to read
        try:
            code = popen.wait(timeout=SIGTERM_GRACE_S)
        except Exception:  # noqa: BLE001 - TimeoutExpired: it ignored SIGTERM
            proc.kill()
            raise AssertionError(f"{kind} worker did not exit within {SIGTERM_GRACE_S} s of SIGTERM")
        proc.stop()  # forget the pid file
        assert code == 0, f"{kind} worker exited with {code} after SIGTERM"
        _restart(p, kind)
    return inject


def outage(name, seconds):
    def inject(p, svc, phase):
        service = svc[name]
        service.proc.kill()
        try:
            time.sleep(seconds)
        finally:
            service.start()
    return inject


def paused(name, seconds):
    """The process is alive and its sockets open, but answers nothing: slow rather than down."""
    def inject(p, svc, phase):
        pid = svc[name].proc.pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
    return inject


def broker_restart(p, svc, phase):
    svc["broker"].proc.kill()
    try:
        time.sleep(2)
    finally:
        svc["broker"].start()


def redis_read_only(seconds):
    """Redis becomes a replica of a master that does not exist (a failover gone wrong): every write
    answers READONLY, reads still work. That is the dependency's fault, never the input's."""
    def inject(p, svc, phase):
        import redis

        r = redis.Redis.from_url(p.settings.redis_url, socket_timeout=5)
        try:
            r.execute_command("REPLICAOF", "127.0.0.1", str(stack.free_port()))
            assert r.info("replication")["role"] == "slave"
            time.sleep(seconds)
        finally:
            r.execute_command("REPLICAOF", "NO", "ONE")
            r.close()
    return inject


def group_churn(every_s: float, budget_s: float = 240):
    """A second segmentation or embedding worker (in turn) joins its group, works a few seconds and
    leaves (SIGTERM), again and again until the phase's events all have their outcome."""
    def inject(p, svc, phase):
        cycles = 0
        deadline = time.monotonic() + budget_s
        while not phase.finished() and time.monotonic() < deadline:
            kind = ("segmentation", "embedding")[cycles % 2]
            extra = p.start_worker(kind, name=f"faults-{kind}-extra")
            try:
                p.wait_ready(extra, timeout=90)
                time.sleep(every_s)  # joined (a join takes ~1 s here) and took partitions
            finally:
                extra.stop(sig=signal.SIGTERM, timeout=30)
                p.procs.remove(extra)
            cycles += 1
            time.sleep(every_s / 2)
        phase.note = f"{cycles} join/leave cycles"
    return inject


def nothing(p, svc, phase):
    pass


def publish_kafka_python(pub, s, events):
    for ev in events:
        pub.publish(ev)
    pub.flush()


def publish_librdkafka_codecs(pub, s, events):
    """A quarter of the events with each codec, each from its own librdkafka producer."""
    for i, c in enumerate(CODECS):
        produce_all(librdkafka_producer(s.bootstrap_servers, c),
                    [(s.topic_products, ev.key.encode(), codec.encode(ev), codec.headers_for(ev))
                     for ev in events[i::len(CODECS)]])
