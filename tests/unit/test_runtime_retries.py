"""The Worker loop on in-memory Kafka fakes: dependency outages, produce failures, rebalances during waits, poll errors."""

from __future__ import annotations

import time

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, TopicAuthorizationFailedError
from support.runtime_fakes import (
    FakeStage, IN, OUT, TP0, TP1, dead_letters, kinds, make, produced_ids, product, rec, run_bounded, settings,
)

from workers.runtime.errors import DependencyError
from workers.runtime.records import Out, Result


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


