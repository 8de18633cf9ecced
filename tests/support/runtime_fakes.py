"""In-memory fakes of the Kafka clients for the Worker loop's unit tests (tests/unit/test_runtime_*.py).

The fakes only stand in for the client objects' calls (poll/pause/commit/send/flush); every rule the tests check
is pure logic of workers/runtime/: produce and flush before commit, last offset + 1 per partition, dead letters for
undecodable input, retry on DependencyError with paused partitions, batch splitting.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import namedtuple

from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition

from contracts import codec
from contracts.models import DeadLetter, IndexedEvent, ProductEvent
from workers.runtime.errors import PoisonError
from workers.runtime.records import Out, Record, Result
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
