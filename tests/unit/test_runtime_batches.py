"""The Worker loop on in-memory Kafka fakes: ordering and commits, undecodable input, item failures, commit failures."""

from __future__ import annotations

import json
import threading

import pytest
from kafka.errors import CommitFailedError, KafkaConnectionError, UnsupportedVersionError
from support.runtime_fakes import (
    FakeStage, IN, OUT, TP0, TP1, dead_letters, kinds, make, produced_ids, product, rec, run_bounded,
)
from support.waits import wait_for

from workers.runtime import metrics as m
from workers.runtime.errors import PoisonError
from workers.runtime.records import Out, Record, Result
from workers.runtime.retry import Backoff


# --------------------------------------------------------------------------- ordering and commits

def test_outputs_flushed_before_commit_and_offsets_are_last_plus_one():
    batch = [rec(5, product("a")), rec(9, product("c"), partition=1), rec(6, product("b"))]
    w, consumer, producer, stage, log = make([batch])
    run_bounded(w)

    assert stage.calls == [["a", "b", "c"]]  # poll groups records by partition
    assert produced_ids(producer) == ["a", "b", "c"]
    assert consumer.commits == [{TP0: 7, TP1: 10}]
    k = kinds(log)
    i_commit = k.index("commit")
    assert k[:i_commit].count("send") == 3 and k[:i_commit].count("get") == 3
    assert "flush" in k[:i_commit] and k.index("flush") > max(i for i, x in enumerate(k) if x == "send")
    assert k[-3:] == ["flush", "consumer.close", "producer.close"]
    assert w.batches == 1
    assert consumer.poll_args[0] == (1, 8)  # poll_timeout_ms, batch_size
    # keys and headers travel with the outputs
    topic, value, key, headers = producer.on(OUT)[0]
    assert key == b"acme:a"
    assert ("lookstream-type", b"IndexedEvent") in headers


def test_each_batch_commits_its_own_offsets():
    b1 = [rec(0, product("a")), rec(1, product("b"))]
    b2 = [rec(2, product("c")), rec(0, product("d"), partition=1)]
    w, consumer, producer, stage, log = make([b1, b2])
    run_bounded(w)
    assert stage.calls == [["a", "b"], ["c", "d"]]
    assert consumer.commits == [{TP0: 2}, {TP0: 3, TP1: 1}]
    assert w.batches == 2


def test_partitions_not_owned_are_not_committed():
    batch = [rec(4, product("a")), rec(8, product("b"), partition=1)]
    w, consumer, producer, stage, log = make([batch], assignment=(TP0,))
    run_bounded(w)
    assert consumer.commits == [{TP0: 5}]


# --------------------------------------------------------------------------- undecodable input

def test_undecodable_records_become_dead_letters():
    garbage = b"\xff\xfe not json at all"
    half = json.dumps({"event_id": "ev-9", "tenant": "acme", "product_id": "p9"}).encode()  # upsert, no image
    batch = [
        rec(0, product("a")),
        rec(1, garbage, key=b"acme:x", headers=[("trace", b"t-1"), ("empty", None)]),
        rec(2, half),
        rec(3, None),
        rec(4, product("b")),
    ]
    w, consumer, producer, stage, log = make([batch])
    run_bounded(w)

    assert stage.calls == [["a", "b"]]
    assert produced_ids(producer) == ["a", "b"]
    dls = dead_letters(producer)
    assert [d.offset for d in dls] == [1, 2, 3]
    d1, d2, d3 = dls
    assert d1.value == garbage and d1.key == b"acme:x"
    assert d1.headers == {"trace": b"t-1", "empty": b""}
    assert d1.stage == stage.name and d1.source_topic == IN and d1.partition == 0
    assert d1.error_type == "invalid_message" and d1.attempts == 1
    assert d1.reason.startswith("invalid ProductEvent: <root>: Invalid JSON")
    assert (d1.event_id, d1.tenant) == (None, None)
    assert d2.value == half and "an upsert needs an image" in d2.reason
    assert (d2.event_id, d2.tenant) == ("ev-9", "acme")
    assert d3.value == b"" and "empty record" in d3.reason
    # the DLQ record is keyed like the input
    assert [k for _, _, k, _ in producer.on(IN + ".dlq")] == [b"acme:x", None, None]
    assert [r.offset for r, _ in stage.invalid] == [1, 2, 3]
    assert consumer.commits == [{TP0: 5}]
    assert kinds(log).index("commit") > max(i for i, x in enumerate(kinds(log)) if x == "send")


def test_batch_of_only_undecodable_records_still_commits():
    w, consumer, producer, stage, log = make([[rec(7, b"{}")]])
    run_bounded(w)
    assert stage.calls == []
    assert [d.offset for d in dead_letters(producer)] == [7]
    assert consumer.commits == [{TP0: 8}]


def test_on_invalid_outputs_are_produced():
    class ReplyingStage(FakeStage):
        def on_invalid(self, record, error):
            return [Out(OUT + ".errors", b"reply:" + str(record.offset).encode())]

    w, consumer, producer, stage, log = make([[rec(3, b"nope")]], stage=ReplyingStage())
    run_bounded(w)
    assert [v for _, v, _, _ in producer.on(OUT + ".errors")] == [b"reply:3"]
    assert len(dead_letters(producer)) == 1


# --------------------------------------------------------------------------- item failures

def test_unexpected_error_splits_the_batch_and_dead_letters_the_bad_item():
    def bad_b(items, call_no):
        if any(i.msg.product_id == "b" for i in items):
            raise ValueError("boom on b")

    stage = FakeStage(behaviour=bad_b)
    batch = [rec(0, product("a")), rec(1, product("b"), key=b"acme:b"), rec(2, product("c"))]
    w, consumer, producer, stage, log = make([batch], stage=stage, item_attempts=3)
    run_bounded(w)

    assert stage.calls == [["a", "b", "c"], ["a"], ["b"], ["b"], ["b"], ["c"]]
    assert produced_ids(producer) == ["a", "c"]
    (dl,) = dead_letters(producer)
    assert dl.offset == 1 and dl.value == product("b") and dl.key == b"acme:b"
    assert dl.attempts == 3
    assert dl.error_type == "processing_error"
    assert dl.reason == "ValueError: boom on b"
    assert (dl.event_id, dl.tenant) == ("ev-b", "acme")
    assert consumer.commits == [{TP0: 3}]


def test_item_attempts_setting_is_respected():
    stage = FakeStage(behaviour=lambda items, n: (_ for _ in ()).throw(RuntimeError("always")))
    w, consumer, producer, stage, log = make([[rec(0, product("a"))]], stage=stage, item_attempts=1)
    run_bounded(w)
    assert stage.calls == [["a"], ["a"]]  # the batch, then one try alone
    (dl,) = dead_letters(producer)
    assert dl.attempts == 1 and dl.reason == "RuntimeError: always"
    assert consumer.commits == [{TP0: 1}]


def test_poison_error_goes_to_dlq_without_retries():
    def poison_b(items, call_no):
        if any(i.msg.product_id == "b" for i in items):
            raise PoisonError("image is 1x1", category="bad_image")

    stage = FakeStage(behaviour=poison_b)
    w, consumer, producer, stage, log = make([[rec(0, product("a")), rec(1, product("b"))]], stage=stage)
    run_bounded(w)
    assert stage.calls == [["a", "b"], ["a"], ["b"]]
    (dl,) = dead_letters(producer)
    assert (dl.offset, dl.error_type, dl.reason, dl.attempts) == (1, "bad_image", "image is 1x1", 1)
    assert produced_ids(producer) == ["a"]


def test_result_dead_letter_and_outputs_both_produced():
    def per_item(item):
        if item.msg.product_id == "b":
            return Result(outputs=[FakeStage.out(item)], dead_letter=PoisonError("no garments", category="empty"))
        return Result(outputs=[FakeStage.out(item)])

    stage = FakeStage(per_item=per_item)
    w, consumer, producer, stage, log = make([[rec(0, product("a")), rec(1, product("b"))]], stage=stage)
    run_bounded(w)
    assert stage.calls == [["a", "b"]]
    assert produced_ids(producer) == ["a", "b"]
    (dl,) = dead_letters(producer)
    assert (dl.offset, dl.error_type, dl.reason) == (1, "empty", "no garments")
    assert consumer.commits == [{TP0: 2}]


# --------------------------------------------------------------------------- commit failure, misc

def test_commit_failed_error_is_tolerated():
    w, consumer, producer, stage, log = make([[rec(0, product("a"))], [rec(1, product("b"))]])
    consumer.commit_errors = [CommitFailedError("rebalanced")]
    run_bounded(w)
    assert stage.calls == [["a"], ["b"]]
    assert consumer.commits == [{TP0: 2}]  # the first commit was rejected, the second went through
    assert kinds(log).count("commit") == 2
    assert w.batches == 2


def test_commit_to_an_unreachable_broker_never_crashes_and_is_carried_by_the_next():
    """A broker kill -9 between produce and commit raised out of the loop and killed the worker (its partitions
    then sat unread): the offsets are kept and go with the next commit."""
    w, consumer, producer, stage, log = make([[rec(0, product("a")), rec(4, product("x"), partition=1)],
                                              [rec(1, product("b"))]])
    consumer.commit_errors = [KafkaConnectionError("111 ECONNREFUSED")]
    run_bounded(w)
    assert stage.calls == [["a", "x"], ["b"]]
    assert consumer.commits == [{TP0: 2, TP1: 5}]  # partition 1's offset from the failed commit went along
    assert w.committer.pending == {}


def test_an_idle_worker_commits_what_an_outage_left_pending():
    """No further batch may come to carry the kept offsets: an idle poll retries them (at most once a second)."""
    w, consumer, producer, stage, log = make([[rec(0, product("a"))]])
    consumer.commit_errors = [KafkaConnectionError("111 ECONNREFUSED")]
    consumer.on_empty = None  # keep polling an empty topic instead of stopping
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: consumer.commits, 5, "the pending commit retried while idle")
    finally:
        w.stop()
        t.join(5)
    assert consumer.commits == [{TP0: 1}]


def test_pending_offsets_of_a_partition_no_longer_owned_are_dropped():
    w, consumer, producer, stage, log = make([], assignment=(TP0,))
    w.committer.pending = {TP0: 3, TP1: 9}  # TP1 went to another member while the broker was away
    w.committer.commit_offsets({TP0: 2})
    assert consumer.commits == [{TP0: 3}] and w.committer.pending == {}  # never behind the kept offset either


def test_a_commit_error_that_is_not_an_outage_still_surfaces():
    w, consumer, producer, stage, log = make([])
    consumer.commit_errors = [UnsupportedVersionError("a client/broker mismatch, not an outage")]
    with pytest.raises(UnsupportedVersionError):
        w.committer.commit_offsets({TP0: 1})


def test_lag_gauge_from_highwater_and_position():
    w, consumer, producer, stage, log = make([[rec(0, product("a"))]])
    consumer.high = {TP0: 10}
    run_bounded(w)
    assert m.CONSUMER_LAG.labels(stage.name, IN, "0")._value.get() == 7  # 10 - position 3


def test_backoff_doubles_up_to_max_and_resets():
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5


def test_record_from_kafka_and_dlq_topic():
    r = Record.from_kafka(rec(4, b"v", partition=1, key=b"k", headers=[("h", b"1")]))
    assert r == Record(IN, 1, 4, b"k", b"v", (("h", b"1"),), 1_700_000_000_004)
    w, *_ = make([])
    assert w.dlq_topic == "catalog.products.dlq"
    assert not w._stop.is_set()
    w.stop()
    assert w._stop.is_set()


def test_broker_errors_from_poll_never_skip_an_offset():
    from kafka.errors import KafkaConnectionError

    w, consumer, producer, stage, log = make([[rec(0, product("a"))]])
    real_poll = consumer.poll
    fails = {"n": 6}

    def poll(timeout_ms=0, max_records=None):
        if fails["n"]:
            fails["n"] -= 1
            raise KafkaConnectionError("broker went away")
        return real_poll(timeout_ms, max_records)

    consumer.poll = poll
    run_bounded(w)
    assert not dead_letters(producer) and not [e for e in log if e[0] == "seek"]
    assert produced_ids(producer) == ["a"] and consumer.commits == [{TP0: 1}]
