"""Record batches the way other clients write them, for tests: librdkafka with each codec, and corrupt ones.

- ``librdkafka_producer(bootstrap, codec)``: a confluent-kafka (librdkafka 2.16) producer with
  ``compression.type`` set.
- ``codecs_used(conf, topic)``: reads a topic with kafka-python in this process, counting which
  decompressor each batch needed, so a test can prove the batches really were compressed on the broker.
- ``send_corrupt_batch(conf, topic, partition, codec, n)``: a batch of ``n`` records whose compressed
  payload is garbage but whose CRC is valid (kafka-python's own batch builder computes the CRC after
  "compression"), so the broker stores it and only a consumer's decompressor can tell.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager

import kafka.record.default_records as records

CODECS = ("gzip", "snappy", "lz4", "zstd")
_DECODERS = {"gzip": "gzip_decode", "snappy": "snappy_decode", "lz4": "lz4_decode", "zstd": "zstd_decode"}
_ENCODERS = {"gzip": "gzip_encode", "snappy": "snappy_encode", "lz4": "lz4_encode", "zstd": "zstd_encode"}


def librdkafka_producer(bootstrap_servers: str, codec: str):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap_servers, "compression.type": codec, "linger.ms": 50,
                     "acks": "all", "enable.idempotence": True, "message.max.bytes": 16 * 1024 * 1024})


def produce_all(producer, records_: list[tuple[str, bytes, bytes, list]], timeout: float = 30) -> None:
    """Send (topic, key, value, headers) records and fail unless every one is acknowledged."""
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)

    for topic, key, value, headers in records_:
        producer.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
    left = producer.flush(timeout)
    assert left == 0 and not errors, (left, errors)


@contextmanager
def _counting_decoders(seen: Counter):
    saved = {name: getattr(records, fn) for name, fn in _DECODERS.items()}

    def wrap(name):
        def decode(data, *a, **kw):
            seen[name] += 1
            return saved[name](data, *a, **kw)
        return decode

    for name, fn in _DECODERS.items():
        setattr(records, fn, wrap(name))
    try:
        yield
    finally:
        for name, fn in _DECODERS.items():
            setattr(records, fn, saved[name])


def codecs_used(conf: dict, topic: str, want_records: int, timeout: float = 30) -> tuple[Counter, list]:
    """(decompressions per codec, records) reading ``topic`` from the beginning until ``want_records``."""
    from kafka import KafkaConsumer, TopicPartition

    seen: Counter = Counter()
    got = []
    consumer = KafkaConsumer(**conf, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                             max_partition_fetch_bytes=16 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        with _counting_decoders(seen):
            while len(got) < want_records and time.monotonic() < deadline:
                for recs in consumer.poll(timeout_ms=200).values():
                    got += recs
    finally:
        consumer.close()
    return seen, got


def send_corrupt_batch(conf: dict, topic: str, partition: int, codec: str, n: int = 3) -> list[int]:
    """``n`` records in one batch flagged ``codec`` whose payload is not that codec's data; CRC valid."""
    from kafka import KafkaProducer

    fn = _ENCODERS[codec]
    saved = getattr(records, fn)
    # shorter than the records it replaces, so the builder keeps it (it sends uncompressed otherwise)
    setattr(records, fn, lambda data: b"\x00garbage, not " + codec.encode() + b"\x00" * 8)
    try:
        producer = KafkaProducer(**conf, compression_type=codec, linger_ms=200, acks="all")
        try:
            futures = [producer.send(topic, partition=partition, key=b"corrupt", value=b"x" * 500) for _ in range(n)]
            producer.flush(30)
            offsets = [f.get(timeout=10).offset for f in futures]
        finally:
            producer.close()
    finally:
        setattr(records, fn, saved)
    assert offsets == list(range(offsets[0], offsets[0] + n)), offsets
    return offsets
