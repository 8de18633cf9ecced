"""Waiting and looking: polls with a deadline, topic collectors, metric reads, process signals, group rewinds."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

from workers.local import stack
from workers.runtime.settings import Settings


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
