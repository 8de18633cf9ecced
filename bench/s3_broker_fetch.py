"""Why the fault suite's S3-backed test broker needs a long fetch wait (docs/testing.md).

    .venv/bin/python -m bench.s3_broker_fetch 20 500

Tansu with its log in S3 (moto, as tests/faults uses it): 400 records of 50 KB over 4 partitions, then
8 idle consumers tail the topic while one reader reads all 400 from the start (60 s at most). Prints, per
fetch_max_wait_ms, how many the reader got, how long it took and the CPU moto used. Nothing asserts.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from workers.local import stack

RECORDS, PARTITIONS, IDLE_CONSUMERS, READ_LIMIT_S = 400, 4, 8, 60


def _cpu_s(pid: int) -> float:
    utime, stime = open(f"/proc/{pid}/stat").read().split(") ")[1].split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


def run(wait_ms: int) -> str:
    state = Path(tempfile.mkdtemp(prefix="lookstream-s3fetch-"))
    s3 = stack.s3_service(state, stack.free_port())
    s3.start()
    broker = stack.durable_broker_service(state, stack.free_port(), s3)
    broker.start()
    servers = [broker.env["LOOKSTREAM_BOOTSTRAP_SERVERS"]]
    tps = [TopicPartition("s3fetch", q) for q in range(PARTITIONS)]
    stop = threading.Event()

    def idle() -> None:
        c = KafkaConsumer(bootstrap_servers=servers, group_id=None, fetch_max_wait_ms=wait_ms)
        c.assign(tps)
        c.seek_to_end()
        while not stop.is_set():
            c.poll(100)
        c.close()

    try:
        producer = KafkaProducer(bootstrap_servers=servers, acks="all", max_request_size=16 << 20)
        for i in range(RECORDS):
            producer.send("s3fetch", os.urandom(50_000), partition=i % PARTITIONS)
        producer.flush()
        for _ in range(IDLE_CONSUMERS):
            threading.Thread(target=idle, daemon=True).start()
        time.sleep(3)
        pid = s3.proc.pid()
        cpu0, t0 = _cpu_s(pid), time.monotonic()
        reader = KafkaConsumer(bootstrap_servers=servers, group_id=None, fetch_max_wait_ms=wait_ms,
                               max_partition_fetch_bytes=16 << 20)
        reader.assign(tps)
        reader.seek_to_beginning()
        got = 0
        while got < RECORDS and time.monotonic() - t0 < READ_LIMIT_S:
            got += sum(len(v) for v in reader.poll(200).values())
        took = time.monotonic() - t0
        moto = (_cpu_s(pid) - cpu0) / took
        return f"| {wait_ms} | {got}/{RECORDS} | {took:.1f} | {moto:.2f} |"
    finally:
        stop.set()
        broker.proc.stop()
        s3.proc.stop()


def main(waits: list[int]) -> None:
    print(f"| fetch_max_wait_ms | read by one reader ({IDLE_CONSUMERS} idle consumers) | s | moto CPU (cores) |")
    print("|---:|---:|---:|---:|")
    for w in waits:
        print(run(w), flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [20, 500])
