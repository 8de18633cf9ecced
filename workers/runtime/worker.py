"""The one consumer loop every worker runs.

    poll a bounded batch -> decode + validate (bad -> DLQ) -> stage.process(batch)
    -> produce outputs and dead letters -> flush the producer -> commit offsets

Offsets are committed only after everything the batch produced is acknowledged by the broker and
every sink write inside ``process`` returned, so a crash at any point replays the batch: at-least-once
delivery plus idempotent sinks (deterministic Milvus ids, Redis hashes) is effectively-once.

The steps live beside it: retry.py (failures sorted by whose fault they are: ``DependencyError`` retried
forever, ``TransientError`` and unclassified errors retried ``item_attempts`` times then dead-lettered,
``PoisonError`` dead-lettered at once), publish.py (produce and wait for every acknowledgement; an output the
broker refuses for good becomes a dead letter, delivery.py), commit.py, membership.py (paused waits that keep
the group). This module is the loop and what only it does:
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
from datetime import datetime, timezone
from typing import Generic

from contracts import codec, topics

from workers.runtime import delivery
from workers.runtime import metrics as m
from workers.runtime.commit import Committer
from workers.runtime.errors import PoisonError
from workers.runtime.membership import Membership
from workers.runtime.publish import Entry, Publisher
from workers.runtime.records import Item, Record, Stage, T, Timings, coords
from workers.runtime.retry import Backoff, RetryPolicy
from workers.runtime.settings import MAX_RECORD_BYTES, Settings

log = logging.getLogger(__name__)

# poll() failing this many times in a row makes the worker look for the partition that cannot be read.
POLL_ERRORS_BEFORE_SKIP = 3


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
        self.membership = Membership(self.name, consumer, self._stop)
        self.dead_letters = delivery.DeadLetters(self.name, self.dlq_topic, MAX_RECORD_BYTES)
        self.retry = RetryPolicy(stage, settings, self.backoff, self.membership)
        self.publisher = Publisher(stage, settings, producer, consumer, self.dead_letters, self.backoff, self.membership)
        self.committer = Committer(self.name, consumer)

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
                else:
                    self.committer.retry_pending()
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
                self.publisher.send_all([(self.dead_letters.of(rec, err, 1, datetime.now(timezone.utc)), rec, True)])
                self.consumer.seek(tp, offset + 1)
                self.committer.commit_offsets({tp: offset + 1})
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
        outs: list[Entry] = []  # (output, the input it came from, is a replacement)
        done: set[tuple[str, int, int]] = set()    # records whose outcome is decided: commit up to these
        items: list[Item[T]] = []
        with timings("decode"):
            for rec in records:
                try:
                    items.append(Item(rec, self._decode(rec)))
                except PoisonError as err:
                    outs += [(o, rec, False) for o in self.stage.on_invalid(rec, err)]
                    outs.append((self.dead_letters.of(rec, err, attempts=1, first_seen=datetime.now(timezone.utc)), rec, True))
                    done.add(coords(rec))
                    self._count(rec.topic, "dlq")
        results = self.retry.process(items) if items else []
        if results is None:  # stopped while a dependency was down: nothing committed, the batch replays
            m.IN_FLIGHT.labels(self.name).set(0)
            return
        for item, res in results:
            outs += [(o, item.record, False) for o in res.outputs]
            if res.dead_letter is not None:
                dl = self.dead_letters.of(item.record, res.dead_letter, res.dead_letter.attempts, item.first_seen_at)
                outs.append((dl, item.record, True))
            done.add(coords(item.record))
            self._count(item.record.topic, "dlq" if res.dead_letter is not None else "ok")
        with timings("produce"):
            self.publisher.send_all(outs)
        with timings("commit"):
            self.committer.commit(records, done)
        self.batches += 1
        m.IN_FLIGHT.labels(self.name).set(0)

    def _count(self, topic: str, outcome: str) -> None:
        m.MESSAGES.labels(self.name, topic, outcome).inc()

    def _update_lag(self) -> None:
        # Lag from the fetch high watermark: Tansu's ListOffsets 'latest' is wrong (docs/local-services.md).
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


def _unreadable_data(error: Exception) -> bool:
    """A record batch that cannot be read (corrupt, a codec or decompressor failing), as opposed to a broker or
    network error, which must never make the worker skip an offset."""
    from kafka import errors as kerr

    if isinstance(error, (kerr.CorruptRecordError, kerr.UnsupportedCodecError)):
        return True
    return not isinstance(error, kerr.KafkaError)  # lz4/zstd/snappy/zlib raise their own types

