"""Where replies go, and what a worker does with timestamps and keys it cannot trust (real broker + workers).

Every reply, whatever its status, lands on the requesting tenant's own reply topics; each test listens on the
topics a hostile request names and asserts that nothing ever arrives there.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from kafka import KafkaProducer

from contracts import codec
from contracts.models import DeadLetter, LookReply

from support.waits import wait_for

OLD = "2020-01-01T00:00:00Z"
TINY_JPEG = None


def _jpeg() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "JPEG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def query_worker(pipeline):
    w = pipeline.start_worker("query")
    pipeline.wait_ready(w, timeout=90)
    return w


def _send(pipeline, topic: str, docs: list[dict | bytes], key: bytes | None = None) -> None:
    p = KafkaProducer(**pipeline.settings.kafka_common())
    for d in docs:
        p.send(topic, value=d if isinstance(d, bytes) else json.dumps(d).encode(), key=key)
    p.flush(10)
    p.close()


def _replies(col, topic: str, rid: str) -> list[LookReply]:
    return [codec.decode(LookReply, r.value) for r in col.of(topic) if json.loads(r.value).get("request_id") == rid]


def test_expired_request_cannot_choose_where_its_reply_goes(pipeline, query_worker, collector_factory):
    s = pipeline.settings
    own, other = f"{s.reply_topic_prefix}.acme", f"{s.reply_topic_prefix}.globex"
    forbidden = [s.topic_products, other, s.topic_indexed]
    col = collector_factory(s, [own, *forbidden, s.topic_look_requests + ".dlq"])
    rid = {t: f"r-{uuid.uuid4().hex[:8]}" for t in forbidden}
    _send(pipeline, s.topic_look_requests, [
        {"request_id": rid[t], "tenant": "acme", "reply_to": t, "image": {"bytes": _jpeg()}, "deadline": OLD}
        for t in forbidden])
    for t in forbidden:
        (reply,) = wait_for(lambda: _replies(col, own, rid[t]), 60, f"the error reply for {t} on {own}")
        assert reply.status.value == "error" and "is not a reply topic of tenant 'acme'" in reply.error
    dls = wait_for(lambda: [codec.decode(DeadLetter, r.value) for r in col.of(s.topic_look_requests + ".dlq")
                            if json.loads(codec.decode(DeadLetter, r.value).value).get("request_id") in rid.values()]
                   if len(col.of(s.topic_look_requests + ".dlq")) >= 3 else None, 30, "3 dead letters")
    assert {d.error_type for d in dls} == {"bad_reply_to"}
    time.sleep(1.0)  # anything misrouted would have arrived with the replies
    for t in forbidden:
        assert not [r for r in col.of(t) if b"request_id" in (r.value or b"")], f"a reply escaped to {t}"


def test_expired_request_with_its_own_topic_gets_expired(pipeline, query_worker, collector_factory):
    s = pipeline.settings
    own = f"{s.reply_topic_prefix}.acme.web-1"
    col = collector_factory(s, [own])
    rid = f"r-{uuid.uuid4().hex[:8]}"
    _send(pipeline, s.topic_look_requests,
          [{"request_id": rid, "tenant": "acme", "reply_to": own, "image": {"bytes": _jpeg()}, "deadline": OLD}])
    (reply,) = wait_for(lambda: _replies(col, own, rid), 60, "the expired reply")
    assert reply.status.value == "expired"


def test_naive_timestamps_get_a_clear_error_reply_and_a_dead_letter(pipeline, query_worker, collector_factory):
    s = pipeline.settings
    own = f"{s.reply_topic_prefix}.acme"
    col = collector_factory(s, [own, s.topic_look_requests + ".dlq"])
    rids = [f"r-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    _send(pipeline, s.topic_look_requests, [
        {"request_id": rids[0], "tenant": "acme", "reply_to": own, "image": {"bytes": _jpeg()},
         "deadline": "2999-01-01T00:00:00"},
        {"request_id": rids[1], "tenant": "acme", "reply_to": own, "image": {"bytes": _jpeg()},
         "sent_at": "2026-12-01T10:00:00"},
    ])
    for rid, field in zip(rids, ("deadline", "sent_at")):
        (reply,) = wait_for(lambda: _replies(col, own, rid), 60, f"the reply to a naive {field}")
        assert reply.status.value == "error" and field in reply.error and "timezone" in reply.error
    wait_for(lambda: len(col.of(s.topic_look_requests + ".dlq")) >= 2, 30, "2 dead letters")
    assert query_worker.pid() is not None  # still running


def test_product_events_with_naive_time_or_a_foreign_key_are_refused(pipeline, collector_factory):
    s = pipeline.settings
    seg = pipeline.start_worker("segmentation")
    pipeline.wait_ready(seg, timeout=90)
    col = collector_factory(s, [s.topic_products + ".dlq", s.topic_garments])
    naive = {"event_id": "ev-naive", "tenant": "acme", "product_id": "p1", "op": "delete",
             "occurred_at": "2026-12-01T10:00:00"}
    _send(pipeline, s.topic_products, [naive], key=b"acme:p1")
    foreign = {"event_id": "ev-foreign", "tenant": "acme", "product_id": "p2", "op": "delete"}
    _send(pipeline, s.topic_products, [foreign], key=b"acme:p1")
    good = {"event_id": "ev-good", "tenant": "acme", "product_id": "p3", "op": "delete"}
    _send(pipeline, s.topic_products, [good], key=b"acme:p3")
    dls = wait_for(lambda: (lambda d: d if len(d) >= 2 else None)(
        {codec.decode(DeadLetter, r.value).event_id: codec.decode(DeadLetter, r.value)
         for r in col.of(s.topic_products + ".dlq")}), 60, "two dead letters")
    assert dls["ev-naive"].attempts == 1 and "timezone" in dls["ev-naive"].reason  # refused once, not applied 4x
    assert dls["ev-foreign"].error_type == "key_mismatch"
    passed = wait_for(lambda: [json.loads(r.value)["event_id"] for r in col.of(s.topic_garments)], 60, "the good delete")
    assert passed == ["ev-good"]
    assert dict(col.of(s.topic_products + ".dlq")[0].headers).get("dlq-stage") == b"segmentation"
