"""Where did a lost event go? Reads the pipeline's topics from the start and says where each id appears.

A fault test that finds an event without an outcome calls ``explain_lost``: the answer separates the three
possible culprits. The product record missing from ``catalog.products`` means the broker lost an acknowledged
record; present there but with no garments record, the segmentation side lost it; garments present but no
outcome, the embedding side; an outcome present on the topic that the test's tail never delivered, the reader.
"""

from __future__ import annotations

import time

from contracts import topics
from workers.runtime.settings import MAX_RECORD_BYTES


def explain_lost(settings, event_ids: list[str], timeout_s: float = 60) -> str:
    from kafka import KafkaConsumer, TopicPartition

    names = [settings.topic_products, settings.topic_garments, settings.topic_indexed,
             topics.dlq(settings.topic_products), topics.dlq(settings.topic_garments)]
    conf = settings.kafka_common()
    wanted = {e: e.encode() for e in event_ids}
    found: dict[str, list[str]] = {e: [] for e in event_ids}
    lines = []
    consumer = KafkaConsumer(**conf, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                             fetch_max_wait_ms=500, max_partition_fetch_bytes=MAX_RECORD_BYTES,
                             fetch_max_bytes=4 * MAX_RECORD_BYTES)
    try:
        tps = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        starts = {tp: consumer.position(tp) for tp in tps}
        # read until the topics stay quiet (Tansu's end_offsets answers the start of the last batch + 1)
        deadline, quiet_since = time.monotonic() + timeout_s, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 5:
            for records in consumer.poll(timeout_ms=1000).values():
                quiet_since = time.monotonic()
                for r in records:
                    for e, raw in wanted.items():
                        if r.value and raw in r.value:
                            found[e].append(f"{r.topic}[{r.partition}]@{r.offset}")
        lines.append("read (first..next offset): " + ", ".join(
            f"{tp.topic}[{tp.partition}] {starts[tp]}..{consumer.position(tp)}" for tp in tps))
    finally:
        consumer.close()
    # what each stage's group has committed on its input (a consumer with the group id asks; it joins nothing)
    for kind, topic in (("segmentation", settings.topic_products), ("embedding", settings.topic_garments)):
        group = f"{settings.group_id_prefix}-{kind}"
        reader = KafkaConsumer(**conf, group_id=group, enable_auto_commit=False)
        try:
            parts = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
            lines.append(f"committed {group} on {topic}: " + ", ".join(
                f"[{tp.partition}] {reader.committed(tp)}" for tp in parts))
        except Exception as e:  # noqa: BLE001 - forensics report what they can
            lines.append(f"committed {group}: unreadable ({type(e).__name__}: {e})")
        finally:
            reader.close()
    for e in event_ids:
        lines.append(f"event {e}: " + (", ".join(found[e]) or "on no topic (the broker lost the product record)"))
    return "\n".join(lines)
