"""The SDK's topic tail (what LookClient and every test collector read replies with) keeps reading.

Its thread is the only reader of its topics: if one failing handler or one poll error during a broker
restart ended it, every later reply would go unseen and each ask would time out. A real durable broker
(Tansu on a local S3) is killed with SIGKILL and restarted under a running tail.
"""

from __future__ import annotations

import threading
import time

from kafka import KafkaProducer

from contracts.client import TopicTail
from workers.local import stack


def _until(cond, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_tail_survives_a_failing_handler_and_a_broker_restart(tmp_path):
    s3 = stack.s3_service(tmp_path, stack.free_port())
    s3.start()
    broker = stack.durable_broker_service(tmp_path, stack.free_port(), s3)
    broker.start()
    servers = broker.env["LOOKSTREAM_BOOTSTRAP_SERVERS"]
    seen: list[bytes] = []
    lock = threading.Lock()

    def on_record(r) -> None:
        if r.value == b"poison":
            raise ValueError("a record the handler cannot take")
        with lock:
            seen.append(r.value)

    tail = TopicTail({"bootstrap_servers": [servers]}, ["tail.test"], on_record)
    producer = KafkaProducer(bootstrap_servers=[servers], acks="all", retries=20, reconnect_backoff_max_ms=500)
    try:
        for v in (b"poison", b"one"):
            producer.send("tail.test", v).get(timeout=30)
        _until(lambda: b"one" in seen, 30, "the record after a failing one")
        assert tail.handler_errors == 1

        broker.proc.kill()
        time.sleep(1)
        broker.start()
        producer.send("tail.test", b"after restart").get(timeout=60)
        _until(lambda: b"after restart" in seen, 60, "a record produced after the broker restart")
        assert tail._thread.is_alive()
        with lock:
            assert seen.count(b"one") == 1 and b"poison" not in seen
    finally:
        producer.close(timeout=5)
        tail.close()
        broker.proc.stop()
        s3.proc.stop()
