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
  ``item_attempts`` times; an item that still fails goes to the DLQ, the others proceed. The whole
  item-by-item pass is bounded by ``batch_retry_budget_s`` and polls (paused) between attempts, so the
  member never outlives ``max_poll_interval_ms``; after every wait, items of partitions we lost are dropped.
- An output the broker refuses for good (too large, missing or forbidden topic) is replaced by a dead
  letter of its input (workers/runtime/delivery.py); only transient produce errors are resent, and only the
  records that failed.
- A record whose key names another product than its payload is refused (per-product ordering).
- An error raised by ``poll()`` itself (corrupt batch, unreadable codec) is counted and logged; a partition
  that keeps failing is found, its unreadable offset dead-lettered and skipped.

Offsets are committed per partition up to the first record that was not processed (dropped after a
rebalance), never past it.
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

from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition

from contracts import codec, topics
from contracts.models import Message

from workers.runtime import delivery
from workers.runtime import metrics as m
from workers.runtime.errors import DependencyError, PoisonError
from workers.runtime.settings import MAX_RECORD_BYTES, Settings

log = logging.getLogger(__name__)

T = TypeVar("T", bound=Message)

# poll() failing this many times in a row makes the worker look for the partition that cannot be read.
POLL_ERRORS_BEFORE_SKIP = 3


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

    # Optional: ``on_undeliverable(record, out, error) -> list[Out]`` replaces an output the broker refused
    # for good (the query worker sends an error reply the shopper can receive instead).


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
        self._poll_failures = 0
        self._last_produce_error: Exception | None = None

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
                records = self._poll()
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

    # ---------------------------------------------------------------- polling
    def _poll(self) -> list[Record]:
        """One poll; an error raised by poll() itself never leaves the loop (it would crash-loop the worker)."""
        try:
            polled = self.consumer.poll(timeout_ms=self.s.poll_timeout_ms, max_records=self.s.batch_size)
            self._poll_failures = 0
        except Exception as e:  # noqa: BLE001 - corrupt batch, codec, decompressor errors are not KafkaErrors only
            _drop_broken_fetch(self.consumer)
            self._poll_failures += 1
            m.POLL_ERRORS.labels(self.name, "error").inc()
            log.error("%s: poll failed (%d in a row): %s: %s", self.name, self._poll_failures, type(e).__name__, e)
            if self._poll_failures >= POLL_ERRORS_BEFORE_SKIP and _unreadable_data(e):
                try:
                    self._skip_unreadable(e)
                except Exception as skip_error:  # noqa: BLE001 - e.g. the broker went away meanwhile: poll again
                    log.error("%s: could not isolate the unreadable partition: %s", self.name, skip_error)
                    self._poll_failures = 0
            else:  # a broker / network error: nothing to skip, wait and poll again
                self._stop.wait(min(1.0, 0.1 * self._poll_failures))
            return []
        return [Record.from_kafka(r) for rs in polled.values() for r in rs]

    def _skip_unreadable(self, error: Exception) -> None:
        """Find the partition poll() cannot read (poll each alone), dead-letter its offset and step over it."""
        assigned = sorted(self.consumer.assignment())
        for tp in assigned:
            others = [x for x in assigned if x != tp]
            if others:
                self.consumer.pause(*others)
            try:
                polled = self.consumer.poll(timeout_ms=max(50, self.s.poll_timeout_ms), max_records=1)
                for ptp, recs in polled.items():  # readable: hand it back, it is fetched again normally
                    if recs:
                        self.consumer.seek(ptp, recs[0].offset)
                continue
            except Exception as e:  # noqa: BLE001 - this is the partition, if the data is what fails
                _drop_broken_fetch(self.consumer)
                if not _unreadable_data(e):
                    raise
                offset = self.consumer.position(tp)
                rec = Record(tp.topic, tp.partition, offset, None, b"")
                err = PoisonError(f"unreadable record batch at {tp.topic}/{tp.partition}@{offset}: "
                                  f"{type(e).__name__}: {e}", category="unreadable_batch")
                log.error("%s: skipping %s/%d@%d: %s", self.name, tp.topic, tp.partition, offset, err)
                self._produce_all([(self._dead_letter(rec, err, 1, datetime.now(timezone.utc)), rec, True)])
                self.consumer.seek(tp, offset + 1)
                self._commit_offsets({tp: offset + 1})
                m.POLL_ERRORS.labels(self.name, "skipped_offset").inc()
                self._poll_failures = 0
                return
            finally:
                if others:
                    self.consumer.resume(*others)
        log.error("%s: poll keeps failing but every partition reads alone (%s); retrying", self.name, error)
        self._poll_failures = 0

    # ---------------------------------------------------------------- one batch
    def _decode(self, rec: Record) -> T:
        try:
            msg = codec.decode(self.stage.message_type, rec.value)
        except codec.DecodeError as e:
            raise PoisonError(str(e), category="invalid_message") from None
        except Exception as e:  # noqa: BLE001 - no input may crash the worker, whatever the parser raises
            raise PoisonError(f"undecodable {self.stage.message_type.__name__}: {type(e).__name__}",
                              category="invalid_message") from None
        want = getattr(msg, "key", None)  # messages about one product are keyed by it: order depends on it
        if rec.key is not None and isinstance(want, str) and rec.key != want.encode():
            raise PoisonError(f"record key {rec.key[:200].decode(errors='replace')!r} does not match the payload's "
                              f"{want!r} (tenant:product_id); refused to keep per-product ordering",
                              category="key_mismatch")
        return msg

    def handle_batch(self, records: list[Record]) -> None:
        m.IN_FLIGHT.labels(self.name).set(len(records))
        m.BATCH_SIZE.labels(self.name).observe(len(records))
        timings = Timings(self.name)
        outs: list[tuple[Out, Record, bool]] = []  # (output, the input it came from, is a replacement)
        done: set[tuple[str, int, int]] = set()    # records whose outcome is decided: commit up to these
        items: list[Item[T]] = []
        with timings("decode"):
            for rec in records:
                try:
                    items.append(Item(rec, self._decode(rec)))
                except PoisonError as err:
                    outs += [(o, rec, False) for o in self.stage.on_invalid(rec, err)]
                    outs.append((self._dead_letter(rec, err, attempts=1, first_seen=datetime.now(timezone.utc)), rec, True))
                    done.add(_coords(rec))
                    self._count(rec.topic, "dlq")
        results = self._process_with_retries(items) if items else []
        if results is None:  # stopped while a dependency was down: nothing committed, the batch replays
            m.IN_FLIGHT.labels(self.name).set(0)
            return
        for item, res in results:
            outs += [(o, item.record, False) for o in res.outputs]
            if res.dead_letter is not None:
                dl = self._dead_letter(item.record, res.dead_letter, res.dead_letter.attempts, item.first_seen_at)
                outs.append((dl, item.record, True))
            done.add(_coords(item.record))
            self._count(item.record.topic, "dlq" if res.dead_letter is not None else "ok")
        with timings("produce"):
            self._produce_all(outs)
        with timings("commit"):
            self._commit(records, done)
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
        """Isolate the item that breaks the batch; the others are processed normally.

        Bounded by ``batch_retry_budget_s``: once it is spent an item gets no further retries. Every wait
        polls (partitions paused) so the group keeps us, and is followed by an ownership check.
        """
        out = []
        budget_ends = time.monotonic() + self.s.batch_retry_budget_s
        for item in items:
            attempt = 0
            while True:
                if not self._owns(item):  # lost in a rebalance during an earlier wait: the new owner has it
                    break
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
                    spent = time.monotonic() >= budget_ends
                    if isinstance(e, PoisonError) or attempt >= self.s.item_attempts or spent:
                        if spent and not isinstance(e, PoisonError) and attempt < self.s.item_attempts:
                            poison = PoisonError(f"{poison} (no retry left: the batch's retry budget of "
                                                 f"{self.s.batch_retry_budget_s:g} s is spent)", category=poison.category)
                        poison.attempts = attempt
                        out.append((item, Result(dead_letter=poison)))
                        break
                    m.MESSAGES.labels(self.name, item.record.topic, "retried").inc()
                    log.warning("%s: item %s/%d@%d failed (attempt %d): %s", self.name, item.record.topic,
                                item.record.partition, item.record.offset, attempt, e,
                                extra={"event_id": _event_id(item.msg)})
                    pause = min(self.s.backoff_initial_s * attempt, self.s.backoff_max_s, max(0.0, budget_ends - time.monotonic()))
                    if not self._wait_paused(pause, f"retrying item in {pause:.1f} s", quiet=True):
                        return None
            self._wait_paused(0, "", quiet=True)  # a poll between items: membership outlives slow items
        return out

    def _owns(self, item: Item[T]) -> bool:
        return TopicPartition(item.record.topic, item.record.partition) in self.consumer.assignment()

    def _wait_paused(self, seconds: float, why: str, quiet: bool = False) -> bool:
        """Back off with partitions paused, polling (at least once) so the group keeps us. False if asked to stop."""
        if not quiet:
            log.warning("%s: %s; retrying in %.1f s", self.name, why, seconds)
        paused = set(self.consumer.assignment())
        self.consumer.pause(*paused)
        try:
            deadline = time.monotonic() + seconds
            while True:
                if self._stop.is_set():
                    return False
                polled = self.consumer.poll(timeout_ms=min(200, max(0, int((deadline - time.monotonic()) * 1000))))
                # A rebalance may hand us a new, unpaused partition mid-backoff: whatever it returned is
                # not processed now, so rewind it (fetched again after the backoff) and pause it too.
                for tp, recs in polled.items():
                    if recs:
                        self.consumer.seek(tp, recs[0].offset)
                new = set(self.consumer.assignment()) - paused
                if new:
                    self.consumer.pause(*new)
                    paused |= new
                if time.monotonic() >= deadline:
                    return True
        except Exception as e:  # noqa: BLE001 - a poll error while waiting is handled by the main loop's poll
            log.warning("%s: poll during a wait failed: %s", self.name, e)
            return not self._stop.is_set()
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
        dl = delivery.dead_letter(self.name, rec, err, attempts, first_seen, MAX_RECORD_BYTES)
        key = rec.key.decode(errors="replace") if rec.key else None
        return Out.of(self.dlq_topic, dl, key=key, extra_headers=delivery.dlq_headers(dl))

    def _produce_all(self, outs: Sequence[tuple[Out, Record, bool]]) -> None:
        """Send everything and wait for every acknowledgement.

        Transient failures resend just the records that failed, with backoff, until the broker takes them.
        A record the broker refuses for good is replaced by a dead letter of its input (and whatever the
        stage offers instead); a replacement refused for good is logged and dropped, never retried forever.
        """
        todo = list(outs)
        while todo:
            transient: list[tuple[Out, Record, bool]] = []
            replacements: list[tuple[Out, Record, bool]] = []
            sent = []
            for o, src, is_replacement in todo:
                error = delivery.precheck(o.topic, o.value, o.key, o.headers, MAX_RECORD_BYTES)
                if error is None:
                    try:
                        future = self.producer.send(o.topic, value=o.value, key=o.key, headers=list(o.headers))
                        sent.append((o, src, is_replacement, future))
                        continue
                    except KafkaError as e:
                        error = self._explain_send_error(o.topic, e)
                self._sort_failure((o, src, is_replacement), error, transient, replacements)
            try:
                self.producer.flush(timeout=60)
            except KafkaError as e:
                log.warning("%s: flush did not complete: %s", self.name, e)
            for o, src, is_replacement, future in sent:
                try:
                    future.get(timeout=1)
                    m.PRODUCED.labels(self.name, self._topic_label(o.topic)).inc()
                except KafkaError as e:
                    self._sort_failure((o, src, is_replacement), e, transient, replacements)
            if transient:
                m.DEPENDENCY_UP.labels(self.name, "kafka").set(0)
                m.DEPENDENCY_RETRIES.labels(self.name, "kafka").inc()
                # Resending may duplicate outputs already acknowledged: downstream is idempotent.
                why = f"produce failed for {len(transient)} records ({transient[0][0].topic}): {self._last_produce_error!r}"
                if not self._wait_paused(self.backoff.next(), why):
                    raise KafkaError("stopped while the broker was refusing records; the batch replays")
            todo = transient + replacements
        m.DEPENDENCY_UP.labels(self.name, "kafka").set(1)
        self.backoff.reset()

    def _sort_failure(self, entry: tuple[Out, Record, bool], error: Exception, transient: list, replacements: list) -> None:
        o, src, is_replacement = entry
        if not delivery.is_permanent(error):
            self._last_produce_error = error
            transient.append(entry)
            return
        m.UNDELIVERABLE.labels(self.name, type(error).__name__).inc()
        if is_replacement:  # a dead letter or an error reply the broker refuses too: nothing left to send
            log.error("%s: %s/%d@%d: replacement output to %s refused for good, dropped: %r", self.name,
                      src.topic, src.partition, src.offset, o.topic, error)
            return
        poison = PoisonError(f"an output to {o.topic[:200]} can never be delivered: {type(error).__name__}: {error}",
                             category="undeliverable")
        offered = getattr(self.stage, "on_undeliverable", None)
        if offered is not None:
            replacements += [(r, src, True) for r in offered(src, o, poison)]
        replacements.append((self._dead_letter(src, poison, 1, datetime.now(timezone.utc)), src, True))

    def _explain_send_error(self, topic: str, error: KafkaError) -> Exception:
        """send() timing out on metadata is a missing topic when the broker answers without it."""
        if isinstance(error, KafkaTimeoutError):
            try:
                if topic not in self.consumer.topics():
                    return delivery.TopicMissing(f"topic {topic[:200]!r} does not exist (auto-creation is off)")
            except Exception:  # noqa: BLE001 - the broker is down: transient
                pass
        return error

    def _topic_label(self, topic: str) -> str:
        """Reply topics are per tenant (and per client): one bounded label value for all of them."""
        prefix = self.s.reply_topic_prefix
        return prefix if topic == prefix or topic.startswith(prefix + ".") else topic

    def _commit(self, records: list[Record], done: set[tuple[str, int, int]]) -> None:
        """Per partition, commit up to the first record not processed (dropped after a rebalance) and
        rewind to it, so a record that was never processed is never committed past."""
        by_tp: dict[TopicPartition, list[Record]] = {}
        for r in records:
            by_tp.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
        owned = self.consumer.assignment()
        offsets, rewind = {}, {}
        for tp, recs in by_tp.items():
            if tp not in owned:
                continue
            recs.sort(key=lambda r: r.offset)
            upto = None
            for r in recs:
                if _coords(r) not in done:
                    rewind[tp] = r.offset
                    break
                upto = r.offset + 1
            if upto is not None:
                offsets[tp] = upto
        self._commit_offsets(offsets)
        for tp, offset in rewind.items():
            self.consumer.seek(tp, offset)

    def _commit_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            self.consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
        except (CommitFailedError, RebalanceInProgressError, IllegalGenerationError, UnknownMemberIdError) as e:
            # The group rebalanced mid-batch (kafka-python 3.0.12 raises RebalanceInProgressError itself when a
            # member joins meanwhile); the new owner replays from the last commit (idempotent).
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


def _drop_broken_fetch(consumer) -> None:
    """Forget the fetched records whose unpacking just raised inside poll().

    kafka-python 3.0.12 keeps the dead record iterator as the next partition's records: the next poll()
    takes nothing from it, never drains it and loops forever (100% CPU, its timeout ignored) unless the
    position moves. Draining it makes the next poll fetch that offset again (and fail again, counted).
    """
    part = getattr(getattr(consumer, "_fetcher", None), "_next_partition_records", None)
    if part:
        part.drain()


def _event_id(msg: Message) -> str | None:
    """The id to put on log lines about a message: its event id, or a look request's request id."""
    return getattr(msg, "event_id", None) or getattr(msg, "request_id", None)


def _unreadable_data(error: Exception) -> bool:
    """A record batch that cannot be read (corrupt, a codec or decompressor failing), as opposed to a broker or
    network error, which must never make the worker skip an offset."""
    from kafka import errors as kerr

    if isinstance(error, (kerr.CorruptRecordError, kerr.UnsupportedCodecError)):
        return True
    return not isinstance(error, kerr.KafkaError)  # lz4/zstd/snappy/zlib raise their own types


def _coords(r: Record) -> tuple[str, int, int]:
    return (r.topic, r.partition, r.offset)
