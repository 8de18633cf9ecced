"""What other Kafka clients write reaches the workers intact, and a batch nobody can read stops nothing.

- A librdkafka producer (confluent-kafka) sends ProductEvents and LookRequests with each codec (gzip,
  snappy, lz4, zstd): the batches are compressed on the broker (counted while reading them back), every
  event is indexed and every request answered.
- A corrupt batch (garbage where the compressed records should be, valid CRC) sits in a partition between
  good products: the worker stays up, dead-letters and counts the unreadable offsets, and the good products
  before and after it are processed.
"""

from __future__ import annotations

import re
import urllib.request
from datetime import timedelta

from contracts import codec, topics
from contracts.models import DeadLetter, GarmentsEvent, IndexedEvent, LookReply, LookRequest, ProductEvent, utc_now

from support.waits import wait_for
from hostile import jpeg
from kafka_batches import CODECS, codecs_used, librdkafka_producer, produce_all, send_corrupt_batch

TENANT = "acme"


def _product(i: int, codec_name: str) -> ProductEvent:
    # a long, repetitive description: every codec shrinks it, so librdkafka sends it compressed
    return ProductEvent(tenant=TENANT, product_id=f"{codec_name}-{i}", image={"bytes": jpeg()},
                        metadata={"title": f"red top {i}", "attributes": {"description": "soft cotton " * 150}})


def test_librdkafka_producer_with_every_codec_is_indexed_and_answered(pipeline, collector_factory):
    s = pipeline.settings
    workers = [pipeline.start_worker(k) for k in ("segmentation", "embedding", "query")]
    for w in workers:
        pipeline.wait_ready(w, timeout=90)
    reply_to = f"{s.reply_topic_prefix}.{TENANT}.{pipeline.ns}"
    col = collector_factory(s, [s.topic_indexed, reply_to, topics.dlq(s.topic_products),
                                topics.dlq(s.topic_look_requests)])

    events = {c: [_product(i, c) for i in range(2)] for c in CODECS}
    for c in CODECS:  # one producer per codec, as different third parties would be
        p = librdkafka_producer(s.bootstrap_servers, c)
        produce_all(p, [(s.topic_products, ev.key.encode(), codec.encode(ev), codec.headers_for(ev))
                        for ev in events[c]])
    seen, got = codecs_used(s.kafka_common(), s.topic_products, want_records=8)
    assert len(got) == 8
    assert all(seen[c] >= 1 for c in CODECS), f"batches on the broker were not compressed with each codec: {seen}"

    ids = {ev.event_id for evs in events.values() for ev in evs}
    wait_for(lambda: ids <= {codec.decode(IndexedEvent, r.value).event_id for r in col.of(s.topic_indexed)},
             180, "an IndexedEvent for every compressed product event")
    outcomes = {codec.decode(IndexedEvent, r.value).event_id: codec.decode(IndexedEvent, r.value)
                for r in col.of(s.topic_indexed)}
    assert all(outcomes[e].status == "indexed" and "Upper-clothes" in outcomes[e].labels for e in ids), outcomes

    requests = {c: LookRequest(tenant=TENANT, reply_to=reply_to, image={"bytes": jpeg()}, top_k=2,
                               deadline=utc_now() + timedelta(seconds=120)) for c in CODECS}
    for c, req in requests.items():
        p = librdkafka_producer(s.bootstrap_servers, c)
        produce_all(p, [(s.topic_look_requests, req.request_id.encode(), codec.encode(req), codec.headers_for(req))])
    seen, _ = codecs_used(s.kafka_common(), s.topic_look_requests, want_records=4)
    assert all(seen[c] >= 1 for c in CODECS), f"look requests were not compressed with each codec: {seen}"

    def replies():
        return {(r.key or b"").decode(): codec.decode(LookReply, r.value) for r in col.of(reply_to)}
    wait_for(lambda: {r.request_id for r in requests.values()} <= set(replies()), 120, "a reply to every request")
    for c, req in requests.items():
        reply = replies()[req.request_id]
        assert reply.status.value == "ok" and reply.garments and reply.garments[0].matches, (c, reply)
    assert not col.of(topics.dlq(s.topic_products)) and not col.of(topics.dlq(s.topic_look_requests))
    assert all(w._popen.poll() is None for w in workers)


def test_a_corrupt_batch_is_dead_lettered_and_skipped_and_the_worker_stays_up(pipeline, collector_factory):
    """Every record goes to partition 0: good, corrupt (one codec each), good, ... The partition must move on."""
    s = pipeline.settings
    worker = pipeline.start_worker("segmentation")
    pipeline.wait_ready(worker, timeout=90)
    pid = worker.pid()
    dlq_topic = topics.dlq(s.topic_products)
    col = collector_factory(s, [s.topic_garments, dlq_topic])
    conf = s.kafka_common()

    good, corrupt = [], []
    p = librdkafka_producer(s.bootstrap_servers, "none")
    for c in CODECS:
        ev = _product(0, f"before-{c}")
        p.produce(s.topic_products, key=ev.key.encode(), value=codec.encode(ev), partition=0)
        p.flush(30)
        good.append(ev.event_id)
        corrupt += send_corrupt_batch(conf, s.topic_products, 0, c, n=2)
    last = _product(0, "after-all")
    p.produce(s.topic_products, key=last.key.encode(), value=codec.encode(last), partition=0)
    assert p.flush(30) == 0
    good.append(last.event_id)

    def processed():
        return {codec.decode(GarmentsEvent, r.value).event_id for r in col.of(s.topic_garments)}

    def letters():
        return [codec.decode(DeadLetter, r.value) for r in col.of(dlq_topic)]

    try:
        wait_for(lambda: set(good) <= processed(), 120, "the good products around the corrupt batches processed")
        wait_for(lambda: {d.offset for d in letters()} >= set(corrupt), 30, "a dead letter per unreadable offset")
    finally:
        print(f"\n==== log of {worker.name} ====\n{worker.tail(40)}")
    assert worker.pid() == pid and worker._popen.poll() is None, "the worker died"
    skipped = [d for d in letters() if d.error_type == "unreadable_batch"]
    assert {d.offset for d in skipped} == set(corrupt) and all(d.partition == 0 for d in skipped), skipped
    assert all(d.source_topic == s.topic_products and "unreadable record batch" in d.reason for d in skipped)
    metrics = urllib.request.urlopen(worker.metrics_url + "/metrics", timeout=5).read().decode()
    n = re.search(r'lookstream_poll_errors_total\{kind="skipped_offset",worker="segmentation"\} (\S+)', metrics)
    assert n and float(n.group(1)) >= len(corrupt), metrics[-2000:]
