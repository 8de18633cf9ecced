"""In-memory stand-ins for Triton, the Milvus index and the Redis product states, for unit tests of stage logic.

They implement only what the stages call, with the same shapes: a fake is for pure logic; integration tests run
the real services. ``ColourTriton`` segments by a fixed colour rule (red pixels are an upper garment, blue ones
pants) and embeds a crop as its normalised mean colour, so the same garment gives the same vector.
"""

from __future__ import annotations

import numpy as np

from contracts.models import LABEL_IDS
from workers.adapters.garment_rows import GarmentRow, Hit
from workers.adapters.milvus_index import SEARCH_FIELDS
from workers.adapters.product_state import ProductState
from workers.runtime.records import Item, Record

RED_LABEL, BLUE_LABEL = LABEL_IDS["Upper-clothes"], LABEL_IDS["Pants"]


class ColourTriton:
    """Segments red pixels as Upper-clothes and blue ones as Pants; a crop's vector is its mean colour (unit)."""

    segformer_size = 128  # S of the "served" segmenter: what the stages letterbox to

    def __init__(self):
        self.segment_calls: list[int] = []  # images per call: batching is visible
        self.embed_calls: list[int] = []

    def segment(self, images: list[np.ndarray]) -> list[np.ndarray]:
        self.segment_calls.append(len(images))
        out = []
        for img in images:
            assert img.shape == (self.segformer_size, self.segformer_size, 3), img.shape
            r, g, b = (img[..., i].astype(int) for i in range(3))
            labels = np.zeros(img.shape[:2], np.uint8)
            labels[(r > 150) & (g < 100) & (b < 100)] = RED_LABEL
            labels[(b > 150) & (r < 100) & (g < 100)] = BLUE_LABEL
            out.append(labels)
        return out

    def embed(self, crops: np.ndarray) -> np.ndarray:
        self.embed_calls.append(len(crops))
        v = crops.reshape(len(crops), -1, 3).astype(np.float32).mean(axis=1) + 1.0
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def ready(self) -> bool:
        return True


class MemoryIndex:
    """The garment collection as a dict of rows; cosine search per (tenant, label), filters ignored."""

    def __init__(self):
        self.rows: dict[str, GarmentRow] = {}

    def upsert(self, rows: list[GarmentRow]) -> None:
        self.rows.update({r.id: r for r in rows})

    def delete_ids(self, ids) -> None:
        for i in ids:
            self.rows.pop(i, None)

    def product_rows(self, keys) -> dict[tuple[str, str], list[dict]]:
        out: dict[tuple[str, str], list[dict]] = {}
        for r in self.rows.values():
            if (r.tenant, r.product_id) in set(keys):
                out.setdefault((r.tenant, r.product_id), []).append({"id": r.id, "version": r.version})
        return out

    def search_garments(self, tenant, queries, top_k, filters, consistency=None) -> list[list[Hit]]:
        out = []
        for label, vec in queries:
            rows = [r for r in self.rows.values() if r.tenant == tenant and r.label == label]
            scored = sorted(((float(np.dot(r.embedding, vec)), r) for r in rows), key=lambda x: -x[0])[:top_k]
            # as GarmentIndex: hits carry the fields a state check needs, row_fields the rest
            out.append([Hit(r.product_id, r.label, score, {k: r.to_milvus()[k] for k in SEARCH_FIELDS})
                        for score, r in scored])
        return out

    def row_fields(self, ids, consistency=None) -> dict[str, dict]:
        return {i: {k: v for k, v in self.rows[i].to_milvus().items() if k != "embedding"} for i in ids
                if i in self.rows}

    def existing_ids(self, ids) -> set[str]:
        return {i for i in ids if i in self.rows}

    def ping(self) -> bool:
        return True


class MemoryStates:
    """Product states per (tenant, product_id); tombstones never expire here."""

    def __init__(self):
        self.states: dict[tuple[str, str], ProductState] = {}

    def get_states(self, keys) -> dict[tuple[str, str], ProductState]:
        return {k: self.states[k] for k in keys if k in self.states}

    def put_states(self, states) -> None:
        self.states.update(states)

    def ping(self) -> bool:
        return True


def item(msg, topic: str = "in", offset: int = 0) -> Item:
    """A decoded input as the runtime hands it to ``process``."""
    return Item(Record(topic, 0, offset, None, b""), msg)
