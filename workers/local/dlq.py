"""Dead letters for operators: list them, show one, replay the selected ones to their source topic.

A dead letter (``contracts.models.DeadLetter``) lives in ``<input topic>.dlq`` and carries the original
record (key, value, headers) and why it failed. Reading is group-less and from the beginning of each DLQ
partition up to its fetch high watermark (Tansu's ListOffsets 'latest' is wrong, docs/local-services.md), so
listing never moves anybody's offsets. A replay produces each selected record again, byte for byte, to
the topic its DLQ belongs to, with one extra header (``lookstream-replayed-from``: where the dead letter
was) so a record that fails again is recognisable. Replaying twice sends twice: the stages are
idempotent (an old upsert replayed after a newer change is only harmless once stale events are skipped).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from contracts import codec, topics
from contracts.models import DeadLetter

from workers.runtime.settings import MAX_RECORD_BYTES, Settings

REPLAY_HEADER = "lookstream-replayed-from"


class DlqError(RuntimeError):
    """An operator error with a readable message (unknown topic, missing record, refused replay)."""


@dataclass(frozen=True)
class Letter:
    """One record of a DLQ topic: its position, and the DeadLetter it holds (or why it holds none)."""

    topic: str
    partition: int
    offset: int
    letter: DeadLetter | None
    error: str | None = None

    @property
    def ref(self) -> str:
        return format_ref(self.topic, self.partition, self.offset)


def format_ref(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}@{offset}"


def parse_ref(ref: str) -> tuple[str, int, int]:
    """``catalog.products.dlq/2@17`` -> (topic, partition, offset), as ``list`` prints them."""
    try:
        topic, rest = ref.rsplit("/", 1)
        partition, offset = rest.split("@", 1)
        return topic, int(partition), int(offset)
    except ValueError:
        raise DlqError(f"not a dead-letter reference: {ref!r} (expected TOPIC/PARTITION@OFFSET, as `dlq list` prints)")


def dlq_topics(s: Settings, names: Iterable[str] = ()) -> list[str]:
    """The DLQ topics to read: the named ones (an input topic stands for its DLQ), else every stage's."""
    names = list(names) or [s.topic_products, s.topic_garments, s.topic_look_requests]
    return [n if n.endswith(topics.DLQ_SUFFIX) else topics.dlq(n) for n in names]


def _consumer(s: Settings):
    from kafka import KafkaConsumer

    return KafkaConsumer(**s.kafka_common(), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                         fetch_max_bytes=MAX_RECORD_BYTES * 4, max_partition_fetch_bytes=MAX_RECORD_BYTES,
                         request_timeout_ms=30_000)


def _letter(r) -> Letter:
    try:
        return Letter(r.topic, r.partition, r.offset, codec.decode(DeadLetter, r.value))
    except codec.DecodeError as e:
        return Letter(r.topic, r.partition, r.offset, None, str(e))


def read_letters(s: Settings, topic_names: list[str], timeout_s: float = 60) -> list[Letter]:
    """Every record of these DLQ topics, in (topic, partition, offset) order. A missing topic has none."""
    from kafka import TopicPartition

    consumer = _consumer(s)
    try:
        existing = consumer.topics()
        tps = [TopicPartition(t, p) for t in topic_names if t in existing
               for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Letter] = []
        deadline = time.monotonic() + timeout_s
        pending = set(tps)
        while pending:
            if time.monotonic() > deadline:
                raise DlqError(f"timed out after {timeout_s:.0f} s reading {', '.join(sorted({tp.topic for tp in pending}))}")
            for recs in consumer.poll(timeout_ms=200).values():
                out += [_letter(r) for r in recs]
            for tp in list(pending):
                hw = consumer.highwater(tp)  # known once a fetch for tp has answered
                if hw is not None and consumer.position(tp) >= hw:
                    pending.discard(tp)
        return sorted(out, key=lambda x: (x.topic, x.partition, x.offset))
    finally:
        consumer.close()


def read_one(s: Settings, topic: str, partition: int, offset: int, timeout_s: float = 30) -> Letter:
    from kafka import TopicPartition

    consumer = _consumer(s)
    try:
        if partition not in (consumer.partitions_for_topic(topic) or ()):
            raise DlqError(f"no partition {partition} in topic {topic!r}")
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for r in consumer.poll(timeout_ms=200).get(tp, []):
                if r.offset == offset:
                    return _letter(r)
                if r.offset > offset:
                    raise DlqError(f"no record at {format_ref(topic, partition, offset)} (next is @{r.offset})")
            hw = consumer.highwater(tp)
            if hw is not None and offset >= hw:
                raise DlqError(f"no record at {format_ref(topic, partition, offset)}: the partition ends at {hw}")
        raise DlqError(f"timed out after {timeout_s:.0f} s reading {format_ref(topic, partition, offset)}")
    finally:
        consumer.close()


# ------------------------------------------------------------------------------------------------ selection
@dataclass
class Selection:
    """Which dead letters an operator means. Every given filter must match; substrings ignore case."""

    source_topics: list[str] = field(default_factory=list)
    error_type: str | None = None
    reason: str | None = None
    event_ids: list[str] = field(default_factory=list)
    tenant: str | None = None
    partition: int | None = None  # of the DLQ topic
    offsets: tuple[int, int | None] | None = None  # DLQ offsets, inclusive; (a, None) = from a on

    def matches(self, x: Letter) -> bool:
        d = x.letter
        if d is None:
            return False
        if self.source_topics and d.source_topic not in self.source_topics:
            return False
        if self.error_type and self.error_type.lower() not in d.error_type.lower():
            return False
        if self.reason and self.reason.lower() not in d.reason.lower():
            return False
        if self.event_ids and d.event_id not in self.event_ids:
            return False
        if self.tenant and d.tenant != self.tenant:
            return False
        if self.partition is not None and x.partition != self.partition:
            return False
        if self.offsets is not None:
            lo, hi = self.offsets
            if x.offset < lo or (hi is not None and x.offset > hi):
                return False
        return True


def parse_offsets(text: str) -> tuple[int, int | None]:
    """``5-9`` (inclusive), ``5-`` (from 5 on) or ``5`` (just 5)."""
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            return int(lo), (int(hi) if hi.strip() else None)
        return int(text), int(text)
    except ValueError:
        raise DlqError(f"not an offset range: {text!r} (expected A-B, A- or A)")


# ------------------------------------------------------------------------------------------------ list
@dataclass
class Listing:
    letters: list[Letter]
    counts: Counter  # (source topic, error type) -> dead letters
    unreadable: list[Letter]


def listing(letters: list[Letter], sel: Selection | None = None) -> Listing:
    sel = sel or Selection()
    chosen = [x for x in letters if sel.matches(x)]
    counts = Counter((x.letter.source_topic, x.letter.error_type) for x in chosen)
    return Listing(chosen, counts, [x for x in letters if x.letter is None])


def format_listing(li: Listing, recent: int = 10) -> str:
    lines = []
    if not li.counts:
        lines.append("no dead letters")
    else:
        w = max(12, *(len(t) for t, _ in li.counts))
        lines.append(f"{'source topic':<{w}}  {'error type':<20} {'count':>6}")
        for (t, e), n in sorted(li.counts.items()):
            lines.append(f"{t:<{w}}  {e:<20} {n:>6}")
        lines.append(f"{'total':<{w}}  {'':<20} {sum(li.counts.values()):>6}")
    if li.unreadable:
        lines.append(f"{len(li.unreadable)} record(s) in the DLQ topics are not DeadLetters, e.g. "
                     f"{li.unreadable[0].ref}: {li.unreadable[0].error}")
    if recent and li.letters:
        last = sorted(li.letters, key=lambda x: x.letter.failed_at)[-recent:]
        lines.append(f"\nmost recent {len(last)}:")
        for x in reversed(last):
            d = x.letter
            lines.append(f"  {x.ref:<28} {d.failed_at:%Y-%m-%d %H:%M:%S} {d.stage:<12} {d.error_type:<18} "
                         f"event {d.event_id or '-'}  {_one_line(d.reason, 100)}")
    return "\n".join(lines)


def _one_line(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def format_letter(x: Letter, max_value_chars: int = 2000) -> str:
    if x.letter is None:
        return f"{x.ref}: not a DeadLetter ({x.error})"
    d = x.letter
    lines = [
        f"dead letter  {x.ref}",
        f"source       {format_ref(d.source_topic, d.partition, d.offset)}",
        f"stage        {d.stage}",
        f"error type   {d.error_type}",
        f"attempts     {d.attempts}",
        f"event id     {d.event_id or '-'}",
        f"tenant       {d.tenant or '-'}",
        f"first seen   {d.first_seen_at.isoformat()}",
        f"failed at    {d.failed_at.isoformat()}",
        f"reason       {d.reason}",
        f"key          {d.key!r}" if d.key is not None else "key          (none)",
        "headers      " + (", ".join(f"{k}={v!r}" for k, v in d.headers.items()) or "(none)"),
        f"value        {len(d.value)} bytes:",
    ]
    try:
        text = d.value.decode()
    except UnicodeDecodeError:
        text = repr(d.value[: max_value_chars // 4])
    lines.append(text[:max_value_chars] + (f"... [{len(text) - max_value_chars} more characters]"
                                           if len(text) > max_value_chars else ""))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ replay
@dataclass
class Replayed:
    ref: str  # the dead letter
    target: str  # topic/partition@offset it was produced at
    event_id: str | None


@dataclass
class ReplayPlan:
    chosen: list[Letter]
    refused: list[tuple[Letter, str]]  # selected but not replayable, and why


def plan_replay(letters: list[Letter], sel: Selection) -> ReplayPlan:
    chosen, refused = [], []
    for x in letters:
        if not sel.matches(x):
            continue
        expected = x.topic.removesuffix(topics.DLQ_SUFFIX)
        # A dead letter goes back only where its DLQ says it came from: a forged source_topic
        # (an internal or another tenant's topic) must not turn replay into a way to write there.
        if x.letter.source_topic != expected:
            refused.append((x, f"source_topic {x.letter.source_topic!r} is not the topic of {x.topic!r}"))
        else:
            chosen.append(x)
    return ReplayPlan(chosen, refused)


def replay(s: Settings, plan: ReplayPlan, progress: Callable[[int, int], None] | None = None,
           producer=None) -> list[Replayed]:
    """Produce every chosen record to its source topic; returns where each landed (all acknowledged)."""
    from workers.runtime.kafka_io import make_producer

    own = producer is None
    producer = producer or make_producer(s)
    done: list[Replayed] = []
    total = len(plan.chosen)
    step = max(1, total // 10)
    try:
        pending = []
        for i, x in enumerate(plan.chosen, 1):
            d = x.letter
            headers = [(k, v) for k, v in d.headers.items() if k != REPLAY_HEADER]
            headers.append((REPLAY_HEADER, x.ref.encode()))
            pending.append((x, producer.send(d.source_topic, key=d.key, value=d.value, headers=headers)))
            if i % step == 0 or i == total:
                producer.flush(timeout=60)
                for y, fut in pending:
                    md = fut.get(timeout=30)
                    done.append(Replayed(y.ref, format_ref(md.topic, md.partition, md.offset), y.letter.event_id))
                pending = []
                if progress:
                    progress(len(done), total)
        return done
    finally:
        if own:
            producer.close(timeout=10)
