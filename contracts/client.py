"""Client SDK (no torch): retailers publish catalog changes, storefronts ask for looks.

    with CatalogPublisher("127.0.0.1:9092") as pub:
        pub.upsert("acme", "sku-1", image=open("a.jpg", "rb").read(), metadata={"title": "Red top", "price": 20})

    with LookClient("127.0.0.1:9092", tenant="acme") as looks:
        reply = looks.ask(open("outfit.jpg", "rb").read(), top_k=3, timeout=10)

LookClient listens on its tenant's reply topic (``looks.replies.<tenant>``) and hands each reply to the
caller waiting for that request id; replies for other requests are ignored. One instance serves many
threads at once.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import timedelta
from typing import Any

from . import codec, topics
from .models import MAX_RECORD_BYTES, ImageRef, LookReply, LookRequest, ProductEvent, ProductMetadata, utc_now

# The broker may hold an empty fetch this long; a reply arriving meanwhile waits for it (kafka-python's default
# 500 ms cost ~125 ms per reply on Tansu).
REPLY_FETCH_MAX_WAIT_MS = 20
# After a failed poll (broker restarting, connection reset) the tail waits this long and polls again.
TAIL_RETRY_S = 0.5

log = logging.getLogger("lookstream.client")


# Every producer of lookstream (SDK and workers): acknowledged by all in-sync replicas, no duplicates from its own
# retries, records up to the inline-image bound. Callers add only what differs (linger, timeouts).
RELIABLE_PRODUCER = {"acks": "all", "enable_idempotence": True, "max_request_size": MAX_RECORD_BYTES}
# For a broker whose idempotent producer is broken (LOOKSTREAM_PRODUCER_IDEMPOTENCE=false): retries may duplicate,
# one request in flight keeps each partition's order.
AT_LEAST_ONCE_PRODUCER = {"enable_idempotence": False, "max_in_flight_requests_per_connection": 1}


def _kafka_conf(bootstrap_servers: str | list[str], **extra) -> dict:
    servers = bootstrap_servers.split(",") if isinstance(bootstrap_servers, str) else bootstrap_servers
    return {"bootstrap_servers": servers, **extra}


class CatalogPublisher:
    """Publishes ProductEvents keyed ``tenant:product_id`` (one product's events stay in order)."""

    def __init__(self, bootstrap_servers: str | list[str], topic: str = topics.PRODUCTS, **kafka: Any):
        from kafka import KafkaProducer

        self.topic = topic
        self.producer = KafkaProducer(**_kafka_conf(bootstrap_servers, **{**RELIABLE_PRODUCER, "linger_ms": 10, **kafka}))

    def publish(self, event: ProductEvent):
        return self.producer.send(self.topic, key=event.key.encode(), value=codec.encode(event),
                                  headers=codec.headers_for(event))

    def upsert(self, tenant: str, product_id: str, *, image: bytes | None = None, uri: str | None = None,
               metadata: dict | ProductMetadata | None = None, event_id: str | None = None,
               images: list[bytes | str] | None = None, garments: list[str] | None = None) -> ProductEvent:
        """One product: ``image`` bytes or ``uri``, or ``images`` (bytes or uris, up to 8 shots); ``garments``:
        the labels the product is (only those are indexed; default: every garment found)."""
        extra: dict[str, Any] = {"event_id": event_id} if event_id else {}
        if garments is not None:
            extra["garments"] = garments
        if images is not None:
            extra["images"] = [ImageRef(uri=i) if isinstance(i, str) else ImageRef(bytes=i) for i in images]
        else:
            extra["image"] = ImageRef(bytes=image) if image is not None else ImageRef(uri=uri)
        ev = ProductEvent(tenant=tenant, product_id=product_id, op="upsert", metadata=metadata or {}, **extra)
        self.publish(ev)
        return ev

    def delete(self, tenant: str, product_id: str) -> ProductEvent:
        ev = ProductEvent(tenant=tenant, product_id=product_id, op="delete")
        self.publish(ev)
        return ev

    def flush(self, timeout: float = 60) -> None:
        self.producer.flush(timeout=timeout)

    def close(self) -> None:
        self.producer.flush(timeout=60)
        self.producer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LookTimeout(TimeoutError):
    pass


class TopicTail:
    """Reads ``topics`` from their current end in a background thread, handing records to ``on_record``.

    No consumer group: every reader sees every record from the moment it started. (Tansu may place
    'end' slightly early, inside the last batch; callers filter by id, so old records are harmless.)
    """

    def __init__(self, conf: dict, topic_names: list[str], on_record, create_missing: bool = True,
                 fetch_max_wait_ms: int = REPLY_FETCH_MAX_WAIT_MS):
        from kafka import KafkaConsumer, TopicPartition

        if create_missing:
            for name in topic_names:
                _ensure_topic(conf, name)
        self.consumer = KafkaConsumer(**conf, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                      fetch_max_wait_ms=fetch_max_wait_ms, fetch_max_bytes=MAX_RECORD_BYTES * 4,
                                      max_partition_fetch_bytes=MAX_RECORD_BYTES)
        tps = [TopicPartition(t, p) for t in topic_names for p in _wait_partitions(self.consumer, t)]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:
            self.consumer.position(tp)  # resolve now: records produced after __init__ are never missed
        self.on_record = on_record
        self.topic_names = topic_names
        self.poll_errors = 0
        self.handler_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topic-tail", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # The thread is the only reader: if it died on one error, every later record would go unseen
        # (a LookClient would time out on every ask). Poll errors are retried, a failing handler is logged.
        while not self._stop.is_set():
            try:
                batches = self.consumer.poll(timeout_ms=100).values()
            except Exception as e:  # noqa: BLE001 - the broker may be restarting; kafka-python reconnects
                self.poll_errors += 1
                log.warning("tail of %s: poll failed (%s: %s); retrying", self.topic_names, type(e).__name__, e)
                self._stop.wait(TAIL_RETRY_S)
                continue
            for records in batches:
                for r in records:
                    try:
                        self.on_record(r)
                    except Exception:  # noqa: BLE001 - one bad record must not stop the tail
                        self.handler_errors += 1
                        log.exception("tail of %s: handler failed on %s[%d]@%d", self.topic_names, r.topic,
                                      r.partition, r.offset)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.consumer.close()


class LookClient:
    def __init__(self, bootstrap_servers: str | list[str], tenant: str, *, reply_to: str | None = None,
                 request_topic: str = topics.LOOK_REQUESTS, reply_fetch_max_wait_ms: int = REPLY_FETCH_MAX_WAIT_MS,
                 producer: dict | None = None, **kafka: Any):
        from kafka import KafkaProducer

        self.tenant = tenant
        self.request_topic = request_topic
        self.reply_to = reply_to or f"{topics.LOOK_REPLIES_PREFIX}.{tenant}"
        conf = _kafka_conf(bootstrap_servers, **kafka)
        self.producer = KafkaProducer(**{**conf, **RELIABLE_PRODUCER, "linger_ms": 0, **(producer or {})})
        self._waiting: dict[str, Future] = {}
        self._lock = threading.Lock()
        self.tail = TopicTail(conf, [self.reply_to], self._on_reply, fetch_max_wait_ms=reply_fetch_max_wait_ms)

    def _on_reply(self, r) -> None:
        rid = (r.key or b"").decode(errors="replace")
        with self._lock:
            fut = self._waiting.pop(rid, None)
        if fut is not None and not fut.done():
            try:
                fut.set_result(codec.decode(LookReply, r.value))
            except Exception as e:  # noqa: BLE001 - hand the error to the caller
                fut.set_exception(e)

    def send(self, image: bytes | None = None, *, uri: str | None = None, top_k: int = 3,
             garments: list[str] | None = None, filters: dict | None = None,
             strategy: str = "first_place_votes", timeout: float = 30.0, request_id: str | None = None) -> Future:
        """Publish a request; the Future resolves to its LookReply."""
        ref = ImageRef(bytes=image) if image is not None else ImageRef(uri=uri)
        req = LookRequest(tenant=self.tenant, reply_to=self.reply_to, image=ref, top_k=top_k, garments=garments,
                          filters=filters or {}, strategy=strategy, deadline=utc_now() + timedelta(seconds=timeout),
                          **({"request_id": request_id} if request_id else {}))
        return self.send_request(req)

    def send_request(self, req: LookRequest) -> Future:
        fut: Future = Future()
        fut.request_id = req.request_id  # type: ignore[attr-defined]
        with self._lock:
            self._waiting[req.request_id] = fut
        self.producer.send(self.request_topic, key=req.request_id.encode(), value=codec.encode(req),
                           headers=[*codec.headers_for(req), (codec.HEADER_REQUEST_ID, req.request_id.encode())])
        self.producer.flush()
        return fut

    def ask(self, image: bytes | None = None, *, timeout: float = 30.0, **kw) -> LookReply:
        """Send and wait. Raises LookTimeout when no reply arrives within ``timeout`` seconds."""
        fut = self.send(image, timeout=timeout, **kw)
        return self.wait(fut, timeout + 5)

    def wait(self, fut: Future, timeout: float) -> LookReply:
        try:
            return fut.result(timeout=timeout)
        except FutureTimeout:
            with self._lock:
                self._waiting.pop(fut.request_id, None)  # type: ignore[attr-defined]
            raise LookTimeout(f"no reply to request {fut.request_id} within {timeout:.0f} s") from None  # type: ignore[attr-defined]

    def close(self) -> None:
        self.tail.close()
        self.producer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _ensure_topic(conf: dict, name: str, partitions: int = 4) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**conf)
    try:
        if name not in admin.list_topics():
            try:
                admin.create_topics([NewTopic(name, partitions, 1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def _wait_partitions(consumer, topic: str, timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        consumer.topics()  # refreshes metadata
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        time.sleep(0.1)
    raise RuntimeError(f"reply topic {topic} has no partitions after {timeout:.0f} s")
