"""The look search's pages (QueryStage._search_and_reply): a first page of 4 x top_k rows per garment, a second
with room for every product's 8 images when the first holds fewer than top_k live products."""

from __future__ import annotations

import numpy as np
from support.fakes import MemoryIndex, MemoryStates

from contracts.models import BBox, LookReply, LookRequest, ProductMetadata
from contracts import codec
from workers.adapters.garment_rows import GarmentRow
from workers.adapters.product_state import ProductState
from workers.media.garments import GarmentCrop
from workers.runtime.settings import Settings
from workers.stages.query import QueryStage

V = "2026-01-01T00:00:01.000000Z|e1"


class CountingIndex(MemoryIndex):
    def __init__(self):
        super().__init__()
        self.limits: list[int] = []

    def search_garments(self, tenant, queries, top_k, filters, consistency=None):
        self.limits.append(top_k)
        return super().search_garments(tenant, queries, top_k, filters, consistency)


def rows(pid: str, images: int, score: float) -> list[GarmentRow]:
    """``images`` rows of one product for Dress, each at cosine ~``score`` to the query (1, 0, 0, ...)."""
    out = []
    for k in range(images):
        v = np.zeros(8, np.float32)
        v[0], v[1 + k % 7] = score, np.sqrt(1 - score**2)
        out.append(GarmentRow(f"{pid}-{k}", "acme", pid, f"img{k}", "Dress", [0, 0, 4, 4],
                              ProductMetadata(title=f"{pid} title"), v, V))
    return out


def ask(index, states, top_k: int) -> LookReply:
    stage = QueryStage(Settings(_env_file=None), None, index, states)
    req = LookRequest(tenant="acme", reply_to="looks.replies.acme", image={"bytes": b"x" * 16}, top_k=top_k)
    found = [GarmentCrop("Dress", BBox(x0=0, y0=0, x1=4, y1=4), 0.2, np.zeros((4, 4, 3), np.uint8))]
    query = np.zeros((1, 8), np.float32)
    query[0, 0] = 1.0
    res = stage._search_and_reply(req, found, query, {})
    return codec.decode(LookReply, res.outputs[0].value)


def put(index, states, product_rows, deleted=False):
    index.upsert(product_rows)
    r = product_rows[0]
    states.put_states({("acme", r.product_id): ProductState(
        V, deleted=deleted, garment_ids=tuple(x.id for x in product_rows), metadata=r.metadata)})


def test_one_page_when_it_holds_top_k_products():
    index, states = CountingIndex(), MemoryStates()
    for i in range(5):
        put(index, states, rows(f"p{i}", 1, 0.9 - i * 0.1))
    reply = ask(index, states, top_k=2)
    assert [m.product_id for m in reply.garments[0].matches] == ["p0", "p1"]
    assert index.limits == [8]  # 4 x top_k
    assert reply.garments[0].matches[0].metadata.title == "p0 title"


def test_a_product_with_many_images_filling_the_first_page_brings_a_second():
    index, states = CountingIndex(), MemoryStates()
    put(index, states, rows("many", 8, 0.99))  # 8 images, all nearer than any other product
    put(index, states, rows("other", 1, 0.5))
    reply = ask(index, states, top_k=2)
    assert [m.product_id for m in reply.garments[0].matches] == ["many", "other"]
    assert index.limits == [8, 32]  # the second page: 2 x top_k x 8


def test_deleted_products_filling_the_first_page_bring_a_second_and_never_show():
    index, states = CountingIndex(), MemoryStates()
    for i in range(4):
        put(index, states, rows(f"gone{i}", 2, 0.99 - i * 0.01), deleted=True)
    put(index, states, rows("live", 1, 0.3))
    reply = ask(index, states, top_k=1)
    assert [m.product_id for m in reply.garments[0].matches] == ["live"]
    assert index.limits == [4, 16]
