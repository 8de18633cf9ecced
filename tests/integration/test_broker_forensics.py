"""The fault suite's forensics (tests/support/broker_forensics.py) find where an event is, on a real broker.

They run only when a fault test has already failed; this checks that they would then tell the truth: an event
found on the topics it was written to, and one written nowhere said to be on no topic.
"""

from __future__ import annotations

from kafka import KafkaProducer

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
            producer.send(topic, b'{"event_id": "ev-seen", "tenant": "t"}').get(timeout=30)
        producer.send(s.topic_indexed, b'{"event_id": "ev-other"}').get(timeout=30)
        producer.close(timeout=5)
        report = explain_lost(s, ["ev-seen", "ev-never"], timeout_s=30)
        seen = next(line for line in report.splitlines() if line.startswith("event ev-seen:"))
        assert f"{s.topic_products}[" in seen and f"{s.topic_garments}[" in seen and s.topic_indexed not in seen
        assert "event ev-never: on no topic" in report
        assert "committed forensics-segmentation" in report
    finally:
        broker.proc.stop()
