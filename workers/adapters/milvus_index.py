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

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Literal

import numpy as np

from contracts.models import Filters

from workers.adapters.garment_rows import GarmentRow, Hit, filter_expression, q
from workers.adapters.milvus_server import (
    MilvusUnsupported, _milvus_call, check_server, is_milvus_outage, milvus_client, server_version,
)
from workers.runtime.errors import DependencyError
from workers.runtime.settings import Settings

log = logging.getLogger(__name__)

SCALAR_FIELDS = ("id", "tenant", "product_id", "image_id", "label", "bbox", "title", "brand", "category", "price",
                 "currency", "url", "in_stock", "version")
# What a look's search returns per hit: enough to check it against the product's state and list it.
SEARCH_FIELDS = ("id", "tenant", "product_id", "label", "version")
MAX_LIMIT = 16384  # Milvus' largest topK / query limit
WRITE_CHUNK = 256  # rows per upsert call (2048-d floats: ~2 MiB per call)


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
                from workers.adapters.triton_client import TritonModels

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
            self.client.upsert(self.name, [r.to_milvus() for r in rows[i : i + WRITE_CHUNK]], timeout=self.s.milvus_timeout_s)

    @_milvus_call("delete")
    def delete_ids(self, ids: Iterable[str]) -> None:
        ids = sorted(set(ids))
        for i in range(0, len(ids), 4096):
            self.client.delete(self.name, ids=ids[i : i + 4096], timeout=self.s.milvus_timeout_s)

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
                                   limit=MAX_LIMIT, consistency_level="Bounded", timeout=self.s.milvus_timeout_s):
            out.setdefault((r["tenant"], r["product_id"]), []).append(r)
        return out

    @_milvus_call("upsert")
    def replace_product(self, tenant: str, product_id: str, rows: list[GarmentRow]) -> int:
        """Upsert one product's rows and delete its other rows. Slow path (a Strong query) for tools and
        tests that write without Redis; the workers use ``CatalogWriter``. Returns rows removed."""
        if rows:
            self.client.upsert(self.name, [r.to_milvus() for r in rows], timeout=self.s.milvus_timeout_s)
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
                                                  consistency_level="Strong", limit=MAX_LIMIT, timeout=self.s.milvus_timeout_s)]
        if ids:
            self.client.delete(self.name, ids=ids, timeout=self.s.milvus_timeout_s)
        return len(ids)

    # ------------------------------------------------------------------ reads
    @_milvus_call("search")
    def search(self, tenant: str, label: str, vectors: np.ndarray, top_k: int, filters: Filters,
               consistency: Consistency | None = None, fields: Iterable[str] = SCALAR_FIELDS) -> list[list[Hit]]:
        """Nearest rows of one label for each vector. Default consistency: ``milvus_search_consistency``."""
        expr = filter_expression(tenant, label, filters)
        res = self.client.search(
            self.name, data=np.asarray(vectors, dtype=np.float32).tolist(), anns_field="embedding", filter=expr,
            limit=min(top_k, MAX_LIMIT), output_fields=list(fields), search_params=self._search_params(),
            consistency_level=consistency or self.s.milvus_search_consistency, timeout=self.s.milvus_timeout_s,
        )
        return [[Hit(h["entity"]["product_id"], h["entity"]["label"], float(h["distance"]),
                     {**h["entity"], "id": h["entity"].get("id", h.get("id"))}) for h in hits] for hits in res]

    def search_garments(self, tenant: str, queries: list[tuple[str, np.ndarray]], top_k: int, filters: Filters,
                        consistency: Consistency | None = None) -> list[list[Hit] | Exception]:
        """All garments of one look: one search per distinct label (its vectors together), the labels in
        parallel. One request over all the look's labels was no faster: at 30k rows on a 2.3 server 28 ms
        against 25 (pymilvus decodes 3x the hits), and on Milvus Lite, which searches brute force, 163 ms
        against 112 at 100k (every label's rows scanned for every garment). Hits carry ``SEARCH_FIELDS``
        only; ``row_fields`` reads the rest. One entry per query, in order: its hits, or the exception its
        search raised. A Milvus outage raises DependencyError for the whole look."""
        groups: dict[str, list[int]] = {}
        for i, (label, _v) in enumerate(queries):
            groups.setdefault(label, []).append(i)
        _ = self.client  # connect (and check the server) once, before the threads share the client

        def one(label: str) -> list[list[Hit]]:
            vecs = np.stack([np.asarray(queries[i][1], dtype=np.float32).reshape(-1) for i in groups[label]])
            return self.search(tenant, label, vecs, top_k, filters, consistency, SEARCH_FIELDS)

        if len(groups) > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="milvus-search")
        futures = {label: self._pool.submit(one, label) for label in groups} if len(groups) > 1 else {}
        out: list[list[Hit] | Exception] = [[] for _ in queries]
        for label, idx in groups.items():
            try:
                per_vector = futures[label].result() if futures else one(label)
            except DependencyError:
                raise
            except Exception as e:  # noqa: BLE001 - this label's garments fail, the others still answer
                per_vector = [e] * len(idx)
            for i, hits in zip(idx, per_vector):
                out[i] = hits
        return out

    @_milvus_call("query")
    def row_fields(self, ids: Iterable[str], consistency: Consistency | None = None) -> dict[str, dict]:
        """Every scalar field of these rows (the metadata of hits Redis holds none for), by id."""
        ids = sorted(set(ids))
        if not ids:
            return {}
        rows = self.client.query(self.name, filter=f"id in [{', '.join(q(i) for i in ids)}]",
                                 output_fields=list(SCALAR_FIELDS), limit=MAX_LIMIT,
                                 consistency_level=consistency or self.s.milvus_search_consistency,
                                 timeout=self.s.milvus_timeout_s)
        return {r["id"]: r for r in rows}

    @_milvus_call("query")
    def existing_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of these row ids exist now (Strong): vouches for hits whose product Redis does not know."""
        ids = sorted(set(ids))
        if not ids:
            return set()
        expr = f"id in [{', '.join(q(i) for i in ids)}]"
        return {r["id"] for r in self.client.query(self.name, filter=expr, output_fields=["id"], limit=MAX_LIMIT,
                                                   consistency_level="Strong", timeout=self.s.milvus_timeout_s)}

    @_milvus_call("query")
    def rows(self, filter_expr: str = 'id != ""', fields: Iterable[str] = ("id", "tenant", "product_id", "label")) -> list[dict]:
        return list(self.client.query(self.name, filter=filter_expr, output_fields=list(fields), limit=MAX_LIMIT,
                                      consistency_level="Strong", timeout=self.s.milvus_timeout_s))

    @_milvus_call("count")
    def count(self, filter_expr: str = "") -> int:
        res = self.client.query(self.name, filter=filter_expr, output_fields=["count(*)"], consistency_level="Strong",
                                 timeout=self.s.milvus_timeout_s)
        return int(res[0]["count(*)"])

    def ping(self) -> bool:
        try:
            self.client.has_collection(self.name, timeout=self.s.milvus_timeout_s)
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
