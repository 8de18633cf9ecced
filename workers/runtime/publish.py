"""The produce step: send a batch's outputs and wait for every acknowledgement before anything is committed.

Transient failures resend just the records that failed, with backoff, until the broker takes them. A record the
broker refuses for good is replaced by a dead letter of its input (and whatever the stage offers instead,
``on_undeliverable``); a replacement refused for good is logged and dropped, never retried forever.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Sequence

from kafka.errors import KafkaError, KafkaTimeoutError

from workers.runtime import delivery
from workers.runtime import metrics as m
from workers.runtime.errors import PoisonError
from workers.runtime.membership import Membership
from workers.runtime.records import Out, Record, Stage
from workers.runtime.retry import Backoff
from workers.runtime.settings import MAX_RECORD_BYTES, Settings

log = logging.getLogger(__name__)

Entry = tuple[Out, Record, bool]  # (output, the input it came from, is a replacement)


class Publisher:
    def __init__(self, stage: Stage, settings: Settings, producer, consumer, dead_letters: delivery.DeadLetters,
                 backoff: Backoff, membership: Membership):
        self.stage, self.s, self.producer, self.consumer = stage, settings, producer, consumer
        self.dead_letters, self.backoff, self.membership = dead_letters, backoff, membership
        self.name = stage.name
        self.last_error: Exception | None = None

    def send_all(self, outs: Sequence[Entry]) -> None:
        """Send everything and wait for every acknowledgement (see the module docstring)."""
        todo = list(outs)
        while todo:
            transient: list[Entry] = []
            replacements: list[Entry] = []
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
                why = f"produce failed for {len(transient)} records ({transient[0][0].topic}): {self.last_error!r}"
                if not self.membership.wait_paused(self.backoff.next(), why):
                    raise KafkaError("stopped while the broker was refusing records; the batch replays")
            todo = transient + replacements
        m.DEPENDENCY_UP.labels(self.name, "kafka").set(1)
        self.backoff.reset()

    def _sort_failure(self, entry: Entry, error: Exception, transient: list, replacements: list) -> None:
        o, src, is_replacement = entry
        if not delivery.is_permanent(error):
            self.last_error = error
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
        replacements.append((self.dead_letters.of(src, poison, 1, datetime.now(timezone.utc)), src, True))

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
