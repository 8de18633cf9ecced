"""Each real service answers: broker (consumer group round trip), Redis, Milvus, Triton."""

import uuid

import numpy as np

from workers.runtime.kafka_io import ensure_topics, make_consumer, make_producer


def test_broker_round_trip_through_a_consumer_group(services):
    s = services.settings(session_timeout_ms=2000, heartbeat_interval_ms=500)
    topic = f"smoke.{uuid.uuid4().hex[:6]}"
    ensure_topics(s, [topic], partitions=2)
    producer = make_producer(s)
    for i in range(10):
        producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), headers=[("h", b"1")])
    producer.flush()
    producer.close()
    consumer = make_consumer(s, f"smoke-{uuid.uuid4().hex[:6]}", [topic])
    got = []
    for _ in range(100):
        for rs in consumer.poll(timeout_ms=200).values():
            got += rs
        if len(got) >= 10:
            break
    consumer.commit()
    consumer.close()
    assert sorted(r.value for r in got) == sorted(f"v{i}".encode() for i in range(10))
    assert all(r.headers == [("h", b"1")] for r in got)


def test_redis_set_get(services):
    import redis

    r = redis.Redis.from_url(services.env["LOOKSTREAM_REDIS_URL"])
    r.set("smoke", b"value")
    assert r.get("smoke") == b"value"


def test_milvus_create_upsert_search(services):
    from pymilvus import DataType, MilvusClient

    c = MilvusClient(uri=services.env["LOOKSTREAM_MILVUS_URI"])
    name = f"smoke_{uuid.uuid4().hex[:6]}"
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=16)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=4)
    index = c.prepare_index_params()
    index.add_index(field_name="v", index_type="FLAT", metric_type="IP")
    c.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    c.upsert(name, [{"id": "a", "v": [1, 0, 0, 0]}, {"id": "b", "v": [0, 1, 0, 0]}])
    hits = c.search(name, data=[[0.9, 0.1, 0, 0]], anns_field="v", limit=2)[0]
    assert [h["id"] for h in hits] == ["a", "b"]
    c.drop_collection(name)


def test_triton_models_answer_over_grpc(services):
    from workers.adapters.triton_client import TritonModels

    t = TritonModels(services.env["LOOKSTREAM_TRITON_URL"])
    assert t.ready()
    labels = t.segment([np.zeros((512, 512, 3), np.uint8)])
    assert labels.shape == (1, 512, 512) and labels.dtype == np.uint8
    emb = t.embed(np.zeros((2, 256, 256, 3), np.uint8))
    assert emb.shape == (2, 2048)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
