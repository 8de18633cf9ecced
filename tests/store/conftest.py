"""The store's real services, started once per test session: redis-server, Milvus Lite 2.5 (served over TCP)
and a real Milvus 2.3.5 standalone server (the ``milvus`` wheel; its etcd on free ports, stopped by SIGKILL,
warmed up before the first test). Every store test runs against both Milvus kinds (``store`` fixture)."""

from __future__ import annotations

import uuid

import pytest
from storekit import Store, index_for

from workers.local import stack
from workers.runtime.settings import Settings
from workers.adapters.catalog_writer import CatalogWriter
from workers.adapters.product_state import MetadataCache

KINDS = ("lite", "server")


def _start(svc: stack.Service, request) -> stack.Service:
    svc.start()
    request.addfinalizer(svc.proc.stop)
    return svc


@pytest.fixture(scope="session")
def store_state(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="session")
def redis_url(store_state, request) -> str:
    return _start(stack.redis_service(store_state, stack.free_port()), request).env["LOOKSTREAM_REDIS_URL"]


@pytest.fixture(scope="session")
def milvus_uris(store_state, request) -> dict[str, str]:
    """Both Milvus kinds; the server is started only when a test asks for it (its start takes ~10-30 s)."""
    started: dict[str, str] = {}

    def get(kind: str) -> str:
        if kind not in started:
            if kind == "lite":
                svc = _start(stack.milvus_service(store_state / "lite", stack.free_port()), request)
            else:
                svc = _start(stack.milvus_server_service(store_state / "server", stack.free_port()), request)
                stack.milvus_warm_up(svc.env["LOOKSTREAM_MILVUS_URI"])
            started[kind] = svc.env["LOOKSTREAM_MILVUS_URI"]
        return started[kind]

    return get  # type: ignore[return-value]


@pytest.fixture(params=KINDS)
def store(request, milvus_uris, redis_url) -> Store:
    """A fresh collection and key space on one Milvus kind (lite or server) and the shared redis-server."""
    ns = uuid.uuid4().hex[:8]
    s = Settings(milvus_uri=milvus_uris(request.param), redis_url=redis_url, milvus_collection=f"store_{ns}")
    index, cache = index_for(s), MetadataCache(s)
    cache.PREFIX = f"lookstream:test{ns}:"  # type: ignore[misc]
    yield Store(request.param, s, index, cache, CatalogWriter(index, cache))
    try:
        index.client.drop_collection(index.name)
    finally:
        index.close()
