"""The fault suite's forensics (tests/support/broker_forensics.py) find where an event is, on a real broker.

They run only when a fault test has already failed; this checks that they would then tell the truth: an event
found on the topics it was written to, and one written nowhere said to be on no topic.
"""

from __future__ import annotations

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from support.broker_forensics import explain_lost
from workers.local import stack
from workers.runtime.settings import Settings


def test_forensics_find_an_event_on_its_topics_and_say_when_it_is_nowhere(tmp_path):
    broker = stack.broker_service(tmp_path, stack.free_port())
    broker.start()
    try:
        s = Settings(bootstrap_servers=broker.env["LOOKSTREAM_BOOTSTRAP_SERVERS"], group_id_prefix="forensics")
        producer = KafkaProducer(bootstrap_servers=[s.bootstrap_servers], acks="all")
        for topic in (s.topic_products, s.topic_garments):
            meta = producer.send(topic, b'{"event_id": "ev-seen", "tenant": "t"}').get(timeout=30)
        # the embedding group has committed past the garments record: the report must say so
        committer = KafkaConsumer(bootstrap_servers=[s.bootstrap_servers], group_id="forensics-embedding",
                                  enable_auto_commit=False)
        tp = TopicPartition(s.topic_garments, meta.partition)
        committer.assign([tp])
        committer.seek(tp, meta.offset + 1)
        committer.commit()
        committer.close()
        producer.send(s.topic_indexed, b'{"event_id": "ev-other"}').get(timeout=30)
        producer.close(timeout=5)
        report = explain_lost(s, ["ev-seen", "ev-never"], timeout_s=30)
        seen = next(line for line in report.splitlines() if line.startswith("event ev-seen:"))
        assert f"{s.topic_products}[" in seen and f"{s.topic_garments}[" in seen and s.topic_indexed not in seen
        assert "event ev-never: on no topic" in report
        assert f"committed forensics-segmentation on {s.topic_products}: " in report  # nothing committed: None
        embedding = next(line for line in report.splitlines() if line.startswith("committed forensics-embedding"))
        assert f"[{meta.partition}] {meta.offset + 1}" in embedding, report
    finally:
        broker.proc.stop()
