"""Kafka clients configured once for every worker and client (the verified settings in docs/local-services.md)."""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from contracts import topics as t
from contracts.client import AT_LEAST_ONCE_PRODUCER, RELIABLE_PRODUCER

from workers.runtime.settings import MAX_RECORD_BYTES, Settings

log = logging.getLogger(__name__)


def producer_conf(s: Settings, **overrides) -> dict:
    conf = dict(
        **s.kafka_common(),
        **RELIABLE_PRODUCER,
        linger_ms=5,
        request_timeout_ms=30_000,
        retries=2**31 - 1,
        delivery_timeout_ms=120_000,
        # send() waits this long for a topic's metadata; then the worker asks whether the topic exists at all
        max_block_ms=15_000,
    )
    if not s.producer_idempotence:
        conf.update(AT_LEAST_ONCE_PRODUCER)
    conf.update(overrides)
    return conf


def make_producer(s: Settings, **overrides) -> KafkaProducer:
    return KafkaProducer(**producer_conf(s, **overrides))


def make_consumer(s: Settings, group_id: str | None, topics: list[str], **overrides) -> KafkaConsumer:
    conf = dict(
        **s.kafka_common(),
        group_id=group_id,
        enable_auto_commit=False,
        # Tansu's ListOffsets 'latest' is wrong (docs/local-services.md): always start from 'earliest'.
        auto_offset_reset="earliest",
        max_poll_records=s.batch_size,
        fetch_max_wait_ms=s.fetch_max_wait_ms,
        session_timeout_ms=s.session_timeout_ms,
        heartbeat_interval_ms=s.heartbeat_interval_ms,
        max_poll_interval_ms=s.max_poll_interval_ms,
        fetch_max_bytes=MAX_RECORD_BYTES * 4,
        max_partition_fetch_bytes=MAX_RECORD_BYTES,
        request_timeout_ms=40_000,
    )
    conf.update(overrides)
    consumer = KafkaConsumer(**conf)
    if topics:
        consumer.subscribe(topics)
    return consumer


def pipeline_topics(s: Settings) -> list[str]:
    inputs = [s.topic_products, s.topic_garments, s.topic_look_requests]
    return [*inputs, s.topic_indexed, s.reply_topic_prefix, *(t.dlq(x) for x in inputs)]


def ensure_topics(s: Settings, names: list[str] | None = None, partitions: int | None = None) -> None:
    """Create the pipeline's topics explicitly (auto-creation would pick the broker's default partitions)."""
    admin = KafkaAdminClient(**s.kafka_common())
    try:
        existing = set(admin.list_topics())
        missing = [n for n in (names or pipeline_topics(s)) if n not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(n, partitions or s.topic_partitions, 1) for n in missing])
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", ", ".join(missing))
    finally:
        admin.close()
