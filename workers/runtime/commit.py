"""The commit step: per partition, offsets up to the first record whose outcome is not decided, never past it."""

from __future__ import annotations

import logging
import time

from kafka.errors import (CommitFailedError, IllegalGenerationError, KafkaError, RebalanceInProgressError,
                          UnknownMemberIdError)
from kafka.structs import OffsetAndMetadata, TopicPartition

from workers.runtime.records import Record, coords

log = logging.getLogger(__name__)


class Committer:
    def __init__(self, name: str, consumer):
        self.name, self.consumer = name, consumer
        # offsets whose commit met an unreachable broker: sent again with the next commit (or the idle retry)
        self.pending: dict[TopicPartition, int] = {}
        self._last_try = 0.0

    def commit(self, records: list[Record], done: set[tuple[str, int, int]]) -> None:
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
                if coords(r) not in done:
                    rewind[tp] = r.offset
                    break
                upto = r.offset + 1
            if upto is not None:
                offsets[tp] = upto
        self.commit_offsets(offsets)
        for tp, offset in rewind.items():
            self.consumer.seek(tp, offset)

    def commit_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        if self.pending:  # kept from an outage: still ours, and never behind what this batch commits
            owned = self.consumer.assignment()
            offsets = {**{tp: off for tp, off in self.pending.items() if tp in owned},
                       **{tp: max(off, self.pending.get(tp, off)) for tp, off in offsets.items()}}
        if not offsets:
            return
        self._last_try = time.monotonic()
        try:
            self.consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
            self.pending = {}
        except (CommitFailedError, RebalanceInProgressError, IllegalGenerationError, UnknownMemberIdError) as e:
            # The group rebalanced mid-batch (kafka-python 3.0.12 raises RebalanceInProgressError itself when a
            # member joins meanwhile); the new owner replays from the last commit (idempotent).
            self.pending = {}
            log.warning("%s: commit rejected after a rebalance (%s); records will be replayed", self.name, e)
        except KafkaError as e:
            # The broker went away between produce and commit (kill -9 of the broker: this crashed the worker and
            # left its partitions unread). The outputs are acknowledged, so keep the offsets and commit them later;
            # if no commit succeeds before a rebalance, the records replay (at-least-once, idempotent sinks).
            if not e.retriable:  # connection loss, timeouts, coordinator moving: an outage, not a bug
                raise
            self.pending = offsets
            log.warning("%s: commit failed, broker unreachable (%s); %d partition offsets kept for the next commit",
                        self.name, e, len(offsets))

    def retry_pending(self) -> None:
        """An idle poll: commit what an outage left pending (no new batch may come to carry it)."""
        if self.pending and time.monotonic() - self._last_try >= 1.0:
            self.commit_offsets({})
