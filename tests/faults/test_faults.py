"""Fault injection: while products stream in and looks are asked, break things, then check the promise.

One pipeline (its own durable broker on S3-on-moto, the session's tritonserver, Milvus and Redis) goes
through a sequence of phases. In each phase ~40 product events are published and 3 look requests
asked; the fault is injected while they are in flight; then the phase drains and is checked:
- lost: a published event with neither an IndexedEvent nor a dead letter (must be 0)
- duplicated: an event with more than one outcome record (0 for graceful faults; a crash between
  produce and commit may replay a batch: the replay is idempotent, so Milvus rows stay exact)
- Milvus rows == the garments the outcomes announced (no duplicates, no losses)
- every look request got a reply
A table is printed at the end (pytest -s shows it; it is also attached to the report).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import pytest

from contracts import codec, topics
from contracts.client import CatalogPublisher, LookClient
from contracts.models import DeadLetter, IndexedEvent, ProductEvent
from workers import stack
from workers.store import GarmentIndex

from conftest import FAST_GROUP, Pipeline, wait_for

pytestmark = pytest.mark.faults

EVENTS_PER_PHASE = 40
TENANT = "faults"


@dataclass
class Row:
    fault: str
    events: int
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
        self.indexed: dict[str, IndexedEvent] = {}
        self.dead: dict[str, DeadLetter] = {}
        self.first_after: dict[float, float] = {}
        self.lock = threading.Lock()
        self.last_progress = time.monotonic()
        names = [settings.topic_indexed, topics.dlq(settings.topic_products), topics.dlq(settings.topic_garments)]
        self.tail = TopicTail(settings.kafka_common(), names, self._on)

    def _on(self, r) -> None:
        is_dlq = r.topic.endswith(topics.DLQ_SUFFIX)
        msg = codec.decode(DeadLetter if is_dlq else IndexedEvent, r.value)
        with self.lock:
            self.count[msg.event_id] += 1
            (self.dead if is_dlq else self.indexed)[msg.event_id] = msg
            self.last_progress = time.monotonic()

    def done(self, ids) -> int:
        with self.lock:
            return sum(1 for e in ids if self.count[e] > 0)


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
    from workers.kafka_io import ensure_topics

    ns = "faults"
    env = {
        **services.env, **durable.env, **FAST_GROUP,
        "LOOKSTREAM_MILVUS_COLLECTION": "garments_faults",
        "LOOKSTREAM_GROUP_ID_PREFIX": ns,
        "LOOKSTREAM_BATCH_SIZE": "8",
        "LOOKSTREAM_TRITON_TIMEOUT_S": "5",
        "LOOKSTREAM_BACKOFF_MAX_S": "2",
    }
    p = Pipeline(services, ns, env)
    ensure_topics(p.settings)
    for kind in ("segmentation", "embedding", "query"):
        p.start_worker(kind, name=f"faults-{kind}")
    for proc in p.procs:
        p.wait_ready(proc, timeout=90)
    yield p
    p.stop_all()


def _worker(p: Pipeline, kind: str) -> stack.Proc:
    return next(x for x in reversed(p.procs) if kind in x.name)


def _restart(p: Pipeline, kind: str) -> None:
    old = _worker(p, kind)
    p.procs.remove(old)
    p.wait_ready(p.start_worker(kind, name=old.name), timeout=90)


def _kill9(kind):
    def inject(p, svc):
        _worker(p, kind).kill()
        time.sleep(1)
        _restart(p, kind)
    return inject


def _sigterm(kind):
    def inject(p, svc):
        proc = _worker(p, kind)
        proc.stop(sig=signal.SIGTERM, timeout=30)
        _restart(p, kind)
    return inject


def _outage(name, seconds):
    def inject(p, svc):
        service = svc[name]
        service.proc.kill()
        time.sleep(seconds)
        service.start()
    return inject


def _slow_triton(p, svc):
    pid = svc["triton"].proc.pid()
    os.kill(pid, signal.SIGSTOP)  # every call in flight now outlives the 5 s client timeout
    time.sleep(12)
    os.kill(pid, signal.SIGCONT)


def _broker_restart(p, svc):
    svc["broker"].proc.kill()
    time.sleep(2)
    svc["broker"].start()


FAULTS = [
    ("kill -9 segmentation", _kill9("segmentation"), True),
    ("kill -9 embedding", _kill9("embedding"), True),
    ("kill -9 query", _kill9("query"), True),
    ("SIGTERM segmentation", _sigterm("segmentation"), False),
    ("SIGTERM embedding", _sigterm("embedding"), False),
    ("SIGTERM query", _sigterm("query"), False),
    ("tritonserver killed + restarted", _outage("triton", 2), False),
    ("redis down 30 s", _outage("redis", 30), False),
    ("milvus down 30 s", _outage("milvus", 30), False),
    ("broker kill -9 + restart (S3 storage)", _broker_restart, True),
    ("slow triton (stopped 12 s > 5 s timeout)", _slow_triton, False),
]


def test_faults_lose_nothing_and_index_nothing_twice(fault_pipeline, durable, sample_catalog, services):
    p = fault_pipeline
    s = p.settings
    root, products = sample_catalog
    svc = {**services.services, "broker": durable}
    outcomes = Outcomes(s)
    pub = CatalogPublisher(s.bootstrap_servers, topic=s.topic_products, request_timeout_ms=30000)
    looks = LookClient(s.bootstrap_servers, tenant=TENANT, request_topic=s.topic_look_requests)
    index = GarmentIndex(s)
    rows: list[Row] = []
    announced: dict[str, set[str]] = defaultdict(set)  # product -> garment ids of its latest outcome
    seq = 0
    try:
        for fault, inject, may_duplicate in FAULTS:
            ids = []
            for i in range(EVENTS_PER_PHASE):
                prod = products[(seq + i) % len(products)]
                ev = ProductEvent(tenant=TENANT, product_id=f"p{(seq + i) % 120:03d}",
                                  image={"bytes": prod.path.read_bytes()}, metadata=prod.metadata)
                pub.publish(ev)
                ids.append(ev.event_id)
            seq += EVENTS_PER_PHASE
            pub.flush()
            asks = [looks.send(products[k].path.read_bytes(), timeout=180) for k in range(3)]
            wait_for(lambda: outcomes.done(ids) >= 8, 120, f"{fault}: progress before the fault")
            t_fault = time.monotonic()
            inject(p, svc)
            t_back = time.monotonic()
            wait_for(lambda: outcomes.done(ids) == len(ids), 300, f"{fault}: all {len(ids)} outcomes")
            recovery = max(0.0, min(outcomes.last_progress, time.monotonic()) - t_back)
            replies = [looks.wait(f, 200) for f in asks]
            with outcomes.lock:
                lost = sum(1 for e in ids if outcomes.count[e] == 0)
                dup = sum(1 for e in ids if outcomes.count[e] > 1)
                dlq = sum(1 for e in ids if e in outcomes.dead)
                for e in ids:
                    if e in outcomes.indexed:
                        o = outcomes.indexed[e]
                        announced[o.product_id] = set(o.garment_ids)
            rows.append(Row(fault, len(ids), lost, dup, dlq,
                            ",".join(sorted(Counter(r.status.value for r in replies).elements())),
                            round(time.monotonic() - t_fault, 1)))
            assert lost == 0, fault
            assert dlq == 0, fault  # a dependency outage is never the input's fault
            assert may_duplicate or dup == 0, fault
            assert all(r.status.value in ("ok", "expired") for r in replies), (fault, [r.error for r in replies])
            # Milvus holds exactly the latest garments of every product: no duplicates, no losses
            milvus = _retry(lambda: index.rows(f'tenant == "{TENANT}"', ("id", "product_id")))
            want = {g for gs in announced.values() for g in gs}
            assert len(milvus) == len({r["id"] for r in milvus}) == len(want), fault
            assert {r["id"] for r in milvus} == want, fault
    finally:
        table = ["", f"{'fault':<42} {'events':>6} {'lost':>5} {'dup':>4} {'dlq':>4} {'replies':<18} {'phase s':>8}"]
        table += [f"{r.fault:<42} {r.events:>6} {r.lost:>5} {r.duplicated:>4} {r.dlq:>4} {r.replies:<18} {r.recovery_s:>8}"
                  for r in rows]
        print("\n".join(table))
        pub.close()
        looks.close()
        outcomes.tail.close()
        index.close()


def _retry(fn, seconds: float = 60):
    """The checker itself rides out a dependency that is still coming back."""
    from workers.errors import DependencyError

    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except DependencyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
