"""Does the test broker keep every record it acknowledged across kill -9? A producer alone, no pipeline.

    .venv/bin/python -m bench.broker_acks [--rounds 20] [--idempotence both|on|off]

The fault suite's broker-crash phase loses one event in roughly ten runs, always with a produce batch in flight at
the kill (tests/support/broker_forensics.py: the product record is on the broker, its garments record is not, and
the segmentation worker's idempotent producer was retrying a batch to that partition when the broker died). This
probe takes the pipeline out: one producer (the workers' RELIABLE_PRODUCER settings, idempotence on, or off for
comparison) sends numbered records as fast as the broker takes them to a 4-partition topic on Tansu storing its log
in a local S3 (moto), exactly the fault suite's broker; the broker is killed -9 and restarted every round. Afterwards
every record is read back: an id whose send was acknowledged (its future resolved without error) and that is not
on the topic is a loss the broker is to blame for, since nothing else touched it.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from pathlib import Path

from contracts.client import RELIABLE_PRODUCER
from workers.local import stack
from workers.runtime.kafka_io import ensure_topics
from workers.runtime.settings import Settings

TOPIC = "probe.acks"


def _produce_until(stop: threading.Event, servers: str, idempotence: bool, acked: set, failed: list, payload: int):
    from kafka import KafkaProducer

    conf = {**RELIABLE_PRODUCER, "enable_idempotence": idempotence, "request_timeout_ms": 30000,
            "linger_ms": 5, "max_in_flight_requests_per_connection": 5 if idempotence else 1}
    producer = KafkaProducer(bootstrap_servers=[servers], **conf)
    pad = b"x" * payload
    n = 0

    def done(i):
        return lambda _meta: acked.add(i)

    def fail(i):
        return lambda exc: failed.append((i, repr(exc)))

    try:
        while not stop.is_set():
            fut = producer.send(TOPIC, json.dumps({"i": n}).encode() + b"\n" + pad)
            fut.add_callback(done(n))
            fut.add_errback(fail(n))
            n += 1
            time.sleep(0.005)  # a steady stream (~200 records/s), not one giant backlog
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=30)
    return n


def _read_all(servers: str) -> tuple[set, int]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=[servers], group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", fetch_max_wait_ms=500,
                      max_partition_fetch_bytes=8 << 20, fetch_max_bytes=32 << 20)
    try:
        tps = [TopicPartition(TOPIC, p) for p in sorted(c.partitions_for_topic(TOPIC) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        seen, records, quiet = set(), 0, time.monotonic()
        while time.monotonic() - quiet < 8:
            for batch in c.poll(timeout_ms=1000).values():
                quiet = time.monotonic()
                for r in batch:
                    records += 1
                    seen.add(json.loads(r.value.split(b"\n", 1)[0])["i"])
        return seen, records
    finally:
        c.close()


def run(rounds: int, idempotence: bool, payload: int, seed: int) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="broker-acks-") as tmp:
        state = Path(tmp)
        s3 = stack.s3_service(state, stack.free_port())
        s3.start()
        broker = stack.durable_broker_service(state, stack.free_port(), s3)
        broker.start()
        try:
            servers = broker.env["LOOKSTREAM_BOOTSTRAP_SERVERS"]
            ensure_topics(Settings(bootstrap_servers=servers), [TOPIC], partitions=4)
            acked: set = set()
            failed: list = []
            stop = threading.Event()
            sent = {}
            t = threading.Thread(target=lambda: sent.setdefault("n", _produce_until(
                stop, servers, idempotence, acked, failed, payload)), daemon=True)
            t.start()
            for r in range(rounds):
                time.sleep(rng.uniform(1.0, 3.0))  # records in flight at a random moment
                broker.proc.kill()
                time.sleep(2)
                broker.start()
                print(f"  round {r + 1}/{rounds}: {len(acked)} acknowledged so far", flush=True)
            time.sleep(3)
            stop.set()
            t.join(timeout=150)
            print(f"  producer {'closed' if not t.is_alive() else 'still flushing after 150 s'}: {len(acked)} "
                  f"acknowledged, {len(failed)} failed", flush=True)
            seen, records = _read_all(servers)
            print(f"  read back {records} records", flush=True)
        finally:
            broker.proc.stop()
            s3.proc.stop()
    lost = sorted(acked - seen)
    return {"idempotence": idempotence, "rounds": rounds, "sent": sent.get("n"), "acknowledged": len(acked),
            "failed_sends": len(failed), "on_topic": len(seen), "records": records,
            "duplicates": records - len(seen), "acked_but_missing": len(lost), "missing_ids": lost[:20]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.broker_acks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20, help="broker kill -9 + restarts (default 20)")
    ap.add_argument("--idempotence", choices=["both", "on", "off"], default="both")
    ap.add_argument("--payload", type=int, default=2000, help="bytes per record besides its id (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    modes = {"both": [True, False], "on": [True], "off": [False]}[a.idempotence]
    rows = []
    for mode in modes:
        print(f"idempotence {'on' if mode else 'off'}: {a.rounds} kill -9 + restarts", flush=True)
        rows.append(run(a.rounds, mode, a.payload, a.seed))
        print(json.dumps(rows[-1]), flush=True)
    head = ["idempotence", "rounds", "sent", "acknowledged", "failed sends", "on topic", "duplicates",
            "acked but missing"]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print(f"| {'on' if r['idempotence'] else 'off'} | {r['rounds']} | {r['sent']} | {r['acknowledged']} | "
              f"{r['failed_sends']} | {r['on_topic']} | {r['duplicates']} | {r['acked_but_missing']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
