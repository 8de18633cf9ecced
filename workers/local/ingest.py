"""``lookstream ingest``: read a catalog (folder, JSONL or CSV), publish it, wait for every outcome."""

from __future__ import annotations

import csv
import json
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from contracts import codec, topics
from contracts.client import CatalogPublisher, TopicTail
from contracts.models import DeadLetter, IndexedEvent, ProductEvent

from workers.runtime.settings import Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


@dataclass(frozen=True)
class CatalogEntry:
    product_id: str
    image: Path
    metadata: dict
    more_images: tuple[Path, ...] = ()  # further shots of the product (back, flat, on model)
    garments: tuple[str, ...] | None = None  # the labels the product is (None: every garment found)

    def event_fields(self) -> dict:
        """ProductEvent fields for this entry's images and garments."""
        if self.more_images:
            out: dict = {"images": [{"bytes": p.read_bytes()} for p in (self.image, *self.more_images)]}
        else:
            out = {"image": {"bytes": self.image.read_bytes()}}
        if self.garments is not None:
            out["garments"] = list(self.garments)
        return out


def read_catalog(path: Path) -> list[CatalogEntry]:
    """A folder with catalog.jsonl, a folder of images (id = file stem), a .jsonl or a .csv file.

    JSONL lines: {"product_id", "image" (path relative to the file), "metadata": {...}}, optionally "images"
    (further shots, paths relative to the file) and "garments" (the labels the product is, e.g. ["Dress"]).
    CSV columns: product_id, image, and any of title, brand, category, price, currency, url, in_stock.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "catalog.jsonl").exists():
            return read_catalog(path / "catalog.jsonl")
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path}: no catalog.jsonl and no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return [CatalogEntry(p.stem, p, {"title": p.stem}) for p in files]
    if path.suffix == ".jsonl":
        out = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    d = json.loads(line)
                    garments = d.get("garments")
                    out.append(CatalogEntry(str(d["product_id"]), path.parent / d["image"], d.get("metadata", {}),
                                            tuple(path.parent / i for i in d.get("images", ())),
                                            tuple(garments) if garments is not None else None))
                except (ValueError, KeyError) as e:
                    raise ValueError(f"{path}:{n}: bad catalog line ({e})") from None
        return out
    if path.suffix == ".csv":
        out = []
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                md = {k: v for k, v in row.items() if k not in ("product_id", "image") and v not in (None, "")}
                if "price" in md:
                    md["price"] = float(md["price"])
                if "in_stock" in md:
                    md["in_stock"] = md["in_stock"].strip().lower() in ("1", "true", "yes")
                out.append(CatalogEntry(row["product_id"], path.parent / row["image"], md))
        return out
    raise ValueError(f"{path}: expected a folder, a .jsonl or a .csv catalog")


@dataclass
class IngestReport:
    published: int = 0
    indexed: int = 0
    no_garments: int = 0
    garment_not_found: int = 0  # the product named its garments and none was found
    deleted: int = 0
    stale: int = 0  # skipped: older than what the product already holds (a replayed old event)
    failed: dict[str, str] = field(default_factory=dict)  # product_id -> reason
    labels: Counter = field(default_factory=Counter)
    outcomes: dict[str, IndexedEvent | DeadLetter] = field(default_factory=dict)  # event_id -> outcome
    missing: list[str] = field(default_factory=list)  # event ids without an outcome at the deadline
    seconds: float = 0.0
    publish_seconds: float = 0.0  # until every event was handed to the broker
    arrival_s: dict[str, float] = field(default_factory=dict)  # event_id -> seconds from the start to its outcome

    def summary(self) -> str:
        lines = [f"published {self.published}, indexed {self.indexed}, no garments {self.no_garments}, "
                 f"own garment not found {self.garment_not_found}, "
                 f"deleted {self.deleted}, stale {self.stale}, failed {len(self.failed)}, no outcome {len(self.missing)} "
                 f"in {self.seconds:.1f} s ({self.published / max(self.seconds, 1e-9):.2f} events/s)"]
        if self.labels:
            lines.append("garments per label: " + ", ".join(f"{k} {v}" for k, v in self.labels.most_common()))
        for pid, reason in sorted(self.failed.items()):
            lines.append(f"  failed {pid}: {reason}")
        return "\n".join(lines)


class OutcomeWatcher:
    """Collects IndexedEvents and dead letters of the ingest path, by event id."""

    def __init__(self, s: Settings):
        self.outcomes: dict[str, IndexedEvent | DeadLetter] = {}
        self.arrived: dict[str, float] = {}  # event id -> monotonic time its first outcome arrived
        self.cond = threading.Condition()
        names = [s.topic_indexed, topics.dlq(s.topic_products), topics.dlq(s.topic_garments)]
        self.tail = TopicTail(s.kafka_common(), names, self._on_record)

    def _on_record(self, r) -> None:
        now = time.monotonic()
        try:
            msg = codec.decode(DeadLetter if r.topic.endswith(topics.DLQ_SUFFIX) else IndexedEvent, r.value)
        except codec.DecodeError:
            return
        if msg.event_id:
            with self.cond:
                if msg.event_id not in self.outcomes:
                    self.outcomes[msg.event_id] = msg
                    self.arrived[msg.event_id] = now
                self.cond.notify_all()

    def wait(self, event_ids: set[str], timeout: float, progress: Callable[[int], None] | None = None) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                done = sum(1 for e in event_ids if e in self.outcomes)
                if progress:
                    progress(done)
                if done >= len(event_ids) or time.monotonic() >= deadline:
                    return
                self.cond.wait(timeout=min(0.5, max(0.01, deadline - time.monotonic())))

    def close(self) -> None:
        self.tail.close()


def ingest(s: Settings, entries: list[CatalogEntry], tenant: str, *, wait: bool = True, timeout: float = 600,
           progress: bool | Callable[[int], None] = False) -> IngestReport:
    """Publish one ProductEvent per entry and (``wait``) collect every outcome until ``timeout``. ``progress``:
    a bar on stderr (True) or a callback with the number of outcomes so far."""
    report = IngestReport()
    watcher = OutcomeWatcher(s) if wait else None
    t0 = time.monotonic()
    events: dict[str, str] = {}
    try:
        with CatalogPublisher(s.bootstrap_servers, topic=s.topic_products, **s.kafka_client_kwargs()) as pub:
            for e in entries:
                ev = ProductEvent(tenant=tenant, product_id=e.product_id, metadata=e.metadata, **e.event_fields())
                pub.publish(ev)
                events[ev.event_id] = e.product_id
        report.published = len(events)
        report.publish_seconds = time.monotonic() - t0
        if watcher is not None:
            bar = progress if callable(progress) else (_progress_bar(len(events)) if progress else None)
            watcher.wait(set(events), timeout, bar)
            if progress is True:
                print(file=sys.stderr)
            for eid, pid in events.items():
                out = watcher.outcomes.get(eid)
                if out is None:
                    report.missing.append(eid)
                    continue
                report.outcomes[eid] = out
                report.arrival_s[eid] = watcher.arrived[eid] - t0
                if isinstance(out, DeadLetter):
                    report.failed[pid] = out.reason
                elif out.status == "indexed":
                    report.indexed += 1
                    report.labels.update(out.labels)
                elif out.status == "no_garments":
                    report.no_garments += 1
                elif out.status == "stale":
                    report.stale += 1
                elif out.status == "garment_not_found":
                    report.garment_not_found += 1
                else:
                    report.deleted += 1
    finally:
        if watcher is not None:
            watcher.close()
    report.seconds = time.monotonic() - t0
    return report


def _progress_bar(total: int) -> Callable[[int], None]:
    last = [-1]

    def show(done: int) -> None:
        if done == last[0]:
            return
        last[0] = done
        width = 30
        filled = int(width * done / max(total, 1))
        print(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)

    return show
