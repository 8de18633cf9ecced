"""The one consumer loop every worker runs.

    poll a bounded batch -> decode + validate (bad -> DLQ) -> stage.process(batch)
    -> produce outputs and dead letters -> flush the producer -> commit offsets

Offsets are committed only after everything the batch produced is acknowledged by the broker and
every sink write inside ``process`` returned, so a crash at any point replays the batch: at-least-once
delivery plus idempotent sinks (deterministic Milvus ids, Redis hashes) is effectively-once.

Failures are sorted by whose fault they are:
- ``DependencyError`` (Triton, Milvus, Redis down): the batch is retried with backoff, forever, without
  committing and without dead letters. Partitions are paused meanwhile so group membership stays alive.
- ``PoisonError`` or an item result carrying ``dead_letter``: the input itself is bad -> DLQ at once.
- Anything else (a bug, or an error we cannot classify): the batch is split and each item retried up to
  ``item_attempts`` times; an item that still fails goes to the DLQ, the others proceed.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Generic, Iterator, Protocol, Sequence, TypeVar

from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from contracts import codec, topics
from contracts.models import DeadLetter, Message

from . import metrics as m
from .errors import DependencyError, PoisonError
from .settings import MAX_RECORD_BYTES, Settings

log = logging.getLogger(__name__)

T = TypeVar("T", bound=Message)

# A dead letter must itself fit in a record (settings.MAX_RECORD_BYTES, base64 inside JSON).
DLQ_MAX_RECORD_BYTES = MAX_RECORD_BYTES - 256 * 1024
DLQ_KEEP_VALUE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Record:
    """A consumed Kafka record, detached from the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0

    @classmethod
    def from_kafka(cls, r) -> Record:
        return cls(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp)


@dataclass(frozen=True)
class Out:
    """A record to produce."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def of(cls, topic: str, msg: Message, key: str | None = None, extra_headers=()) -> Out:
        return cls(topic, codec.encode(msg), key.encode() if key else None,
                   (*codec.headers_for(msg), *extra_headers))


@dataclass
class Item(Generic[T]):
    """One decoded input of a batch."""

    record: Record
    msg: T
    first_seen_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass
class Result:
    """What one input produced. ``dead_letter`` (a reason) sends the input to the DLQ as well."""

    outputs: list[Out] = field(default_factory=list)
    dead_letter: PoisonError | None = None


class Stage(Protocol[T]):
    """A worker's logic: small, batch-oriented, no Kafka code."""

    name: str  # worker name: metrics label, consumer group suffix, DLQ 'stage'
    input_topic: str
    message_type: type[T]

    def process(self, items: list[Item[T]]) -> list[Result]:
        """One Result per item, in order. Raise DependencyError when a dependency is down."""
        ...

    def on_invalid(self, record: Record, error: PoisonError) -> list[Out]:
        """Outputs for an input that failed to decode (the query worker answers with an error reply)."""
        ...

    def ready_checks(self) -> dict[str, Callable[[], bool]]:
        ...


class Timings:
    """Stage timer feeding the histogram and a per-batch dict (the query reply reports it)."""

    def __init__(self, worker: str):
        self.worker = worker
        self.last: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            m.STAGE_SECONDS.labels(self.worker, stage).observe(dt)
            self.last[stage] = self.last.get(stage, 0.0) + dt * 1000


class Backoff:
    def __init__(self, initial: float, maximum: float):
        self.initial, self.maximum, self.current = initial, maximum, initial

    def next(self) -> float:
        d, self.current = self.current, min(self.current * 2, self.maximum)
        return d

    def reset(self) -> None:
        self.current = self.initial


class Worker(Generic[T]):
    """Runs a Stage against Kafka until stopped (SIGTERM/SIGINT or ``stop()``)."""

    def __init__(self, stage: Stage[T], settings: Settings, consumer, producer, group_id: str):
        self.stage, self.s = stage, settings
        self.consumer, self.producer = consumer, producer
        self.group_id = group_id
        self.name = stage.name
        self.dlq_topic = topics.dlq(stage.input_topic)
        self._stop = threading.Event()
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self.batches = 0

    # ---------------------------------------------------------------- control
    def stop(self, *_args) -> None:
        if not self._stop.is_set():
            log.info("%s: stop requested; finishing the current batch", self.name)
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def assigned(self) -> bool:
        return bool(self.consumer.assignment())

    # ---------------------------------------------------------------- loop
    def run(self) -> None:
        log.info("%s: consuming %s as group %s", self.name, self.stage.input_topic, self.group_id)
        try:
            while not self._stop.is_set():
                polled = self.consumer.poll(timeout_ms=self.s.poll_timeout_ms, max_records=self.s.batch_size)
                records = [Record.from_kafka(r) for rs in polled.values() for r in rs]
                self._update_lag()
                if records:
                    self.handle_batch(records)
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.producer.flush(timeout=10)
        except Exception:  # closing anyway; uncommitted work replays
            log.exception("%s: producer flush on close failed", self.name)
        self.consumer.close()  # leaves the group at once: fast partition hand-over
        self.producer.close(timeout=10)
        log.info("%s: closed", self.name)

    def handle_batch(self, records: list[Record]) -> None:
        m.IN_FLIGHT.labels(self.name).set(len(records))
        m.BATCH_SIZE.labels(self.name).observe(len(records))
        timings = Timings(self.name)
        outs: list[Out] = []
        items: list[Item[T]] = []
        with timings("decode"):
            for rec in records:
                try:
                    items.append(Item(rec, codec.decode(self.stage.message_type, rec.value)))
                except codec.DecodeError as e:
                    err = PoisonError(str(e), category="invalid_message")
                    outs += self.stage.on_invalid(rec, err)
                    outs.append(self._dead_letter(rec, err, attempts=1, first_seen=datetime.now(timezone.utc)))
                    self._count(rec.topic, "dlq")
        results = self._process_with_retries(items) if items else []
        if results is None:  # stopped while a dependency was down: nothing committed, the batch replays
            m.IN_FLIGHT.labels(self.name).set(0)
            return
        for item, res in results:
            outs += res.outputs
            if res.dead_letter is not None:
                outs.append(self._dead_letter(item.record, res.dead_letter, res.dead_letter.attempts, item.first_seen_at))
            self._count(item.record.topic, "dlq" if res.dead_letter is not None else "ok")
        with timings("produce"):
            self._produce_all(outs)
        with timings("commit"):
            self._commit(records)
        self.batches += 1
        m.IN_FLIGHT.labels(self.name).set(0)

    # ---------------------------------------------------------------- processing
    def _process_with_retries(self, items: list[Item[T]]) -> list[tuple[Item[T], Result]] | None:
        while True:
            try:
                results = self.stage.process(items)
                self.backoff.reset()
                return list(zip(items, results, strict=True))
            except DependencyError as e:
                m.DEPENDENCY_RETRIES.labels(self.name, e.dependency).inc()
                if not self._wait_paused(self.backoff.next(), f"{e.dependency} unavailable: {e}"):
                    return None
                items = self._still_owned(items)
                if not items:
                    return []
            except PoisonError as e:
                if len(items) == 1:
                    return [(items[0], Result(dead_letter=e))]
                return self._one_by_one(items)
            except Exception:
                log.exception("%s: batch of %d failed; retrying item by item", self.name, len(items))
                return self._one_by_one(items)

    def _one_by_one(self, items: list[Item[T]]) -> list[tuple[Item[T], Result]] | None:
        """Isolate the item that breaks the batch; the others are processed normally."""
        out = []
        for item in items:
            attempt = 0
            while True:
                attempt += 1
                try:
                    out.append((item, self.stage.process([item])[0]))
                    break
                except DependencyError as e:
                    m.DEPENDENCY_RETRIES.labels(self.name, e.dependency).inc()
                    attempt -= 1  # not the item's fault
                    if not self._wait_paused(self.backoff.next(), f"{e.dependency} unavailable: {e}"):
                        return None
                except Exception as e:  # noqa: BLE001 - classified below
                    poison = e if isinstance(e, PoisonError) else PoisonError(
                        f"{type(e).__name__}: {e}", category="processing_error")
                    if isinstance(e, PoisonError) or attempt >= self.s.item_attempts:
                        poison.attempts = attempt
                        out.append((item, Result(dead_letter=poison)))
                        break
                    m.MESSAGES.labels(self.name, item.record.topic, "retried").inc()
                    log.warning("%s: item %s/%d@%d failed (attempt %d): %s", self.name, item.record.topic,
                                item.record.partition, item.record.offset, attempt, e,
                                extra={"event_id": _event_id(item.msg)})
                    time.sleep(min(self.s.backoff_initial_s * attempt, self.s.backoff_max_s))
        return out

    def _wait_paused(self, seconds: float, why: str) -> bool:
        """Back off with partitions paused, polling so the group keeps us. False if asked to stop."""
        log.warning("%s: %s; retrying in %.1f s", self.name, why, seconds)
        paused = set(self.consumer.assignment())
        self.consumer.pause(*paused)
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if self._stop.is_set():
                    return False
                polled = self.consumer.poll(timeout_ms=min(200, max(1, int((deadline - time.monotonic()) * 1000))))
                # A rebalance may hand us a new, unpaused partition mid-backoff: whatever it returned is
                # not processed now, so rewind it (fetched again after the backoff) and pause it too.
                for tp, recs in polled.items():
                    if recs:
                        self.consumer.seek(tp, recs[0].offset)
                new = set(self.consumer.assignment()) - paused
                if new:
                    self.consumer.pause(*new)
                    paused |= new
            return True
        finally:
            self.consumer.resume(*self.consumer.assignment())

    def _still_owned(self, items: list[Item[T]]) -> list[Item[T]]:
        owned = self.consumer.assignment()
        kept = [i for i in items if TopicPartition(i.record.topic, i.record.partition) in owned]
        if len(kept) < len(items):
            log.info("%s: %d records now belong to another consumer; dropping them", self.name, len(items) - len(kept))
        return kept

    # ---------------------------------------------------------------- outputs
    def _dead_letter(self, rec: Record, err: PoisonError, attempts: int, first_seen: datetime) -> Out:
        event_id, tenant = _peek_ids(rec.value)
        fields = dict(
            stage=self.name, source_topic=rec.topic, partition=rec.partition, offset=rec.offset,
            key=rec.key, value=rec.value or b"", headers={k: v or b"" for k, v in rec.headers},
            reason=str(err), error_type=err.category, attempts=max(1, attempts),
            event_id=event_id, tenant=tenant, first_seen_at=first_seen,
        )
        out = Out.of(self.dlq_topic, DeadLetter(**fields), key=rec.key.decode(errors="replace") if rec.key else None)
        if len(out.value) > DLQ_MAX_RECORD_BYTES:
            # base64 makes a dead letter 4/3 of its input: a record near the size limit would never be
            # accepted by the broker, and the produce retry would block the partition forever. Keep a prefix.
            size = len(fields["value"])
            fields.update(value=fields["value"][:DLQ_KEEP_VALUE_BYTES],
                          headers={k: v[:1024] for k, v in fields["headers"].items()},
                          reason=f"{fields['reason']} [dead letter keeps the first {DLQ_KEEP_VALUE_BYTES} of "
                                 f"{size} bytes of the record]")
            out = Out.of(self.dlq_topic, DeadLetter(**fields), key=out.key.decode(errors="replace") if out.key else None)
        m.DLQ.labels(self.name, err.category).inc()
        log.warning("%s: dead letter %s/%d@%d (%s): %s", self.name, rec.topic, rec.partition, rec.offset,
                    err.category, err, extra={"event_id": event_id})
        return out

    def _produce_all(self, outs: Sequence[Out]) -> None:
        """Send everything, then wait for every acknowledgement; a broker failure retries the whole set."""
        while True:
            try:
                futures = [self.producer.send(o.topic, value=o.value, key=o.key, headers=list(o.headers)) for o in outs]
                self.producer.flush(timeout=60)
                for f in futures:
                    f.get(timeout=1)
                for o in outs:
                    m.PRODUCED.labels(self.name, self._topic_label(o.topic)).inc()
                m.DEPENDENCY_UP.labels(self.name, "kafka").set(1)
                self.backoff.reset()
                return
            except KafkaError as e:
                m.DEPENDENCY_UP.labels(self.name, "kafka").set(0)
                m.DEPENDENCY_RETRIES.labels(self.name, "kafka").inc()
                # Resending may duplicate outputs already acknowledged: downstream is idempotent.
                if not self._wait_paused(self.backoff.next(), f"produce failed: {e!r}"):
                    raise

    def _topic_label(self, topic: str) -> str:
        """Reply topics are per tenant (and per client): one bounded label value for all of them."""
        prefix = self.s.reply_topic_prefix
        return prefix if topic == prefix or topic.startswith(prefix + ".") else topic

    def _commit(self, records: list[Record]) -> None:
        last: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            last[tp] = max(last.get(tp, -1), r.offset)
        owned = self.consumer.assignment()
        offsets = {tp: OffsetAndMetadata(off + 1, "", -1) for tp, off in last.items() if tp in owned}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except CommitFailedError as e:
            # The group rebalanced mid-batch; the new owner replays from the last commit (idempotent).
            log.warning("%s: commit rejected after a rebalance (%s); records will be replayed", self.name, e)

    def _count(self, topic: str, outcome: str) -> None:
        m.MESSAGES.labels(self.name, topic, outcome).inc()

    def _update_lag(self) -> None:
        # Lag from the fetch high watermark: Tansu's ListOffsets 'latest' is wrong (ENVIRONMENT.md).
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            if hw is None:
                continue
            try:
                pos = self.consumer.position(tp, timeout_ms=100)
            except Exception:
                continue
            if pos is not None:
                m.CONSUMER_LAG.labels(self.name, tp.topic, str(tp.partition)).set(max(0, hw - pos))


def _event_id(msg: Message) -> str | None:
    """The id to put on log lines about a message: its event id, or a look request's request id."""
    return getattr(msg, "event_id", None) or getattr(msg, "request_id", None)


def _peek_ids(raw: bytes | None) -> tuple[str | None, str | None]:
    """Best-effort event id and tenant of an undecodable record, for the dead letter."""
    import json

    try:
        d = json.loads(raw or b"")
        ev = d.get("event_id") or d.get("request_id")
        tenant = d.get("tenant")
        return (str(ev)[:128] if ev else None, str(tenant)[:64] if tenant else None)
    except Exception:
        return None, None
