"""The embedding worker's sink: catalog changes applied to Milvus rows and Redis states in a few round trips."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from contracts.models import ProductMetadata

from workers.adapters.garment_rows import GarmentRow
from workers.adapters.milvus_index import GarmentIndex
from workers.adapters.product_state import MetadataCache, ProductState

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

