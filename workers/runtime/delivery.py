"""What the worker does with an output the broker will never take, and how a dead letter is built.

A produce error is either transient (broker down, leader moving, timeouts: resend with backoff, forever) or
permanent for that one record (too large, a topic that does not exist or may not be written, an invalid
name). A permanent one must not block its partition: the output is replaced by a dead letter of the input
that produced it, and the stage may add a replacement (the query worker: an error reply the shopper can
receive). Every output also has a size bound checked before it is sent.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime

from kafka import errors as kerr

from contracts.models import DeadLetter

from workers.runtime import metrics as m
from workers.runtime.errors import PoisonError
from workers.runtime.records import Out

log = logging.getLogger(__name__)

# Refused by the broker (or the client) for this record, whatever happens to the cluster.
PERMANENT_PRODUCE_ERRORS: tuple[type[Exception], ...] = (
    kerr.MessageSizeTooLargeError, kerr.RecordListTooLargeError, kerr.InvalidTopicError,
    kerr.TopicAuthorizationFailedError, kerr.InvalidRecordError,
)
_LEGAL_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")

# Dead letters carry their verdict in headers too, so tools can route them without decoding the body.
DLQ_HEADERS = ("dlq-reason", "dlq-stage", "dlq-attempts", "dlq-error-type", "dlq-source-topic")
_DLQ_KEEP_VALUE_BYTES = 1024 * 1024


class TopicMissing(kerr.KafkaError):
    """The broker answered and does not have the topic (auto-creation off): permanent for this record."""


def is_permanent(error: Exception) -> bool:
    return isinstance(error, (*PERMANENT_PRODUCE_ERRORS, TopicMissing))


def precheck(topic: str, value: bytes, key: bytes | None, headers, max_bytes: int) -> Exception | None:
    """Refusals we can tell before sending, so a record the broker must refuse is never sent."""
    if not _LEGAL_TOPIC.fullmatch(topic) or topic in (".", ".."):
        return kerr.InvalidTopicError(f"illegal topic name {topic[:80]!r}")
    size = len(value) + len(key or b"") + sum(len(k) + len(v or b"") for k, v in headers)
    if size > max_bytes:
        return kerr.MessageSizeTooLargeError(f"record of {size} bytes is over the {max_bytes}-byte limit")
    return None


def dead_letter(stage: str, rec, err: PoisonError, attempts: int, first_seen: datetime, max_bytes: int) -> DeadLetter:
    """The DeadLetter of one input record, cut to fit in one record (base64 makes it 4/3 of the input)."""
    event_id, tenant = peek_ids(rec.value)
    fields = dict(
        stage=stage, source_topic=rec.topic, partition=rec.partition, offset=rec.offset,
        key=rec.key, value=rec.value or b"", headers={k: v or b"" for k, v in rec.headers},
        reason=str(err), error_type=err.category, attempts=max(1, attempts),
        event_id=event_id, tenant=tenant, first_seen_at=first_seen,
    )
    if (len(fields["value"]) * 4) // 3 + 64 * 1024 > max_bytes:
        size = len(fields["value"])
        fields.update(value=fields["value"][:_DLQ_KEEP_VALUE_BYTES],
                      headers={k: v[:1024] for k, v in fields["headers"].items()},
                      reason=f"{fields['reason']} [dead letter keeps the first {_DLQ_KEEP_VALUE_BYTES} of "
                             f"{size} bytes of the record]")
    m.DLQ.labels(stage, err.category).inc()
    log.warning("%s: dead letter %s/%d@%d (%s): %s", stage, rec.topic, rec.partition, rec.offset,
                err.category, err, extra={"event_id": event_id})
    return DeadLetter(**fields)


def dlq_headers(dl: DeadLetter) -> tuple[tuple[str, bytes], ...]:
    values = (dl.reason[:1000], dl.stage, str(dl.attempts), dl.error_type, dl.source_topic)
    return tuple((k, v.encode()) for k, v in zip(DLQ_HEADERS, values))


def peek_ids(raw: bytes | None) -> tuple[str | None, str | None]:
    """Best-effort event id and tenant of an undecodable record, for the dead letter."""
    try:
        d = json.loads(raw or b"")
        ev = d.get("event_id") or d.get("request_id")
        tenant = d.get("tenant")
        return (str(ev)[:128] if ev else None, str(tenant)[:64] if tenant else None)
    except Exception:
        return None, None


class DeadLetters:
    """Builds the dead-letter output of one input record for one stage: ``<input topic>.dlq``, keyed like the input."""

    def __init__(self, stage: str, dlq_topic: str, max_bytes: int):
        self.stage, self.topic, self.max_bytes = stage, dlq_topic, max_bytes

    def of(self, rec, err: PoisonError, attempts: int, first_seen: datetime) -> Out:
        dl = dead_letter(self.stage, rec, err, attempts, first_seen, self.max_bytes)
        key = rec.key.decode(errors="replace") if rec.key else None
        return Out.of(self.topic, dl, key=key, extra_headers=dlq_headers(dl))
