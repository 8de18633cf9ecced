"""What a stage sees and returns: records detached from the client library, outputs, results, the Stage protocol."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Generic, Iterator, Protocol, TypeVar

from contracts import codec
from contracts.models import Message

from workers.runtime import metrics as m
from workers.runtime.errors import PoisonError

T = TypeVar("T", bound=Message)


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


@dataclass
class Lap:
    """How long one timed step took (set when its block ends)."""

    ms: float = 0.0


class Timings:
    """The stage timer: every step's duration goes to the stage-duration histogram; ``with timings("x") as lap``
    gives it back as ``lap.ms`` (the query reply reports its steps from there)."""

    def __init__(self, worker: str):
        self.worker = worker

    @contextmanager
    def __call__(self, stage: str) -> Iterator[Lap]:
        lap = Lap()
        t0 = time.perf_counter()
        try:
            yield lap
        finally:
            dt = time.perf_counter() - t0
            m.STAGE_SECONDS.labels(self.worker, stage).observe(dt)
            lap.ms = dt * 1000


def coords(r: Record) -> tuple[str, int, int]:
    return (r.topic, r.partition, r.offset)


def event_id(msg: Message) -> str | None:
    """The id to put on log lines about a message: its event id, or a look request's request id."""
    return getattr(msg, "event_id", None) or getattr(msg, "request_id", None)
