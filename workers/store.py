"""Milvus (garment vectors) and Redis (product states) as the workers use them.

Milvus collection ``<milvus_collection>__<embed model>_v<version>_<weights id>`` (named by the
embedder Triton serves, whose EMBEDDINGS dims give the vector dimension): one row per (tenant, product, image, garment label), with a
deterministic primary key so a replay upserts the same row, and the version of the event that wrote it.
Tenant is in every search and delete filter (server side); it is also the partition key where the
server handles that correctly (``check_server``; Milvus Lite 2.5 rejects filters on a partition key).

Redis holds one *product state* per ``tenant:product_id``: the version (event time + event id) of the
last applied event, the garment ids it left in Milvus and the metadata, or a delete tombstone that
expires after ``tombstone_retention_s``. It is what makes the fast paths safe:
- searches run at Bounded consistency (no wait for the server's time tick, ~2 ms instead of ~200 ms on a
  Milvus server) and ``live_hits`` drops every hit the product's state does not vouch for, so a reply
  never contains a product whose delete was acknowledged (the tombstone is written before the delete);
- writers know each product's previous garment ids, so a batch needs no Strong query at all;
- an event older than the product's state is skipped (``stale``): a replay cannot roll a product back.

Strings in filter expressions are JSON-quoted (Milvus accepts JSON string escapes); identifiers are
already restricted by the contracts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Literal

import numpy as np

from contracts.models import Filters, ProductMetadata

from .errors import DependencyError
from .settings import Settings

log = logging.getLogger(__name__)

NO_PRICE = -1.0  # Milvus Lite has no nullable scalars; a negative price means "unknown"
SCALAR_FIELDS = ("id", "tenant", "product_id", "image_id", "label", "bbox", "title", "brand", "category", "price",
                 "currency", "url", "in_stock", "version")
MAX_LIMIT = 16384  # Milvus' largest topK / query limit
WRITE_CHUNK = 256  # rows per upsert call (2048-d floats: ~2 MiB per call)

# Partition-key routing of upsert was broken before milvus-io/milvus#30772 (issue #30607: rows upserted into
# the wrong partition, tenant-filtered reads lose them); 2.3.x after its backport still returned deleted rows
# for varchar primary keys with a partition key (#31548). 2.4.0 is the first line accepted for partition keys.
MIN_PARTITION_KEY_VERSION = (2, 4, 0)


def garment_id(tenant: str, product_id: str, image_id: str, label: str) -> str:
    """Deterministic row id: a replay of the same event upserts the same row."""
    return hashlib.sha256(f"{tenant}\x00{product_id}\x00{image_id}\x00{label}".encode()).hexdigest()[:40]


def image_id_of(data: bytes) -> str:
    """Content hash of the image: the same picture re-sent gives the same garment rows."""
    return hashlib.sha256(data).hexdigest()[:16]


def event_version(occurred_at: datetime, event_id: str) -> str:
    """A product version that sorts as strings: UTC event time (microseconds), then the event id."""
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=timezone.utc)
    return f"{occurred_at.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}|{event_id}"


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
    version: str = ""

    def to_milvus(self) -> dict[str, Any]:
        md = self.metadata
        return {
            "id": self.id, "tenant": self.tenant, "product_id": self.product_id, "image_id": self.image_id,
            "label": self.label, "bbox": [int(x) for x in self.bbox],
            "title": _clip(md.title, 1000), "brand": _clip(md.brand, 500), "category": _clip(md.category, 500),
            "price": float(md.price) if md.price is not None else NO_PRICE, "currency": md.currency or "",
            "url": _clip(md.url, 2000), "in_stock": bool(md.in_stock), "version": self.version,
            "embedding": np.asarray(self.embedding, dtype=np.float32).tolist(),
        }


@dataclass(frozen=True)
class Hit:
    product_id: str
    label: str
    score: float
    fields: dict[str, Any]

    @property
    def id(self) -> str:
        return self.fields.get("id", "")

    @property
    def version(self) -> str:
        return self.fields.get("version", "")

    def metadata(self) -> ProductMetadata:
        f = self.fields
        price = f.get("price")
        return ProductMetadata(
            title=f.get("title", ""), brand=f.get("brand", ""), category=f.get("category", ""),
            price=None if price is None or price < 0 else round(float(price), 2), currency=f.get("currency") or None,
            url=f.get("url", ""), in_stock=bool(f.get("in_stock", True)),
        )


# --------------------------------------------------------------------------- error classes


class MilvusUnsupported(DependencyError):
    """The Milvus server cannot be used as configured (version, schema). Not the input's fault: the worker
    retries (and stays not ready) until an operator fixes the server or the settings; nothing is dead-lettered."""

    def __init__(self, message: str):
        super().__init__("milvus", message)


# Milvus server error codes (pkg/util/merr) that mean "the service cannot do it now", not "this request is bad":
# not ready / unavailable / memory, request, disk, rate, quota limits / time tick delay / resources; collection or
# partition not (fully) loaded or recovering; replica, channel, segment, node not available; IO failures;
# message-queue errors; canceled / timeout. Everything else (invalid parameter 1100, bad expression 65535, ...)
# is the request's fault and propagates as is.
MILVUS_OUTAGE_CODES = frozenset({
    1, 2, 3, 4, 7, 8, 9, 11, 12, 101, 103, 106, 201, 202, 305, 401, 500, 501, 503, 504, 600, 601, 602, 604,
    901, 902, 903, 904, 905, 906, 1001, 1002, 1302, 1303, 10000, 10001,
})


def _outage_grpc_codes():
    import grpc

    return {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED}


def is_milvus_outage(e: BaseException) -> bool:
    """Classify by gRPC status and Milvus error code, never by message text."""
    import grpc
    from pymilvus.exceptions import MilvusException

    if isinstance(e, grpc.RpcError) and hasattr(e, "code"):
        return e.code() in _outage_grpc_codes()
    if isinstance(e, MilvusException):
        code = e.code
        if isinstance(code, grpc.StatusCode):  # pymilvus' retry wrapper keeps the gRPC status as the code
            return code in _outage_grpc_codes()
        return isinstance(code, int) and code in MILVUS_OUTAGE_CODES
    return isinstance(e, (ConnectionError, TimeoutError))


# Redis error codes (the first word of an error reply) that mean the server cannot serve now: failover to a
# read-only replica, out of memory (noeviction), loading its dataset, busy in a script, persistence failure,
# cluster states. redis-py maps some to classes (ReadOnlyError, OutOfMemoryError, BusyLoadingError, ...) and
# strips the code from the message; the others stay plain ResponseErrors that start with their code.
REDIS_OUTAGE_CODES = frozenset({"READONLY", "OOM", "LOADING", "BUSY", "MISCONF", "MASTERDOWN", "CLUSTERDOWN",
                                "TRYAGAIN", "NOREPLICAS"})


def is_redis_outage(e: BaseException) -> bool:
    import redis.exceptions as rx

    if isinstance(e, (rx.ConnectionError, rx.TimeoutError, OSError)):  # incl. BusyLoadingError, auth failures
        return True
    if isinstance(e, (rx.ReadOnlyError, rx.OutOfMemoryError, rx.ClusterDownError, rx.TryAgainError,
                      rx.NoPermissionError)):  # a missing ACL is the operator's to fix, not the input's
        return True
    if type(e) is rx.ResponseError and e.args:
        return str(e.args[0]).split(" ", 1)[0] in REDIS_OUTAGE_CODES
    return False


def _milvus_call(what: str):
    """A Milvus outage is a DependencyError; anything else propagates as is.

    After one, the client is dropped: a gRPC channel the server closed (restart, GOAWAY) stays broken, and
    a released collection is loaded again on reconnect, so the retry starts from a fresh client.
    """

    def deco(fn):
        def wrapper(self, *a, **kw):
            try:
                return fn(self, *a, **kw)
            except DependencyError:
                raise
            except Exception as e:
                if is_milvus_outage(e):
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


def server_version(client) -> str | None:
    """The server's version string ("v2.3.5-lite", "v2.5.16"), or None for Milvus Lite 2.5 (no GetVersion)."""
    import grpc

    quiet = logging.getLogger("pymilvus.decorators")  # it logs Lite's UNIMPLEMENTED as an ERROR with a traceback
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        return client.get_server_version()
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNIMPLEMENTED:
            return None
        raise
    finally:
        quiet.level = level


def parse_version(v: str) -> tuple[int, int, int] | None:
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", v or "")
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def check_server(version: str | None, partition_key: bool) -> None:
    """Refuse partition-key mode where the server mishandles it; raises MilvusUnsupported."""
    if not partition_key:
        return
    need = ".".join(map(str, MIN_PARTITION_KEY_VERSION))
    if version is None:
        raise MilvusUnsupported(
            "LOOKSTREAM_MILVUS_PARTITION_KEY=1 needs a Milvus server >= " + need + "; this is Milvus Lite, which "
            "rejects filters on a partition key: set LOOKSTREAM_MILVUS_PARTITION_KEY=0")
    parsed = parse_version(version)
    if parsed is None or parsed < MIN_PARTITION_KEY_VERSION:
        raise MilvusUnsupported(
            f"Milvus {version} routes upserts wrongly with a partition key (milvus-io/milvus#30607, fixed by "
            f"PR #30772): tenant-filtered reads would lose rows. Partition-key mode needs Milvus >= {need}; "
            "upgrade the server or set LOOKSTREAM_MILVUS_PARTITION_KEY=0 (tenant filters still isolate tenants)")


Consistency = Literal["Strong", "Bounded", "Session", "Eventually"]


class GarmentIndex:
    """The garment collection of the embedder that made the vectors.

    ``embedder``: an ``Embedder`` (triton_client), or a callable returning one (resolved at the first use, so a
    worker can start before Triton answers); by default the one the Triton at ``s.triton_url`` serves.
    """

    def __init__(self, s: Settings, embedder=None):
        self.s = s
        self._embedder_source = embedder
        self._embedder = None
        self._client = None
        self.version: str | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def embedder(self):
        if self._embedder is None:
            src = self._embedder_source
            if src is None:
                from .triton_client import TritonModels

                with TritonModels(self.s.triton_url, self.s.segformer_model, self.s.embed_model,
                                  min(self.s.triton_timeout_s, 10.0), ssl=self.s.triton_ssl) as t:
                    self._embedder = t.embedder()
            else:
                self._embedder = src() if callable(src) else src
        return self._embedder

    @property
    def name(self) -> str:
        return self.embedder.collection(self.s.milvus_collection)

    @property
    def client(self):
        if self._client is None:
            try:
                token = self.s.milvus_token.get_secret_value() if self.s.milvus_token else ""
                self.embedder  # the collection's name and dimension come from Triton: resolve before connecting
                self._client = milvus_client(self.s.milvus_uri, token)
                self.version = server_version(self._client)
                self._ensure_collection()
            except DependencyError:
                self.close()
                raise
            except Exception as e:
                self.close()
                if is_milvus_outage(e):
                    raise DependencyError("milvus", f"connect {self.s.milvus_uri}: {e}") from e
                raise
        return self._client

    def _ensure_collection(self) -> None:
        from pymilvus import DataType, MilvusClient

        c = self._client
        if c.has_collection(self.name):
            desc = c.describe_collection(self.name)
            fields = {f["name"]: f for f in desc.get("fields", [])}
            if "version" not in fields:
                raise MilvusUnsupported(
                    f"collection {self.name!r} was created by an older lookstream (no 'version' field): "
                    "drop it and re-ingest, or point LOOKSTREAM_MILVUS_COLLECTION at a new collection")
            check_server(self.version, any(f.get("is_partition_key") for f in fields.values()))
            if str(c.get_load_state(self.name).get("state")) not in ("Loaded", "LoadState.Loaded", "Loading",
                                                                     "LoadState.Loading"):
                c.load_collection(self.name)  # released by an operator or after a restart: searches need it
            return
        check_server(self.version, self.s.milvus_partition_key)
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
        schema.add_field("version", DataType.VARCHAR, max_length=200)  # of the event that wrote the row
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.embedder.dim)
        index = c.prepare_index_params()
        params = {"IVF_FLAT": {"nlist": self.s.milvus_nlist}, "HNSW": {"M": 16, "efConstruction": 200}}
        index.add_index(field_name="embedding", index_type=self.s.milvus_index, metric_type="IP",
                        params=params.get(self.s.milvus_index, {}))
        extra = {"num_partitions": 64} if self.s.milvus_partition_key else {}
        c.create_collection(self.name, schema=schema, index_params=index, consistency_level="Bounded", **extra)
        log.info("created Milvus collection %s (%d-d, index %s, metric IP, server %s)", self.name, self.embedder.dim,
                 self.s.milvus_index, self.version or "Milvus Lite")

    def _search_params(self) -> dict:
        p = {"IVF_FLAT": {"nprobe": self.s.milvus_nprobe}, "HNSW": {"ef": self.s.milvus_hnsw_ef}}
        return {"metric_type": "IP", "params": p.get(self.s.milvus_index, {})}

    # ------------------------------------------------------------------ writes
    @_milvus_call("upsert")
    def upsert(self, rows: list[GarmentRow]) -> None:
        """All rows in as few calls as possible (the embedding worker's whole batch)."""
        for i in range(0, len(rows), WRITE_CHUNK):
            self.client.upsert(self.name, [r.to_milvus() for r in rows[i : i + WRITE_CHUNK]])

    @_milvus_call("delete")
    def delete_ids(self, ids: Iterable[str]) -> None:
        ids = sorted(set(ids))
        for i in range(0, len(ids), 4096):
            self.client.delete(self.name, ids=ids[i : i + 4096])

    @_milvus_call("query")
    def product_rows(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[dict]]:
        """The rows of these products (id, version), for products whose state Redis does not know.

        Bounded consistency is enough (no time-tick wait): a product without a state is new (no rows), or
        Redis lost its state (its rows are old, so visible), or a worker crashed between writing its rows and
        its state, and then the event is replayed here, with the same deterministic row ids. At worst a row
        written within the staleness bound before a Redis data loss is missed: it stays as an orphan that
        ``ProductState.vouches_for`` never shows (its version is older than the state's)."""
        by_tenant: dict[str, list[str]] = {}
        for tenant, pid in set(keys):
            by_tenant.setdefault(tenant, []).append(pid)
        if not by_tenant:
            return {}
        expr = " or ".join(f"(tenant == {q(t)} and product_id in [{', '.join(q(p) for p in sorted(pids))}])"
                           for t, pids in sorted(by_tenant.items()))
        out: dict[tuple[str, str], list[dict]] = {}
        for r in self.client.query(self.name, filter=expr, output_fields=["id", "tenant", "product_id", "version"],
                                   limit=MAX_LIMIT, consistency_level="Bounded"):
            out.setdefault((r["tenant"], r["product_id"]), []).append(r)
        return out

    @_milvus_call("upsert")
    def replace_product(self, tenant: str, product_id: str, rows: list[GarmentRow]) -> int:
        """Upsert one product's rows and delete its other rows. Slow path (a Strong query) for tools and
        tests that write without Redis; the workers use ``CatalogWriter``. Returns rows removed."""
        if rows:
            self.client.upsert(self.name, [r.to_milvus() for r in rows])
        keep = [r.id for r in rows]
        expr = f"tenant == {q(tenant)} and product_id == {q(product_id)}"
        if keep:
            expr += f" and id not in [{', '.join(q(k) for k in keep)}]"
        return self._delete(expr)

    @_milvus_call("delete")
    def delete_product(self, tenant: str, product_id: str) -> int:
        """Slow path, as ``replace_product``. Returns rows removed."""
        return self._delete(f"tenant == {q(tenant)} and product_id == {q(product_id)}")

    def _delete(self, expr: str) -> int:
        ids = [r["id"] for r in self.client.query(self.name, filter=expr, output_fields=["id"],
                                                  consistency_level="Strong", limit=MAX_LIMIT)]
        if ids:
            self.client.delete(self.name, ids=ids)
        return len(ids)

    # ------------------------------------------------------------------ reads
    @_milvus_call("search")
    def search(self, tenant: str, label: str, vectors: np.ndarray, top_k: int, filters: Filters,
               consistency: Consistency | None = None) -> list[list[Hit]]:
        """Nearest rows of one label for each vector. Default consistency: ``milvus_search_consistency``."""
        expr = filter_expression(tenant, label, filters)
        res = self.client.search(
            self.name, data=np.asarray(vectors, dtype=np.float32).tolist(), anns_field="embedding", filter=expr,
            limit=min(top_k, MAX_LIMIT), output_fields=list(SCALAR_FIELDS), search_params=self._search_params(),
            consistency_level=consistency or self.s.milvus_search_consistency,
        )
        return [[Hit(h["entity"]["product_id"], h["entity"]["label"], float(h["distance"]),
                     {**h["entity"], "id": h["entity"].get("id", h.get("id"))}) for h in hits] for hits in res]

    def search_garments(self, tenant: str, queries: list[tuple[str, np.ndarray]], top_k: int, filters: Filters,
                        consistency: Consistency | None = None) -> list[list[Hit] | Exception]:
        """All garments of one look: one search per distinct label (its vectors together), the labels in
        parallel. One entry per query, in order: its hits, or the exception its search raised. A Milvus
        outage raises DependencyError for the whole look."""
        groups: dict[str, list[int]] = {}
        for i, (label, _v) in enumerate(queries):
            groups.setdefault(label, []).append(i)
        _ = self.client  # connect (and check the server) once, before the threads share the client

        def one(label: str) -> list[list[Hit]]:
            vecs = np.stack([np.asarray(queries[i][1], dtype=np.float32).reshape(-1) for i in groups[label]])
            return self.search(tenant, label, vecs, top_k, filters, consistency)

        if len(groups) == 1:
            futures = {label: _Done(lambda label=label: one(label)) for label in groups}
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="milvus-search")
            futures = {label: self._pool.submit(one, label) for label in groups}
        out: list[list[Hit] | Exception] = [[] for _ in queries]
        for label, fut in futures.items():
            try:
                per_vector = fut.result()
            except DependencyError:
                raise
            except Exception as e:  # noqa: BLE001 - this label's garments fail, the others still answer
                per_vector = [e] * len(groups[label])
            for i, hits in zip(groups[label], per_vector):
                out[i] = hits
        return out

    @_milvus_call("query")
    def existing_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of these row ids exist now (Strong): vouches for hits whose product Redis does not know."""
        ids = sorted(set(ids))
        if not ids:
            return set()
        expr = f"id in [{', '.join(q(i) for i in ids)}]"
        return {r["id"] for r in self.client.query(self.name, filter=expr, output_fields=["id"], limit=MAX_LIMIT,
                                                   consistency_level="Strong")}

    @_milvus_call("query")
    def rows(self, filter_expr: str = 'id != ""', fields: Iterable[str] = ("id", "tenant", "product_id", "label")) -> list[dict]:
        return list(self.client.query(self.name, filter=filter_expr, output_fields=list(fields), limit=MAX_LIMIT,
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


class _Done:
    """A computed-in-place stand-in for a Future (one label: no thread hop)."""

    def __init__(self, fn):
        try:
            self._value, self._error = fn(), None
        except Exception as e:  # noqa: BLE001 - re-raised by result()
            self._value, self._error = None, e

    def result(self):
        if self._error is not None:
            raise self._error
        return self._value


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


# --------------------------------------------------------------------------- product states (Redis)


@dataclass(frozen=True)
class ProductState:
    """What the last applied event left: its version, the product's garment ids and metadata, or a tombstone.

    ``garment_ids is None`` marks an entry written by an older lookstream (plain metadata, no version)."""

    version: str
    deleted: bool = False
    garment_ids: tuple[str, ...] | None = ()
    metadata: ProductMetadata | None = None

    def to_json(self) -> str:
        return json.dumps({"v": self.version, "deleted": self.deleted, "ids": list(self.garment_ids or ()),
                           "md": self.metadata.model_dump(mode="json") if self.metadata else None})

    @classmethod
    def from_json(cls, raw: bytes | str) -> ProductState:
        d = json.loads(raw)
        if "v" not in d:  # an older entry: the product's metadata alone
            return cls(version="", garment_ids=None, metadata=ProductMetadata.model_validate(d))
        md = ProductMetadata.model_validate(d["md"]) if d.get("md") else None
        return cls(version=str(d["v"]), deleted=bool(d.get("deleted")), garment_ids=tuple(d.get("ids") or ()),
                   metadata=md)

    def vouches_for(self, hit: Hit) -> bool:
        """Is this Milvus hit part of the product as this state knows it?"""
        if hit.version > self.version:  # written by a newer event whose state is on its way
            return True
        if self.deleted:
            return False
        return self.garment_ids is None or hit.id in self.garment_ids


class MetadataCache:
    """Product states per ``tenant:product_id`` in Redis: written by the embedding worker, read at query time."""

    PREFIX = "lookstream:product:"

    def __init__(self, s: Settings):
        import redis

        self.s = s
        self.redis = redis.Redis.from_url(
            s.redis_url, password=s.redis_password.get_secret_value() if s.redis_password else None,
            socket_timeout=s.redis_timeout_s, socket_connect_timeout=s.redis_timeout_s,
        )

    def key(self, tenant: str, product_id: str) -> str:
        return f"{self.PREFIX}{tenant}:{product_id}"

    def _call(self, what: str, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except Exception as e:
            if is_redis_outage(e):
                raise DependencyError("redis", f"{what}: {type(e).__name__}: {e}") from e
            raise

    # --- states
    def get_states(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], ProductState]:
        """The states found (one MGET); an unreadable entry counts as missing. DependencyError on an outage."""
        if not keys:
            return {}
        raw = self._call("mget", self.redis.mget, [self.key(t, p) for t, p in keys])
        out = {}
        for k, val in zip(keys, raw):
            if val is not None:
                try:
                    out[k] = ProductState.from_json(val)
                except (ValueError, KeyError, TypeError):
                    log.warning("unreadable product state for %s:%s; treated as unknown", *k)
        return out

    def put_states(self, states: dict[tuple[str, str], ProductState]) -> None:
        """All states in one pipelined round trip; tombstones expire after the retention."""
        if not states:
            return
        pipe = self.redis.pipeline(transaction=False)
        for (t, p), st in states.items():
            pipe.set(self.key(t, p), st.to_json(), ex=self.s.tombstone_retention_s if st.deleted else None)
        self._call("set", pipe.execute)

    # --- metadata views (tests, tools)
    def get_many(self, tenant: str, product_ids: list[str]) -> dict[str, ProductMetadata]:
        """Metadata of the live products among these ids; raises DependencyError when Redis is down."""
        states = self.get_states([(tenant, p) for p in product_ids])
        return {p: st.metadata for (_t, p), st in states.items() if not st.deleted and st.metadata is not None}

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except Exception:
            return False


# --------------------------------------------------------------------------- the embedding worker's sink


@dataclass
class Change:
    """One catalog event to apply: an upsert with its rows (maybe none) or a delete."""

    tenant: str
    product_id: str
    op: Literal["upsert", "delete"]
    version: str
    rows: list[GarmentRow] = field(default_factory=list)
    metadata: ProductMetadata | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.product_id)


@dataclass(frozen=True)
class Applied:
    status: Literal["indexed", "no_garments", "deleted", "stale"]
    removed: int = 0


class CatalogWriter:
    """Applies a batch of changes with a fixed number of round trips, whatever the batch size.

    1 MGET of the products' states (+ 1 Bounded Milvus query, only for products Redis does not know);
    the changes folded in order per product (a stale event is skipped); then
    tombstones (Redis) -> all rows (1 upsert) -> rows no longer wanted (1 delete) -> live states (Redis).
    Tombstones go first, so a delete hides the product before its rows go; live states go last, so they
    never name rows that are not written. A crash anywhere replays to the same end state.
    """

    def __init__(self, index: GarmentIndex, cache: MetadataCache):
        self.index, self.cache = index, cache

    def apply(self, changes: list[Change]) -> list[Applied]:
        keys = list(dict.fromkeys(c.key for c in changes))
        states: dict[tuple[str, str], ProductState | None] = dict(self.cache.get_states(keys))
        unknown = [k for k in keys if k not in states or states[k].garment_ids is None]
        if unknown:
            found = self.index.product_rows(unknown)
            for k in unknown:
                rows = found.get(k)
                legacy = states.get(k)
                if rows:
                    states[k] = ProductState(version=max(r.get("version", "") for r in rows),
                                             garment_ids=tuple(r["id"] for r in rows),
                                             metadata=legacy.metadata if legacy else None)
                elif legacy is not None:
                    states[k] = ProductState(version="", garment_ids=(), metadata=legacy.metadata)
        upserts: dict[str, GarmentRow] = {}
        deletes: set[str] = set()
        changed: dict[tuple[str, str], ProductState] = {}
        results: list[Applied] = []
        for c in changes:
            cur = states.get(c.key)
            if cur is not None and c.version < cur.version:
                results.append(Applied("stale"))
                continue
            old = set(cur.garment_ids or ()) if cur is not None and not cur.deleted else set()
            if c.op == "delete":
                new_ids: list[str] = []
                new = ProductState(c.version, deleted=True)
            else:
                new_ids = [r.id for r in c.rows]
                new = ProductState(c.version, garment_ids=tuple(new_ids), metadata=c.metadata)
            gone = old - set(new_ids)
            for i in gone:
                upserts.pop(i, None)
            deletes |= gone
            deletes -= set(new_ids)
            for r in c.rows:
                upserts[r.id] = r
            states[c.key] = changed[c.key] = new
            status = "deleted" if c.op == "delete" else ("indexed" if c.rows else "no_garments")
            results.append(Applied(status, removed=len(gone)))
        self.cache.put_states({k: s for k, s in changed.items() if s.deleted})
        if upserts:
            self.index.upsert(list(upserts.values()))
        if deletes:
            self.index.delete_ids(deletes)
        self.cache.put_states({k: s for k, s in changed.items() if not s.deleted})
        return results


# --------------------------------------------------------------------------- the query worker's filter


def live_hits(hits: list[Hit], states: dict[str, ProductState], confirmed: set[str]) -> list[Hit]:
    """The hits a reply may show: vouched for by their product's state, or (product unknown to Redis)
    confirmed to exist by a Strong read (``confirmed`` row ids)."""
    out = []
    for h in hits:
        st = states.get(h.product_id)
        if (st.vouches_for(h) if st is not None else h.id in confirmed):
            out.append(h)
    return out
