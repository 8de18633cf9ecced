"""How a batch is retried, by whose fault the failure is (the three tiers of workers/runtime/errors.py).

- ``DependencyError``: the batch is retried with backoff, forever, partitions paused; no dead letter.
- ``PoisonError``: the input is bad; a batch of one is dead-lettered at once, a larger one is split.
- ``TransientError`` (e.g. ``FetchUnavailable``) and anything unclassified (a bug): the batch is split and each
  item retried up to ``item_attempts`` times; an item that still fails is dead-lettered, the others proceed. The
  item-by-item pass is bounded by ``batch_retry_budget_s`` and polls (paused) between attempts, so the member
  never outlives ``max_poll_interval_ms``; after every wait, items of partitions we lost are dropped.
"""

from __future__ import annotations

import logging
import time
from typing import Generic

from workers.runtime import metrics as m
from workers.runtime.errors import DependencyError, PoisonError
from workers.runtime.membership import Membership
from workers.runtime.records import Item, Result, Stage, T, event_id
from workers.runtime.settings import Settings

log = logging.getLogger(__name__)


class Backoff:
    def __init__(self, initial: float, maximum: float):
        self.initial, self.maximum, self.current = initial, maximum, initial

    def next(self) -> float:
        d, self.current = self.current, min(self.current * 2, self.maximum)
        return d

    def reset(self) -> None:
        self.current = self.initial


class RetryPolicy(Generic[T]):
    """Runs ``stage.process`` over a batch and decides, per failure tier, what is retried and what dead-lettered."""

    def __init__(self, stage: Stage[T], settings: Settings, backoff: Backoff, membership: Membership):
        self.stage, self.s, self.backoff, self.membership = stage, settings, backoff, membership
        self.name = stage.name

    def process(self, items: list[Item[T]]) -> list[tuple[Item[T], Result]] | None:
        """One (item, result) per item still owned; None when asked to stop while a dependency was down."""
        while True:
            try:
                results = self.stage.process(items)
                self.backoff.reset()
                return list(zip(items, results, strict=True))
            except DependencyError as e:
                m.DEPENDENCY_RETRIES.labels(self.name, e.dependency).inc()
                if not self.membership.wait_paused(self.backoff.next(), f"{e.dependency} unavailable: {e}"):
                    return None
                items = self.membership.still_owned(items)
                if not items:
                    return []
            except PoisonError as e:
                if len(items) == 1:
                    return [(items[0], Result(dead_letter=e))]
                return self._one_by_one(items)
            except Exception:  # TransientError or unclassified
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
                if not self.membership.owns(item):  # lost in a rebalance during an earlier wait: the new owner has it
                    break
                attempt += 1
                try:
                    out.append((item, self.stage.process([item])[0]))
                    break
                except DependencyError as e:
                    m.DEPENDENCY_RETRIES.labels(self.name, e.dependency).inc()
                    attempt -= 1  # not the item's fault
                    if not self.membership.wait_paused(self.backoff.next(), f"{e.dependency} unavailable: {e}"):
                        return None
                except Exception as e:  # noqa: BLE001 - PoisonError, TransientError or unclassified: sorted below
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
                                extra={"event_id": event_id(item.msg)})
                    pause = min(self.s.backoff_initial_s * attempt, self.s.backoff_max_s, max(0.0, budget_ends - time.monotonic()))
                    if not self.membership.wait_paused(pause, f"retrying item in {pause:.1f} s", quiet=True):
                        return None
            self.membership.wait_paused(0, "", quiet=True)  # a poll between items: membership outlives slow items
        return out
