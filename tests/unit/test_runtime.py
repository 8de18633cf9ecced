"""The Worker loop's ordering and commit rules, driven by in-memory fakes of the Kafka clients.

The fakes only stand in for the client objects' calls (poll/pause/commit/send/flush); every rule tested
here is pure logic of workers/runtime/worker.py: produce and flush before commit, last offset + 1 per partition,
dead letters for undecodable input, retry on DependencyError with paused partitions, batch splitting.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import namedtuple
from datetime import datetime, timezone

import pytest
from kafka.errors import CommitFailedError, KafkaTimeoutError, MessageSizeTooLargeError, TopicAuthorizationFailedError
from kafka.structs import TopicPartition

from contracts import codec
from contracts.models import DeadLetter, IndexedEvent, ProductEvent
from workers.runtime import metrics as m
from workers.runtime.errors import DependencyError, PoisonError
from workers.runtime.records import Out, Record, Result
from workers.runtime.retry import Backoff
from workers.runtime.worker import Worker
from workers.runtime.settings import Settings

IN = "catalog.products"
OUT = "catalog.indexed"
TP0, TP1 = TopicPartition(IN, 0), TopicPartition(IN, 1)

KRecord = namedtuple("KRecord", "topic partition offset key value headers timestamp")


def settings(**kw) -> Settings:
    base = dict(_env_file=None, batch_size=8, poll_timeout_ms=1, backoff_initial_s=0.005, backoff_max_s=0.02,
                item_attempts=3)
    return Settings(**{**base, **kw})


def product(pid: str, **over) -> bytes:
    d = {"event_id": f"ev-{pid}", "tenant": "acme", "product_id": pid, "op": "delete"}
    d.update(over)
    return json.dumps(d).encode()


def rec(offset: int, value: bytes | None, partition: int = 0, key: bytes | None = None, headers=()) -> KRecord:
    return KRecord(IN, partition, offset, key, value, list(headers), 1_700_000_000_000 + offset)


# --------------------------------------------------------------------------- fakes

class FakeFuture:
    def __init__(self, log, error: Exception | None = None):
        self.log, self.error = log, error

    def get(self, timeout=None):
        self.log.append(("get",))
        if self.error is not None:
            raise self.error
        return None


class FakeProducer:
    def __init__(self, log):
        self.log = log
        self.sent: list[tuple[str, bytes, bytes | None, list]] = []
        self.fail_gets = 0  # this many future.get() calls raise a KafkaError
        self.refused: dict[str, Exception] = {}  # topic -> the error the broker answers for good
        self.acked: list[tuple[str, bytes]] = []
        self.missing: set[str] = set()  # topics the broker does not have (auto-creation off)

    def send(self, topic, value=None, key=None, headers=None):
        self.log.append(("send", topic))
        self.sent.append((topic, value, key, headers))
        if topic in self.missing:  # kafka-python waits max_block_ms for the topic's metadata, then raises
            raise KafkaTimeoutError("Failed to update metadata after 15.0 secs.")
        err = None
        if self.fail_gets:
            self.fail_gets -= 1
            err = KafkaTimeoutError("no ack")
        elif topic in self.refused:
            err = self.refused[topic]
        else:
            self.acked.append((topic, value))
        return FakeFuture(self.log, err)

    def flush(self, timeout=None):
        self.log.append(("flush",))

    def close(self, timeout=None):
        self.log.append(("producer.close",))

    def on(self, topic):
        return [s for s in self.sent if s[0] == topic]


class FakeConsumer:
    """Hands out the queued batches one per poll; returns nothing while any partition is paused."""

    def __init__(self, log, batches, assignment=(TP0, TP1)):
        self.log = log
        self.batches = list(batches)
        self.assigned = set(assignment)
        self.paused: set = set()
        self.commits: list[dict] = []
        self.commit_errors: list[Exception] = []
        self.on_empty = None         # called when no batch is left (stops the worker)
        self.on_paused_poll = None   # called on every poll while paused
        self.poll_args: list[tuple] = []
        self.high: dict = {}
        self.delivered: list = []

    def seek(self, tp, offset):
        """Rewind: records of ``tp`` from ``offset`` that were handed out come again on the next poll."""
        self.log.append(("seek", tp, offset))
        again = [r for r in self.delivered if TopicPartition(r.topic, r.partition) == tp and r.offset >= offset]
        self.delivered = [r for r in self.delivered if r not in again]
        if again:
            self.batches.insert(0, again)

    def poll(self, timeout_ms=0, max_records=None):
        self.poll_args.append((timeout_ms, max_records))
        if self.paused & self.assigned:
            self.log.append(("poll-paused",))
            got = self.on_paused_poll() if self.on_paused_poll else None
            time.sleep(0.001)
            for recs in (got or {}).values():
                self.delivered += recs
            return got or {}
        if not self.batches:
            if self.on_empty:
                self.on_empty()
            return {}
        self.log.append(("poll",))
        out: dict = {}
        for r in self.batches.pop(0):
            out.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
        return out

    def assignment(self):
        return set(self.assigned)

    def pause(self, *tps):
        self.log.append(("pause", frozenset(tps)))
        self.paused |= set(tps)

    def resume(self, *tps):
        self.log.append(("resume", frozenset(tps)))
        self.paused -= set(tps)

    def commit(self, offsets):
        self.log.append(("commit",))
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self.commits.append({tp: om.offset for tp, om in offsets.items()})

    def highwater(self, tp):
        return self.high.get(tp)

    def topics(self):
        return {IN, OUT, IN + ".dlq"}

    def position(self, tp, timeout_ms=None):
        return 3

    def close(self):
        self.log.append(("consumer.close",))


class FakeStage:
    """Turns each ProductEvent into an IndexedEvent; ``behaviour(items, call_no)`` may raise."""

    input_topic = IN
    message_type = ProductEvent

    def __init__(self, behaviour=None, per_item=None):
        self.name = f"unit-{uuid.uuid4().hex[:6]}"  # fresh metric labels per test
        self.calls: list[list[str]] = []
        self.behaviour = behaviour
        self.per_item = per_item or (lambda item: Result(outputs=[self.out(item)]))
        self.invalid: list[tuple[Record, PoisonError]] = []

    @staticmethod
    def out(item) -> Out:
        ev = item.msg
        ie = IndexedEvent(event_id=ev.event_id, tenant=ev.tenant, product_id=ev.product_id, op=ev.op,
                          status="deleted", latency_ms=1.0)
        return Out.of(OUT, ie, key=ev.key)

    def process(self, items):
        self.calls.append([i.msg.product_id for i in items])
        if self.behaviour:
            self.behaviour(items, len(self.calls))
        return [self.per_item(i) for i in items]

    def on_invalid(self, record, error):
        self.invalid.append((record, error))
        return []

    def ready_checks(self):
        return {}


def make(batches, stage=None, assignment=(TP0, TP1), **s_kw):
    log: list = []
    consumer, producer = FakeConsumer(log, batches, assignment), FakeProducer(log)
    stage = stage or FakeStage()
    w = Worker(stage, settings(**s_kw), consumer, producer, group_id="g")
    consumer.on_empty = w.stop
    return w, consumer, producer, stage, log


def run_bounded(w: Worker, seconds: float = 10.0) -> None:
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "worker did not stop"


def produced_ids(producer) -> list[str]:
    return [codec.decode(IndexedEvent, v).product_id for _, v, _, _ in producer.on(OUT)]


def dead_letters(producer) -> list[DeadLetter]:
    return [codec.decode(DeadLetter, v) for _, v, _, _ in producer.on(IN + ".dlq")]


def kinds(log) -> list[str]:
    return [e[0] for e in log]


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


# --------------------------------------------------------------------------- dependency failures

def test_dependency_error_retried_with_paused_partitions_nothing_committed_until_success():
    def flaky(items, call_no):
        if call_no <= 2:
            raise DependencyError("triton", "triton down")

    stage = FakeStage(behaviour=flaky)
    w, consumer, producer, stage, log = make([[rec(0, product("a")), rec(1, product("b"))]], stage=stage)
    run_bounded(w)

    assert stage.calls == [["a", "b"]] * 3  # the whole batch again each time
    assert produced_ids(producer) == ["a", "b"]
    assert consumer.commits == [{TP0: 2}]
    k = kinds(log)
    assert k.count("pause") == 2 and k.count("resume") == 2
    first_pause, last_resume, first_send = k.index("pause"), len(k) - 1 - k[::-1].index("resume"), k.index("send")
    assert "poll-paused" in k[first_pause:last_resume]  # the group is kept alive meanwhile
    assert last_resume < first_send < k.index("commit")
    assert "commit" not in k[:first_send] and "send" not in k[:last_resume]
    assert log[first_pause][1] == frozenset({TP0, TP1})
    assert consumer.paused == set()
    assert not dead_letters(producer)


def test_stop_during_dependency_backoff_returns_without_committing():
    stage = FakeStage(behaviour=lambda items, n: (_ for _ in ()).throw(DependencyError("milvus")))
    w, consumer, producer, stage, log = make([[rec(0, product("a"))], [rec(1, product("b"))]], stage=stage,
                                             backoff_initial_s=30.0, backoff_max_s=30.0)
    consumer.on_paused_poll = w.stop
    run_bounded(w, seconds=10)
    # stop was noticed at the first paused poll: it did not sit out the 30 s backoff polling
    assert kinds(log).count("poll-paused") == 1
    assert stage.calls == [["a"]]
    assert consumer.commits == [] and "commit" not in kinds(log)
    assert producer.sent == []
    assert consumer.paused == set()  # resumed on the way out
    assert len(consumer.batches) == 1  # the next batch was never taken
    assert kinds(log)[-3:] == ["flush", "consumer.close", "producer.close"]
    assert w.batches == 0


def test_items_of_revoked_partitions_are_dropped_after_backoff():
    def down_once(items, call_no):
        if call_no == 1:
            raise DependencyError("redis")

    stage = FakeStage(behaviour=down_once)
    w, consumer, producer, stage, log = make([[rec(0, product("a")), rec(0, product("b"), partition=1)]], stage=stage)

    def revoke():  # a rebalance during the backoff takes partition 1 away (and its pause with it)
        consumer.assigned = {TP0}
        consumer.paused.discard(TP1)

    consumer.on_paused_poll = revoke
    run_bounded(w)
    assert stage.calls == [["a", "b"], ["a"]]
    assert produced_ids(producer) == ["a"]
    assert consumer.commits == [{TP0: 1}]


def test_records_polled_during_backoff_from_a_newly_assigned_partition_are_not_lost():
    def down_once(items, call_no):
        if call_no == 1:
            raise DependencyError("triton")

    stage = FakeStage(behaviour=down_once)
    w, consumer, producer, stage, log = make([[rec(0, product("a"))], [rec(1, product("z"), partition=1)]],
                                             stage=stage, assignment=(TP0,))
    handed = []

    def rebalance():  # partition 1 joins mid-backoff, unpaused; poll() fetches its first record
        if not handed:
            handed.append(1)
            consumer.assigned = {TP0, TP1}
            return {TP1: [rec(0, product("y"), partition=1)]}
        return None

    consumer.on_paused_poll = rebalance
    run_bounded(w)
    assert consumer.commits[-1] == {TP1: 2}
    assert sorted(produced_ids(producer)) == ["a", "y", "z"]  # y is lost: only a and z are produced


def test_produce_failure_is_retried_before_commit():
    w, consumer, producer, stage, log = make([[rec(0, product("a"))]])
    producer.fail_gets = 1
    run_bounded(w)
    assert produced_ids(producer) == ["a", "a"]  # resent after the failed acknowledgement
    assert consumer.commits == [{TP0: 1}]
    k = kinds(log)
    assert k.index("pause") < k.index("resume") < len(k) - 1 - k[::-1].index("send") < k.index("commit")


def test_an_output_refused_for_good_becomes_a_dead_letter_and_the_partition_moves_on():
    w, consumer, producer, stage, log = make([[rec(0, product("a")), rec(1, product("b"))]])
    producer.refused[OUT] = TopicAuthorizationFailedError("not allowed")
    run_bounded(w)
    dls = dead_letters(producer)
    assert [d.offset for d in dls] == [0, 1]
    assert all(d.error_type == "undeliverable" and "TopicAuthorizationFailedError" in d.reason for d in dls)
    assert [t for t, _ in producer.acked] == [IN + ".dlq"] * 2
    assert len(producer.on(OUT)) == 2  # each tried once, not resent
    assert consumer.commits == [{TP0: 2}]


def test_a_topic_that_does_not_exist_is_permanent_for_its_record():
    w, consumer, producer, stage, log = make([[rec(0, product("a"))]])
    producer.missing.add(OUT)
    consumer.topics = lambda: {IN, IN + ".dlq"}  # the broker answers, without OUT
    run_bounded(w)
    (dl,) = dead_letters(producer)
    assert dl.error_type == "undeliverable" and "does not exist" in dl.reason
    assert consumer.commits == [{TP0: 1}]


def test_a_metadata_timeout_with_the_broker_down_is_retried():
    w, consumer, producer, stage, log = make([[rec(0, product("a"))]])
    producer.missing.add(OUT)

    def broker_down():
        producer.missing.discard(OUT)  # back on the next try
        raise KafkaTimeoutError("no broker")

    consumer.topics = broker_down
    run_bounded(w)
    assert [t for t, _ in producer.acked] == [OUT] and not dead_letters(producer)
    assert consumer.commits == [{TP0: 1}]


def test_only_the_records_that_failed_are_resent():
    w, consumer, producer, stage, log = make([[rec(0, product("a")), rec(1, product("b")), rec(2, product("c"))]])
    producer.fail_gets = 1  # the first acknowledgement fails (transient)
    run_bounded(w)
    assert produced_ids(producer) == ["a", "b", "c", "a"]
    assert consumer.commits == [{TP0: 3}]


def test_an_output_over_the_record_limit_is_never_sent():
    from workers.runtime.settings import MAX_RECORD_BYTES

    huge = Out(OUT, b"x" * (MAX_RECORD_BYTES + 1))
    stage = FakeStage(per_item=lambda item: Result(outputs=[huge, FakeStage.out(item)]))
    w, consumer, producer, stage, log = make([[rec(0, product("a"))]], stage=stage)
    run_bounded(w)
    assert all(len(v) <= MAX_RECORD_BYTES for _, v, _, _ in producer.sent)
    assert [d.error_type for d in dead_letters(producer)] == ["undeliverable"]
    assert "MessageSizeTooLargeError" in dead_letters(producer)[0].reason
    assert produced_ids(producer) == ["a"]  # the sendable output of the same input still goes out
    assert consumer.commits == [{TP0: 1}]


def test_a_refused_dead_letter_is_dropped_not_retried_forever():
    w, consumer, producer, stage, log = make([[rec(0, product("a"))]])
    producer.refused[OUT] = MessageSizeTooLargeError("too big")
    producer.refused[IN + ".dlq"] = MessageSizeTooLargeError("too big")
    run_bounded(w)
    assert [t for t, *_ in producer.sent] == [OUT, IN + ".dlq"]
    assert consumer.commits == [{TP0: 1}]


def test_stage_replacement_for_an_undeliverable_output_is_sent():
    stage = FakeStage()
    stage.on_undeliverable = lambda rec_, out, err: [Out("replies.own", b"error reply: " + str(err).encode()[:40])]
    w, consumer, producer, stage, log = make([[rec(0, product("a"))]], stage=stage)
    producer.refused[OUT] = TopicAuthorizationFailedError("no")
    run_bounded(w)
    assert [t for t, _ in producer.acked] == ["replies.own", IN + ".dlq"]


def test_dead_letters_carry_their_verdict_in_headers():
    w, consumer, producer, stage, log = make([[rec(0, b"not json")]])
    run_bounded(w)
    (_, _, _, headers), = producer.on(IN + ".dlq")
    h = dict(headers)
    assert h["dlq-stage"] == stage.name.encode() and h["dlq-attempts"] == b"1"
    assert h["dlq-error-type"] == b"invalid_message" and h["dlq-source-topic"] == IN.encode()
    assert b"invalid ProductEvent" in h["dlq-reason"]


def test_a_key_that_names_another_product_is_refused():
    batch = [rec(0, product("a"), key=b"acme:b"), rec(1, product("c"), key=b"acme:c"), rec(2, product("d"))]
    w, consumer, producer, stage, log = make([batch])
    run_bounded(w)
    (dl,) = dead_letters(producer)
    assert dl.offset == 0 and dl.error_type == "key_mismatch" and "'acme:b'" in dl.reason and "'acme:a'" in dl.reason
    assert produced_ids(producer) == ["c", "d"]  # a matching key and a missing key are fine
    assert consumer.commits == [{TP0: 3}]


def test_records_dropped_after_a_rebalance_are_not_committed_past():
    def down_once(items, call_no):
        if call_no == 1:
            raise DependencyError("milvus")
        consumer.assigned = {TP0, TP1}  # partition 1 comes back before the batch commits

    stage = FakeStage(behaviour=down_once)
    batch = [rec(0, product("a"), partition=1), rec(1, b"garbage", partition=1), rec(0, product("b"))]
    w, consumer, producer, stage, log = make([batch], stage=stage)

    def revoke():  # lost during the backoff
        consumer.assigned = {TP0}
        consumer.paused.discard(TP1)

    consumer.on_paused_poll = revoke
    run_bounded(w)
    assert stage.calls[:2] == [["a", "b"], ["b"]]
    # partition 1: offset 0 was dropped, so nothing there is committed (offset 1's dead letter does not count)
    assert consumer.commits[0] == {TP0: 1}
    assert ("seek", TP1, 0) in log  # and it is read again


def test_poll_errors_never_kill_the_worker_and_the_unreadable_offset_is_skipped():
    w, consumer, producer, stage, log = make([[rec(7, product("a"), partition=1)]])
    real_poll = consumer.poll
    state = {"bad": True}

    def poll(timeout_ms=0, max_records=None):
        # partition 1 cannot be read until the worker seeks past offset 3 (FakeConsumer.position says 3)
        if state["bad"] and TP1 not in consumer.paused:
            raise RuntimeError("LZ4F_decompress failed")
        return real_poll(timeout_ms, max_records)

    real_seek = consumer.seek

    def seek(tp, offset):
        if tp == TP1 and offset == 4:
            state["bad"] = False
        real_seek(tp, offset)

    consumer.poll, consumer.seek = poll, seek
    run_bounded(w)
    dl = dead_letters(producer)[0]
    assert (dl.partition, dl.offset, dl.error_type) == (1, 3, "unreadable_batch")
    assert "LZ4F_decompress failed" in dl.reason
    assert {TP1: 4} in consumer.commits
    assert produced_ids(producer) == ["a"]  # the partition moved on


def test_item_retries_poll_between_attempts_and_respect_the_batch_budget():
    def always_fails(items, call_no):
        if len(items) == 1:
            time.sleep(0.05)
        raise ValueError("slow and failing")

    stage = FakeStage(behaviour=always_fails)
    batch = [rec(i, product(f"p{i}")) for i in range(4)]
    w, consumer, producer, stage, log = make([batch], stage=stage, item_attempts=5, batch_retry_budget_s=0.12,
                                             backoff_initial_s=0.001)
    run_bounded(w)
    dls = dead_letters(producer)
    assert [d.offset for d in dls] == [0, 1, 2, 3]
    assert sum(d.attempts for d in dls) < 4 * 5  # the budget cut the retries short
    assert any("retry budget" in d.reason for d in dls)
    # a poll (with partitions paused) after every item keeps the membership alive
    k = kinds(log)
    assert k.count("poll-paused") >= 4


def test_item_of_a_partition_lost_during_a_retry_wait_is_not_processed_again():
    calls = []

    def fail_a(items, call_no):
        calls.append([i.msg.product_id for i in items])
        if len(items) > 1 or items[0].msg.product_id == "a":
            raise ValueError("flaky")

    stage = FakeStage(behaviour=fail_a)
    w, consumer, producer, stage, log = make([[rec(0, product("a"), partition=1), rec(0, product("b"))]],
                                             stage=stage, item_attempts=3)

    def revoke():
        consumer.assigned = {TP0}
        consumer.paused.discard(TP1)

    consumer.on_paused_poll = revoke
    run_bounded(w)
    assert calls.count(["a"]) == 1  # not retried after its partition went to another consumer
    assert produced_ids(producer) == ["b"] and not dead_letters(producer)


def test_retry_budget_must_stay_below_the_poll_interval():
    with pytest.raises(ValueError, match="batch_retry_budget_s"):
        settings(batch_retry_budget_s=200, max_poll_interval_ms=300_000)


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
