"""How the store classifies what goes wrong (issue 12 item 7) and which servers it refuses (issue 15 item 4),
on real services: a Milvus Lite and a Milvus 2.3.5 server, redis-servers driven into READONLY, OOM and BUSY."""

import threading
import time

import pytest
import redis
from storekit import delete, index_for, look, product_ids, unit, upsert, visible

from contracts.models import Filters
from workers.local import stack
from workers.runtime.errors import DependencyError
from workers.runtime.settings import Settings
from workers.adapters.milvus_server import MIN_PARTITION_KEY_VERSION, MilvusUnsupported, check_server
from workers.adapters.catalog_writer import CatalogWriter
from workers.adapters.milvus_index import GarmentIndex
from workers.adapters.product_state import MetadataCache

V1, V2 = "2026-01-01T00:00:01.000000Z|e1", "2026-01-01T00:00:02.000000Z|e2"


# ------------------------------------------------------------------ the server-version gate
def test_version_gate_logic():
    check_server("v2.3.5-lite", partition_key=False)  # no partition key: any server
    check_server("v2.4.0", partition_key=True)
    check_server("v2.5.16", partition_key=True)
    for bad in ("v2.3.5-lite", "v2.3.12", "2.2.16", "nonsense"):
        with pytest.raises(MilvusUnsupported, match=r"30607.*>= 2\.4\.0"):
            check_server(bad, partition_key=True)
    with pytest.raises(MilvusUnsupported, match="Milvus Lite"):
        check_server(None, partition_key=True)
    assert MIN_PARTITION_KEY_VERSION == (2, 4, 0)


def test_partition_key_mode_is_refused_on_servers_with_the_routing_bug(store):
    s = store.settings.model_copy(update={"milvus_partition_key": True, "milvus_collection": "pk_" + store.index.name})
    index = index_for(s)
    with pytest.raises(MilvusUnsupported) as e:
        index.client
    assert isinstance(e.value, DependencyError)  # retried, never dead-lettered
    assert ("2.4.0" in str(e.value)) and ("Lite" in str(e.value) if store.kind == "lite" else "v2.3.5" in str(e.value))
    assert index.name not in index_for(store.settings).client.list_collections()  # nothing created


# ------------------------------------------------------------------ Milvus errors by code
@pytest.mark.parametrize("store", ["server"], indirect=True)  # Milvus Lite ignores release_collection
def test_a_released_collection_is_an_outage_and_the_retry_loads_it_again(store):
    store.writer.apply([upsert("acme", "p1", "img", {"Dress": 1}, V1)])
    visible(store, "acme", {"Dress": unit(1)}, {"p1"})
    other = index_for(store.settings)  # an operator (or a restart) releases the collection
    other.client.release_collection(store.index.name)
    other.close()
    with pytest.raises(DependencyError):  # code 101 "collection not loaded": wait and retry, not the input's fault
        store.index.search_garments("acme", [("Dress", unit(1))], 5, Filters())
    assert product_ids(look(store, "acme", {"Dress": unit(1)})) == {"p1"}  # reconnected, loaded again


def test_a_bad_request_is_not_an_outage(store):
    store.writer.apply([upsert("acme", "p1", "img", {"Dress": 1}, V1)])
    with pytest.raises(Exception) as e:
        store.index.rows("no_such_field == 1")  # a bad request (unknown field): the request's fault
    assert not isinstance(e.value, DependencyError)


def test_milvus_down_is_an_outage(redis_url):
    s = Settings(milvus_uri=f"http://127.0.0.1:{stack.free_port()}", redis_url=redis_url)
    with pytest.raises(DependencyError):
        index_for(s).client


def test_a_frozen_milvus_is_an_outage_within_the_call_deadline(tmp_path, redis_url):
    """A server that accepts the call and never answers (SIGSTOP) must not hold a worker inside one call:
    each call has a deadline (LOOKSTREAM_MILVUS_TIMEOUT_S), after which it is an outage, and a later call,
    once the server is back, works on a fresh client."""
    import os
    import signal

    svc = stack.milvus_service(tmp_path, stack.free_port())
    svc.start()
    try:
        s = Settings(milvus_uri=svc.env["LOOKSTREAM_MILVUS_URI"], redis_url=redis_url, milvus_timeout_s=2)
        index = index_for(s)
        assert index.count() == 0  # connected, collection created
        outcome: list = []

        def search():
            try:
                index.search("acme", "Dress", unit(1)[None, :], 3, Filters())
                outcome.append("answered")
            except Exception as e:  # noqa: BLE001 - what the call raised is the result
                outcome.append(e)

        pid = svc.proc.pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            t = threading.Thread(target=search, daemon=True)
            t.start()
            t.join(60)  # without a deadline the call hangs for as long as the server is frozen
            assert not t.is_alive(), "a search on a frozen Milvus did not return within 60 s"
        finally:
            os.kill(pid, signal.SIGCONT)
        assert len(outcome) == 1 and isinstance(outcome[0], DependencyError), outcome
        assert index.count() == 0  # back: the next call reconnects
        index.close()
    finally:
        svc.proc.stop()


# ------------------------------------------------------------------ Redis errors by code
@pytest.fixture
def own_redis(tmp_path, request):
    """A redis-server of its own: these tests turn it read-only, full and busy."""
    svc = stack.redis_service(tmp_path, stack.free_port())
    svc.start()
    request.addfinalizer(svc.proc.stop)
    return svc.env["LOOKSTREAM_REDIS_URL"]


def _writer(store, url):
    cache = MetadataCache(store.settings.model_copy(update={"redis_url": url}))
    return CatalogWriter(store.index, cache), cache


@pytest.mark.parametrize("store", ["lite"], indirect=True)
def test_redis_readonly_oom_and_busy_are_outages_not_bad_input(store, own_redis):
    writer, cache = _writer(store, own_redis)
    admin = redis.Redis.from_url(own_redis)
    # READONLY: a failover left us on a replica (of a master that is gone)
    admin.replicaof("127.0.0.1", stack.free_port())
    with pytest.raises(DependencyError, match="ReadOnlyError"):
        writer.apply([upsert("acme", "p1", "img", {"Dress": 1}, V1)])
    admin.replicaof("NO", "ONE")
    # OOM: maxmemory reached under noeviction
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")
    with pytest.raises(DependencyError, match="OutOfMemoryError"):
        writer.apply([upsert("acme", "p2", "img", {"Dress": 2}, V1)])
    admin.config_set("maxmemory", "0")
    # BUSY: a script hogs the server past busy-reply-threshold (a plain ResponseError, classified by its code)
    with _busy(own_redis):
        with pytest.raises(DependencyError, match="BUSY"):
            writer.apply([upsert("acme", "p3", "img", {"Dress": 3}, V1)])
    # and once Redis is well, the same writes go through
    assert [d.status for d in writer.apply([upsert("acme", f"p{i}", "img", {"Dress": i}, V1) for i in (1, 2, 3)])] \
        == ["indexed"] * 3


@pytest.mark.parametrize("store", ["lite"], indirect=True)
def test_a_redis_error_on_the_query_side_still_gets_a_correct_reply(store, own_redis):
    """BUSY (a ResponseError) while reading product states: the reply still goes out, searched at Strong
    consistency, and a deleted product is still not in it."""
    writer, cache = _writer(store, own_redis)
    writer.apply([upsert("acme", "keep", "img", {"Dress": 1}, V1), upsert("acme", "gone", "img", {"Dress": 2}, V1)])
    writer.apply([delete("acme", "gone", V2)])
    store.cache = cache
    with _busy(own_redis):
        reply = look(store, "acme", {"Dress": unit(2)}, top_k=10)
    assert reply.status.value == "ok"
    assert product_ids(reply) == {"keep"}
    assert all(m.metadata_source == "milvus" for g in reply.garments for m in g.matches)


class _busy:
    def __init__(self, url: str):
        self.url = url

    def __enter__(self):
        admin = redis.Redis.from_url(self.url)
        admin.config_set("busy-reply-threshold", "50")
        self.thread = threading.Thread(target=self._hog, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # wait until other clients get BUSY
            try:
                redis.Redis.from_url(self.url, socket_timeout=1).ping()
            except redis.ResponseError:
                return self
            time.sleep(0.05)
        raise AssertionError("redis never became BUSY")

    def _hog(self):
        try:
            redis.Redis.from_url(self.url).eval("while true do end", 0)
        except redis.RedisError:
            pass  # killed by SCRIPT KILL

    def __exit__(self, *exc):
        redis.Redis.from_url(self.url).script_kill()
        self.thread.join(5)
