"""Helpers of the store tests: rows, changes and vectors built the way the embedding worker builds them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contracts.models import ProductMetadata
from workers.runtime.settings import Settings
from workers.adapters.catalog_writer import CatalogWriter, Change
from workers.adapters.milvus_index import GarmentIndex
from workers.adapters.garment_rows import GarmentRow, garment_id
from workers.adapters.product_state import MetadataCache
from workers.adapters.triton_client import Embedder

# The store's contract does not depend on which model made the vectors: a declared 2048-d test embedder
# names the collection, so these tests need no Triton.
TEST_EMBEDDER = Embedder("storetest", "1", 2048)


def index_for(s: Settings) -> GarmentIndex:
    return GarmentIndex(s, embedder=TEST_EMBEDDER)


@dataclass
class Store:
    kind: str
    settings: Settings
    index: GarmentIndex
    cache: MetadataCache
    writer: CatalogWriter


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(2048).astype(np.float32)
    return v / np.linalg.norm(v)


def upsert(tenant: str, pid: str, image: str, labels: dict[str, int], version: str, **md) -> Change:
    """An upsert of one product image: ``labels`` maps each garment label to its vector's seed."""
    meta = ProductMetadata(**{"title": f"{tenant} {pid} {image}", **md})
    rows = [GarmentRow(garment_id(tenant, pid, image, label), tenant, pid, image, label, [0, 0, 10, 10], meta,
                       unit(seed), version) for label, seed in labels.items()]
    return Change(tenant, pid, "upsert", version, rows, meta)


def delete(tenant: str, pid: str, version: str) -> Change:
    return Change(tenant, pid, "delete", version)


def look(store: Store, tenant: str, garments: dict[str, np.ndarray], top_k: int = 10, filters=None):
    """The query worker's own search path (``QueryStage._search_and_reply``: search, product-state check,
    enrich) for garments already found and embedded; returns the LookReply. No Triton needed."""
    from contracts import codec
    from contracts.models import BBox, Filters, ImageRef, LookReply, LookRequest
    from workers.media.garments import GarmentCrop
    from workers.stages.query import QueryStage

    req = LookRequest(tenant=tenant, reply_to=f"looks.replies.{tenant}", image=ImageRef(uri="file:///x.jpg"),
                      top_k=top_k, filters=filters or Filters())
    found = [GarmentCrop(label, BBox(x0=0, y0=0, x1=10, y1=10), 0.5, np.zeros((1, 1, 3), np.uint8))
             for label in garments]
    stage = QueryStage(store.settings, None, store.index, store.cache)
    result = stage._search_and_reply(req, found, np.stack(list(garments.values())), {})
    return codec.decode(LookReply, result.outputs[0].value)


def product_ids(reply) -> set[str]:
    return {m.product_id for g in reply.garments for m in g.matches}


def visible(store: Store, tenant: str, garments: dict[str, np.ndarray], want: set[str], timeout: float = 15, **kw):
    """Wait until a look finds every product in ``want``: an indexed row becomes searchable within Milvus'
    bounded staleness (immediately on Lite, ~0.2-1 s on a server). Returns the last reply."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        reply = look(store, tenant, garments, **kw)
        if want <= product_ids(reply) or time.monotonic() > deadline:
            assert want <= product_ids(reply), f"{want - product_ids(reply)} not searchable after {timeout} s"
            return reply
        time.sleep(0.1)
