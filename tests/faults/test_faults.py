"""Fault injection: while products stream in and looks are asked, break things, then check the promise.

One pipeline (its own durable broker on S3-on-moto, the session's tritonserver, Milvus and Redis) goes
through a sequence of phases. In each phase ~40 product events (200 for the group churn) are published
and 3 look requests asked; the fault is injected while they are in flight; then the phase drains and is
checked:
- lost: a published event with neither an IndexedEvent nor a dead letter (must be 0)
- duplicated: outcome records beyond the first of their event, counted over every outcome record that
  arrived during the phase, whatever phase its event belongs to (0 for graceful faults; a crash or a
  rebalance between produce and commit may replay a batch: the replay is idempotent, so Milvus rows
  stay exact)
- Milvus rows == the garments the outcomes announced (no duplicates, no losses)
- every look request got a reply
Every injected fault is undone in a ``finally``. A table is printed at the end (pytest -s shows it).
``LOOKSTREAM_FAULTS_ONLY=redis,milvus`` runs only the phases whose name contains one of those words
(for working on one fault; the suite runs them all).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable

import pytest

from contracts import codec, topics
from contracts.client import AT_LEAST_ONCE_PRODUCER, CatalogPublisher, LookClient
from contracts.models import DeadLetter, IndexedEvent, ProductEvent
from workers.local import stack
from workers.adapters.milvus_index import GarmentIndex

from support.pipeline import FAST_GROUP, Pipeline
from support.waits import wait_for
from support.broker_forensics import explain_lost
from support.fault_injections import (Phase, broker_restart, group_churn, kill9, nothing, outage, paused,
                                     publish_kafka_python, publish_librdkafka_codecs, redis_read_only, sigterm)

# Each test runs many phases with 30 s outages: more than the suite's default 600 s per test on a loaded
# 2-core machine. The bound stays (a hang still fails), sized to the phases.
pytestmark = [pytest.mark.faults, pytest.mark.timeout(1800)]

EVENTS_PER_PHASE = 40
TENANT = "faults"
# Triton's client timeout in this pipeline; raise it on a machine so loaded that a tiny-model batch takes
# longer (the slow-triton phase then stops Triton for longer too: always beyond the timeout).
TRITON_TIMEOUT_S = float(os.environ.get("LOOKSTREAM_FAULTS_TRITON_TIMEOUT_S", "5"))
TRITON_STOP_S = max(12, round(2.4 * TRITON_TIMEOUT_S))
# The durable broker keeps its log in S3 (moto): every empty fetch costs object listings there. At the
# workers' default 20 ms fetch wait, eight idle consumers starve a reader completely (0 of 400 records in
# 60 s, vs all 400 in 14 s at 500 ms: see docs/testing.md), and the pipeline stalls once the log has grown
# over a few phases. Kafka long-polls in memory; here every client of this broker waits 500 ms.
S3_BROKER_FETCH_WAIT_MS = 500


@dataclass
class Row:
    fault: str
    events: int
    indexed: int
    lost: int
    duplicated: int
    dlq: int
    replies: str
    recovery_s: float


class Outcomes:
    """Every outcome record of the pipeline, counted per event id."""

    def __init__(self, settings):
        from contracts.client import TopicTail

        self.count: Counter = Counter()
        self.records = 0  # every outcome record; records - distinct events = duplicates
        self.indexed: dict[str, IndexedEvent] = {}
        self.dead: dict[str, DeadLetter] = {}
        self.first_after: dict[float, float] = {}
        self.lock = threading.Lock()
        self.last_progress = time.monotonic()
        names = [settings.topic_indexed, topics.dlq(settings.topic_products), topics.dlq(settings.topic_garments)]
        self.tail = TopicTail(settings.kafka_common(), names, self._on, fetch_max_wait_ms=S3_BROKER_FETCH_WAIT_MS)

    def _on(self, r) -> None:
        is_dlq = r.topic.endswith(topics.DLQ_SUFFIX)
        msg = codec.decode(DeadLetter if is_dlq else IndexedEvent, r.value)
        with self.lock:
            self.count[msg.event_id] += 1
            self.records += 1
            (self.dead if is_dlq else self.indexed)[msg.event_id] = msg
            self.last_progress = time.monotonic()

    def done(self, ids) -> int:
        with self.lock:
            return sum(1 for e in ids if self.count[e] > 0)

    def duplicates(self) -> int:
        with self.lock:
            return self.records - len(+self.count)


@pytest.fixture(scope="module")
def durable(services, tmp_path_factory):
    """A broker of its own whose log lives in a local S3, so it can be restarted without loss."""
    state = tmp_path_factory.mktemp("durable")
    s3 = stack.s3_service(state, stack.free_port())
    s3.start()
    broker = stack.durable_broker_service(state, stack.free_port(), s3)
    broker.start()
    yield broker
    broker.proc.stop()
    s3.proc.stop()


@pytest.fixture(scope="module")
def fault_pipeline(services, durable):
    from workers.runtime.kafka_io import ensure_topics

    ns = "faults"
    env = {
        **services.env, **durable.env, **FAST_GROUP,
        "LOOKSTREAM_MILVUS_COLLECTION": "garments_faults",
        "LOOKSTREAM_GROUP_ID_PREFIX": ns,
        "LOOKSTREAM_BATCH_SIZE": "8",
        "LOOKSTREAM_TRITON_TIMEOUT_S": str(TRITON_TIMEOUT_S),
        "LOOKSTREAM_BACKOFF_MAX_S": "2",
        "LOOKSTREAM_FETCH_MAX_WAIT_MS": str(S3_BROKER_FETCH_WAIT_MS),
        # this broker's idempotent producer loses acknowledged records across kill -9 (bench/broker_acks.py: 11 of
        # 4437 with it, 0 without): the suite checks the pipeline's at-least-once path, not Tansu's dedupe
        "LOOKSTREAM_PRODUCER_IDEMPOTENCE": "false",
    }
    p = Pipeline(services, ns, env)
    ensure_topics(p.settings)
    for kind in ("segmentation", "embedding", "query"):
        p.start_worker(kind, name=f"faults-{kind}")
    for proc in p.procs:
        p.wait_ready(proc, timeout=90)
    yield p
    p.stop_all()


@dataclass
class Fault:
    name: str
    inject: Callable
    may_duplicate: bool
    events: int = EVENTS_PER_PHASE
    publish: Callable = publish_kafka_python


FAULTS = [
    Fault("kill -9 segmentation", kill9("segmentation"), True),
    Fault("kill -9 embedding", kill9("embedding"), True),
    Fault("kill -9 query", kill9("query"), True),
    Fault("SIGTERM segmentation", sigterm("segmentation"), False),
    Fault("SIGTERM embedding", sigterm("embedding"), False),
    Fault("SIGTERM query", sigterm("query"), False),
    Fault("tritonserver killed + restarted", outage("triton", 2), False),
    Fault("redis down 30 s", outage("redis", 30), False),
    Fault("milvus down 30 s", outage("milvus", 30), False),
    Fault(f"slow triton (stopped {TRITON_STOP_S} s > {TRITON_TIMEOUT_S:g} s timeout)", paused("triton", TRITON_STOP_S),
          False),
]
# Lost an event in ~1 of 10 runs until 2026-12-02: a commit to the dead broker crashed the worker (fixed in
# workers/runtime/commit.py) and Tansu's idempotent producer lost acked records (the suite runs at-least-once:
# bench/broker_acks.py). 24 of 24 after the fixes; out of the default run until more agree (README Tests).
BROKER_FAULTS = [Fault("broker kill -9 + restart (S3 storage)", broker_restart, True)]
MORE_FAULTS = [
    Fault("redis read-only (replica of a dead master) 30 s", redis_read_only(30), False),
    Fault("slow milvus (stopped 8 s)", paused("milvus", 8), False),
    Fault("librdkafka gzip/snappy/lz4/zstd batches", nothing, False, publish=publish_librdkafka_codecs),
    # a member joining takes partitions from one that may be mid-batch: its commit is refused, the batch replays
    Fault("second worker joins + leaves every 4 s", group_churn(4), True, events=200),
]
ONLY = [w.strip() for w in os.environ.get("LOOKSTREAM_FAULTS_ONLY", "").split(",") if w.strip()]
# Runs the broker kill -9 phase this many times in one session (hunting a rare loss: ~40 s a phase).
BROKER_REPEAT = int(os.environ.get("LOOKSTREAM_FAULTS_BROKER_REPEAT", "1"))


class Harness:
    """The pipeline's clients and what every phase so far announced (Milvus must hold exactly that)."""

    def __init__(self, p: Pipeline, svc: dict, products):
        s = p.settings
        self.p, self.svc, self.products = p, svc, products
        self.outcomes = Outcomes(s)
        self.pub = CatalogPublisher(s.bootstrap_servers, topic=s.topic_products, request_timeout_ms=30000,
                                    **AT_LEAST_ONCE_PRODUCER)
        self.looks = LookClient(s.bootstrap_servers, tenant=TENANT, request_topic=s.topic_look_requests,
                                reply_fetch_max_wait_ms=S3_BROKER_FETCH_WAIT_MS, producer=AT_LEAST_ONCE_PRODUCER)
        self.index = GarmentIndex(s)
        self.announced: dict[str, set[str]] = defaultdict(set)  # product -> garment ids of its latest outcome
        self.seq = 0

    def close(self) -> None:
        self.pub.close()
        self.looks.close()
        self.outcomes.tail.close()
        self.index.close()

    def run(self, faults: list[Fault]) -> None:
        rows: list[Row] = []
        try:
            for f in faults:
                if not ONLY or any(w in f.name for w in ONLY):
                    try:
                        self.phase(f, rows)
                    except BaseException:
                        self.show_logs()
                        raise
        finally:
            w = max([42, *(len(r.fault) for r in rows)])
            table = ["", f"{'fault':<{w}} {'events':>6} {'indexed':>7} {'lost':>5} {'dup':>4} {'dlq':>4} "
                         f"{'replies':<18} {'phase s':>8}"]
            table += [f"{r.fault:<{w}} {r.events:>6} {r.indexed:>7} {r.lost:>5} {r.duplicated:>4} {r.dlq:>4} "
                      f"{r.replies:<18} {r.recovery_s:>8}" for r in rows]
            print("\n".join(table))

    def show_logs(self) -> None:
        """A failed phase says what the workers and the broker were doing when it failed."""
        for proc in [*self.p.procs, self.svc["broker"].proc]:
            print(f"\n==== log of {proc.name} ====\n{proc.tail(80)}", flush=True)

    def phase(self, f: Fault, rows: list[Row]) -> None:
        p, s, outcomes, products = self.p, self.p.settings, self.outcomes, self.products
        fault, may_duplicate = f.name, f.may_duplicate
        dup_before = outcomes.duplicates()
        events = []
        for i in range(f.events):
            prod = products[(self.seq + i) % len(products)]
            events.append(ProductEvent(tenant=TENANT, product_id=f"p{(self.seq + i) % 120:03d}",
                                       image={"bytes": prod.path.read_bytes()}, metadata=prod.metadata))
        ids = [ev.event_id for ev in events]
        self.seq += f.events
        f.publish(self.pub, s, events)
        wait_for(lambda: outcomes.done(ids) >= 8, 120, f"{fault}: progress before the fault")
        # the looks are asked right before the fault, so a query-worker fault meets them in flight
        asks = [self.looks.send(products[k].path.read_bytes(), timeout=180) for k in range(3)]
        t_fault = time.monotonic()
        phase = Phase(finished=lambda: outcomes.done(ids) == len(ids),
                      replies_pending=lambda: sum(1 for fut in asks if not fut.done()))
        f.inject(p, self.svc, phase)
        # no wait_for here: the phase drains until done or out of time, and `lost` below says what is missing
        deadline = time.monotonic() + 300 + 2 * f.events
        while not phase.finished() and time.monotonic() < deadline:
            time.sleep(0.2)
        replies = [self.looks.wait(fut, 200) for fut in asks]
        time.sleep(1)  # a replayed batch's outcomes arrive right after the originals: count them too
        with outcomes.lock:
            lost = sum(1 for e in ids if outcomes.count[e] == 0)
            indexed = sum(1 for e in ids if e in outcomes.indexed)
            dlq = sum(1 for e in ids if e in outcomes.dead)
            for e in ids:
                if e in outcomes.indexed:
                    o = outcomes.indexed[e]
                    self.announced[o.product_id] = set(o.garment_ids)
        dup = outcomes.duplicates() - dup_before
        row = Row(fault + (f" ({phase.note})" if phase.note else ""), len(ids), indexed, lost, dup, dlq,
                  ",".join(sorted(Counter(r.status.value for r in replies).elements())),
                  round(time.monotonic() - t_fault, 1))
        rows.append(row)  # in the table even when an assertion below fails
        print(f"{row.fault}: {row.events} events, {indexed} indexed, {lost} lost, {dup} duplicated, {dlq} DLQ, "
              f"replies {row.replies}, {row.recovery_s} s", flush=True)
        if lost:
            missing = [e for e in ids if outcomes.count[e] == 0]
            print(f"{fault}: where the lost events are on the broker now:\n{explain_lost(s, missing)}", flush=True)
        assert lost == 0, (row, [e for e in ids if outcomes.count[e] == 0][:10])
        assert dlq == 0, row  # a dependency outage is never the input's fault
        assert may_duplicate or dup == 0, row
        # every look is answered in full: a fault is never a reason for an expired or partial answer
        assert all(r.status.value == "ok" for r in replies), (fault, [(r.status.value, r.error) for r in replies])
        # Milvus holds exactly the latest garments of every product: no duplicates, no losses
        milvus = _retry(lambda: self.index.rows(f'tenant == "{TENANT}"', ("id", "product_id")))
        want = {g for gs in self.announced.values() for g in gs}
        assert len(milvus) == len({r["id"] for r in milvus}) == len(want), fault
        assert {r["id"] for r in milvus} == want, fault


@pytest.fixture(scope="module")
def harness(fault_pipeline, durable, sample_catalog, services):
    h = Harness(fault_pipeline, {**services.services, "broker": durable}, sample_catalog[1])
    yield h
    h.close()


def test_faults_lose_nothing_and_index_nothing_twice(harness):
    harness.run(FAULTS)


@pytest.mark.broker_crash
@pytest.mark.timeout(max(600, 300 + 150 * BROKER_REPEAT))  # the suite's 600 s cut a 10-phase hunt off at phase 6
def test_broker_crash_loses_nothing(harness):
    harness.run(BROKER_FAULTS * BROKER_REPEAT)


def test_churn_readonly_redis_slow_milvus_and_codecs_lose_nothing(harness):
    """The issue-12 additions, a test of their own: each test of the suite stays within the 600 s limit."""
    harness.run(MORE_FAULTS)


def _retry(fn, seconds: float = 60):
    """The checker itself rides out a dependency that is still coming back."""
    from workers.runtime.errors import DependencyError

    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except DependencyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
