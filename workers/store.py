"""Milvus (garment vectors) and Redis (product metadata cache) as the workers use them.

Milvus collection ``garments``: one row per (tenant, product, image, garment label), with a
deterministic primary key so a replay upserts the same row. Tenant is in every search and delete
filter (server side); with a full Milvus server it is also the partition key (Milvus Lite 2.5 rejects
filters on a partition key, so the embedded stack turns that off: ``milvus_partition_key``).
Consistency is Strong: a search after a completed delete never returns the deleted rows.

Strings in filter expressions are JSON-quoted (Milvus accepts JSON string escapes); identifiers are
already restricted by the contracts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from contracts.models import Filters, ProductMetadata

from .errors import DependencyError
from .settings import Settings

log = logging.getLogger(__name__)

DIM = 2048
NO_PRICE = -1.0  # Milvus Lite has no nullable scalars; a negative price means "unknown"
SCALAR_FIELDS = ("tenant", "product_id", "image_id", "label", "bbox", "title", "brand", "category", "price",
                 "currency", "url", "in_stock")


def garment_id(tenant: str, product_id: str, image_id: str, label: str) -> str:
    """Deterministic row id: a replay of the same event upserts the same row."""
    return hashlib.sha256(f"{tenant}\x00{product_id}\x00{image_id}\x00{label}".encode()).hexdigest()[:40]


def image_id_of(data: bytes) -> str:
    """Content hash of the image: the same picture re-sent gives the same garment rows."""
    return hashlib.sha256(data).hexdigest()[:16]


def q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _clip(s: str, limit: int) -> str:
    b = s.encode()
    return s if len(b) <= limit else b[:limit].decode(errors="ignore")


@dataclass(frozen=True)
class GarmentRow:
    id: str
    tenant: str
    product_id: str
    image_id: str
    label: str
    bbox: list[int]
    metadata: ProductMetadata
    embedding: np.ndarray

    def to_milvus(self) -> dict[str, Any]:
        md = self.metadata
        return {
            "id": self.id, "tenant": self.tenant, "product_id": self.product_id, "image_id": self.image_id,
            "label": self.label, "bbox": [int(x) for x in self.bbox],
            "title": _clip(md.title, 1000), "brand": _clip(md.brand, 500), "category": _clip(md.category, 500),
            "price": float(md.price) if md.price is not None else NO_PRICE, "currency": md.currency or "",
            "url": _clip(md.url, 2000), "in_stock": bool(md.in_stock),
            "embedding": np.asarray(self.embedding, dtype=np.float32).tolist(),
        }


@dataclass(frozen=True)
class Hit:
    product_id: str
    label: str
    score: float
    fields: dict[str, Any]

    def metadata(self) -> ProductMetadata:
        f = self.fields
        price = f.get("price")
        return ProductMetadata(
            title=f.get("title", ""), brand=f.get("brand", ""), category=f.get("category", ""),
            price=None if price is None or price < 0 else round(float(price), 2), currency=f.get("currency") or None,
            url=f.get("url", ""), in_stock=bool(f.get("in_stock", True)),
        )


def _milvus_call(what: str):
    """Connection-level Milvus failures are a dependency problem; anything else propagates as is.

    After one, the client is dropped: a gRPC channel the server closed (restart, GOAWAY) stays broken,
    so the retry must reconnect rather than reuse it.
    """

    def deco(fn):
        def wrapper(self, *a, **kw):
            try:
                return fn(self, *a, **kw)
            except Exception as e:
                if _is_unavailable(e):
                    self.close()
                    raise DependencyError("milvus", f"{what}: {e}") from e
                raise

        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        return wrapper

    return deco


# pymilvus pings every 10 s even when idle; gRPC servers (Milvus Lite among them) answer an idle
# client that pings more often than every 5 min with GOAWAY "too_many_pings" and the channel breaks.
_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": False}


def milvus_client(uri: str, token: str = "", timeout: float = 10):
    from pymilvus import MilvusClient

    return MilvusClient(uri=uri, token=token, timeout=timeout, grpc_options=_GRPC_OPTIONS)


def _is_unavailable(e: Exception) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return any(k in text for k in ("unavailable", "connect", "timeout", "deadline", "closed", "refused",
                                   "not ready", "socket", "fail to connect"))


class GarmentIndex:
    def __init__(self, s: Settings):
        self.s = s
        self.name = s.milvus_collection
        self._client = None

    @property
    def client(self):
        if self._client is None:
            try:
                from pymilvus import MilvusClient

                token = self.s.milvus_token.get_secret_value() if self.s.milvus_token else ""
                self._client = milvus_client(self.s.milvus_uri, token)
                self._ensure_collection()
            except DependencyError:
                raise
            except Exception as e:
                self._client = None
                if _is_unavailable(e):
                    raise DependencyError("milvus", f"connect {self.s.milvus_uri}: {e}") from e
                raise
        return self._client

    def _ensure_collection(self) -> None:
        from pymilvus import DataType, MilvusClient

        c = self._client
        if c.has_collection(self.name):
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("tenant", DataType.VARCHAR, max_length=64, is_partition_key=self.s.milvus_partition_key)
        schema.add_field("product_id", DataType.VARCHAR, max_length=256)
        schema.add_field("image_id", DataType.VARCHAR, max_length=64)
        schema.add_field("label", DataType.VARCHAR, max_length=32)
        schema.add_field("bbox", DataType.ARRAY, element_type=DataType.INT64, max_capacity=4)
        schema.add_field("title", DataType.VARCHAR, max_length=4096)
        schema.add_field("brand", DataType.VARCHAR, max_length=2048)
        schema.add_field("category", DataType.VARCHAR, max_length=2048)
        schema.add_field("price", DataType.FLOAT)
        schema.add_field("currency", DataType.VARCHAR, max_length=8)
        schema.add_field("url", DataType.VARCHAR, max_length=8192)
        schema.add_field("in_stock", DataType.BOOL)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=DIM)
        index = c.prepare_index_params()
        params = {"IVF_FLAT": {"nlist": self.s.milvus_nlist}, "HNSW": {"M": 16, "efConstruction": 200}}
        index.add_index(field_name="embedding", index_type=self.s.milvus_index, metric_type="IP",
                        params=params.get(self.s.milvus_index, {}))
        extra = {"num_partitions": 64} if self.s.milvus_partition_key else {}
        c.create_collection(self.name, schema=schema, index_params=index, consistency_level="Strong", **extra)
        log.info("created Milvus collection %s (index %s, metric IP)", self.name, self.s.milvus_index)

    def _search_params(self) -> dict:
        p = {"IVF_FLAT": {"nprobe": self.s.milvus_nprobe}, "HNSW": {"ef": self.s.milvus_hnsw_ef}}
        return {"metric_type": "IP", "params": p.get(self.s.milvus_index, {})}

    # ------------------------------------------------------------------ writes
    @_milvus_call("upsert")
    def replace_product(self, tenant: str, product_id: str, rows: list[GarmentRow]) -> int:
        """Upsert the product's rows, then delete its rows not in ``rows`` (an old image's garments).

        Upsert first: a concurrent search sees old or new garments, never none. Returns rows removed.
        """
        if rows:
            self.client.upsert(self.name, [r.to_milvus() for r in rows])
        keep = [r.id for r in rows]
        expr = f"tenant == {q(tenant)} and product_id == {q(product_id)}"
        if keep:
            expr += f" and id not in [{', '.join(q(k) for k in keep)}]"
        return self._delete(expr)

    @_milvus_call("delete")
    def delete_product(self, tenant: str, product_id: str) -> int:
        return self._delete(f"tenant == {q(tenant)} and product_id == {q(product_id)}")

    def _delete(self, expr: str) -> int:
        """Delete the rows matching ``expr``; returns how many. (Milvus' own delete_count by filter is
        not reliable across versions: find the ids first, then delete by primary key.)"""
        ids = [r["id"] for r in self.client.query(self.name, filter=expr, output_fields=["id"],
                                                  consistency_level="Strong")]
        if ids:
            self.client.delete(self.name, ids=ids)
        return len(ids)

    # ------------------------------------------------------------------ reads
    @_milvus_call("search")
    def search(self, tenant: str, label: str, vectors: np.ndarray, top_k: int, filters: Filters) -> list[list[Hit]]:
        expr = filter_expression(tenant, label, filters)
        res = self.client.search(
            self.name, data=np.asarray(vectors, dtype=np.float32).tolist(), anns_field="embedding", filter=expr,
            limit=top_k, output_fields=list(SCALAR_FIELDS), search_params=self._search_params(),
            consistency_level="Strong",
        )
        return [[Hit(h["entity"]["product_id"], h["entity"]["label"], float(h["distance"]), h["entity"]) for h in hits]
                for hits in res]

    @_milvus_call("query")
    def rows(self, filter_expr: str = 'id != ""', fields: Iterable[str] = ("id", "tenant", "product_id", "label")) -> list[dict]:
        return list(self.client.query(self.name, filter=filter_expr, output_fields=list(fields), limit=16384,
                                      consistency_level="Strong"))

    @_milvus_call("count")
    def count(self, filter_expr: str = "") -> int:
        res = self.client.query(self.name, filter=filter_expr, output_fields=["count(*)"], consistency_level="Strong")
        return int(res[0]["count(*)"])

    def ping(self) -> bool:
        try:
            self.client.has_collection(self.name)
            return True
        except Exception:
            self.close()
            return False

    def __enter__(self) -> GarmentIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken channel may fail; it is gone either way
                pass


def filter_expression(tenant: str, label: str, f: Filters) -> str:
    parts = [f"tenant == {q(tenant)}", f"label == {q(label)}"]
    if f.price is not None:
        if f.price.min is not None:
            parts.append(f"price >= {float(f.price.min)!r}")
        if f.price.max is not None:
            parts.append(f"price >= 0 and price <= {float(f.price.max)!r}")
    if f.brands:
        parts.append(f"brand in [{', '.join(q(b) for b in f.brands)}]")
    if f.categories:
        parts.append(f"category in [{', '.join(q(c) for c in f.categories)}]")
    if f.in_stock is not None:
        parts.append(f"in_stock == {str(f.in_stock).lower()}")
    return " and ".join(parts)


class MetadataCache:
    """Product metadata per ``tenant:product_id`` in Redis: written at ingest, read at query time."""

    PREFIX = "lookstream:product:"

    def __init__(self, s: Settings):
        import redis

        self.redis = redis.Redis.from_url(
            s.redis_url, password=s.redis_password.get_secret_value() if s.redis_password else None,
            socket_timeout=s.redis_timeout_s, socket_connect_timeout=s.redis_timeout_s,
        )

    def key(self, tenant: str, product_id: str) -> str:
        return f"{self.PREFIX}{tenant}:{product_id}"

    def _call(self, what: str, fn, *a):
        import redis

        try:
            return fn(*a)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            raise DependencyError("redis", f"{what}: {e}") from e

    def put(self, tenant: str, product_id: str, md: ProductMetadata) -> None:
        self._call("set", self.redis.set, self.key(tenant, product_id), md.model_dump_json())

    def delete(self, tenant: str, product_id: str) -> None:
        self._call("delete", self.redis.delete, self.key(tenant, product_id))

    def get_many(self, tenant: str, product_ids: list[str]) -> dict[str, ProductMetadata]:
        """Cached metadata for the ids found; raises DependencyError when Redis is down."""
        if not product_ids:
            return {}
        raw = self._call("mget", self.redis.mget, [self.key(tenant, p) for p in product_ids])
        out = {}
        for pid, val in zip(product_ids, raw):
            if val is not None:
                try:
                    out[pid] = ProductMetadata.model_validate_json(val)
                except ValueError:
                    log.warning("unreadable cache entry for %s:%s; using Milvus fields", tenant, pid)
        return out

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except Exception:
            return False
