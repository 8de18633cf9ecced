"""Keeping the consumer group's partitions while the worker waits: paused backoff that still polls, ownership checks."""

from __future__ import annotations

import logging
import threading
import time

from kafka.structs import TopicPartition

from workers.runtime.records import Item

log = logging.getLogger(__name__)


class Membership:
    """The consumer's assignment as the retry, produce and commit steps see it."""

    def __init__(self, name: str, consumer, stop: threading.Event):
        self.name, self.consumer, self._stop = name, consumer, stop

    def owns(self, item: Item) -> bool:
        return TopicPartition(item.record.topic, item.record.partition) in self.consumer.assignment()

    def wait_paused(self, seconds: float, why: str, quiet: bool = False) -> bool:
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

    def still_owned(self, items: list[Item]) -> list[Item]:
        owned = self.consumer.assignment()
        kept = [i for i in items if TopicPartition(i.record.topic, i.record.partition) in owned]
        if len(kept) < len(items):
            log.info("%s: %d records now belong to another consumer; dropping them", self.name, len(items) - len(kept))
        return kept
