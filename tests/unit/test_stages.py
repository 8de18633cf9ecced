"""Stage logic without Kafka: segmentation -> embedding -> query over the in-memory fakes (tests/support/fakes.py).

The stages are the real classes; only Triton, Milvus and Redis are stand-ins (integration tests run the real ones).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from support.fakes import ColourTriton, MemoryIndex, MemoryStates, item

from contracts import codec
from contracts.models import GarmentsEvent, IndexedEvent, LookReply, LookRequest, ProductEvent
from workers.runtime.settings import Settings
from workers.stages.embedding import EmbeddingStage
from workers.stages.query import QueryStage
from workers.stages.segmentation import SegmentationStage


def photo(*blocks: tuple[tuple[int, int, int], tuple[int, int, int, int]], size=(160, 200)) -> bytes:
    """A PNG on a grey background with coloured blocks ((r, g, b), (x0, y0, x1, y1))."""
    img = Image.new("RGB", size, (128, 128, 128))
    for colour, box in blocks:
        img.paste(colour, box)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


RED_TOP = ((220, 20, 20), (30, 20, 130, 100))
BLUE_PANTS = ((20, 20, 220), (40, 110, 120, 190))
DARK_RED_TOP = ((160, 10, 10), (30, 20, 130, 100))


def stages():
    s = Settings(_env_file=None)
    triton, index, states = ColourTriton(), MemoryIndex(), MemoryStates()
    return (s, triton, index, states, SegmentationStage(s, triton), EmbeddingStage(s, triton, index, states),
            QueryStage(s, triton, index, states))


def product(pid: str, *images: bytes, **kw) -> ProductEvent:
    refs = {"image": {"bytes": images[0]}} if len(images) == 1 else {"images": [{"bytes": b} for b in images]}
    return ProductEvent(tenant="acme", product_id=pid, metadata={"title": pid, "price": 10}, **refs, **kw)


def only(result, model):
    assert result.dead_letter is None, result.dead_letter
    (out,) = result.outputs
    return codec.decode(model, out.value)


def test_segmentation_one_triton_call_per_batch_and_garments_per_product():
    s, triton, _i, _st, seg, _e, _q = stages()
    batch = [product("top", photo(RED_TOP)), product("outfit", photo(RED_TOP, BLUE_PANTS), photo(BLUE_PANTS)),
             product("wants-pants", photo(RED_TOP, BLUE_PANTS), garments=["Pants"])]
    results = seg.process([item(ev, offset=n) for n, ev in enumerate(batch)])
    assert triton.segment_calls == [4]  # every image of the batch in one call
    top, outfit, wants = (only(r, GarmentsEvent) for r in results)
    assert [g.label for g in top.garments] == ["Upper-clothes"] and top.found_labels == ["Upper-clothes"]
    assert sorted(g.label for g in outfit.garments) == ["Pants", "Pants", "Upper-clothes"]
    assert len(outfit.image_ids) == 2 and {g.image_id for g in outfit.garments} == set(outfit.image_ids)
    assert [g.label for g in wants.garments] == ["Pants"] and set(wants.found_labels) == {"Upper-clothes", "Pants"}
    assert wants.wanted_labels == ["Pants"]
    box = top.garments[0].bbox  # unletterboxed: in the original image's pixels
    assert (box.x0, box.y0, box.x1, box.y1) == (30, 20, 130, 100)


def test_segmentation_a_bad_image_dead_letters_only_its_event_and_deletes_pass_through():
    _s, triton, _i, _st, seg, _e, _q = stages()
    batch = [product("bad", b"\x89PNG not really"), ProductEvent(tenant="acme", product_id="gone", op="delete"),
             product("good", photo(RED_TOP))]
    bad, gone, good = seg.process([item(ev, offset=n) for n, ev in enumerate(batch)])
    assert bad.dead_letter is not None and not bad.outputs
    assert only(gone, GarmentsEvent).op == "delete"
    assert [g.label for g in only(good, GarmentsEvent).garments] == ["Upper-clothes"]
    assert triton.segment_calls == [1]


def index(seg, emb, *events: ProductEvent) -> list[IndexedEvent]:
    garments = [only(r, GarmentsEvent) for r in seg.process([item(ev) for ev in events])]
    return [only(r, IndexedEvent) for r in emb.process([item(g) for g in garments])]


def test_embedding_indexes_replaces_skips_stale_and_deletes():
    _s, _t, idx, states, seg, emb, _q = stages()
    first = product("p1", photo(RED_TOP, BLUE_PANTS))
    (done,) = index(seg, emb, first)
    assert done.status == "indexed" and sorted(done.labels) == ["Pants", "Upper-clothes"]
    assert {r.label for r in idx.rows.values()} == {"Pants", "Upper-clothes"}
    newer = product("p1", photo(RED_TOP), occurred_at=first.occurred_at.replace(year=first.occurred_at.year + 1))
    (replaced,) = index(seg, emb, newer)
    assert replaced.status == "indexed" and replaced.removed == 2  # a new picture: the old rows go
    assert [r.label for r in idx.rows.values()] == ["Upper-clothes"]
    (stale,) = index(seg, emb, first)  # the old event replayed: it cannot roll the product back
    assert stale.status == "stale" and [r.label for r in idx.rows.values()] == ["Upper-clothes"]
    delete = ProductEvent(tenant="acme", product_id="p1", op="delete",
                          occurred_at=newer.occurred_at.replace(year=newer.occurred_at.year + 1))
    (deleted,) = index(seg, emb, delete)
    assert deleted.status == "deleted" and not idx.rows and states.states[("acme", "p1")].deleted


def ask(q, image: bytes, **kw) -> LookReply:
    req = LookRequest(tenant="acme", reply_to="looks.replies.acme", image={"bytes": image}, top_k=3, **kw)
    (res,) = q.process([item(req)])
    return only(res, LookReply)


def test_query_finds_the_indexed_garment_and_never_a_deleted_product():
    _s, triton, idx, _st, seg, emb, q = stages()
    index(seg, emb, product("red", photo(RED_TOP)), product("dark", photo(DARK_RED_TOP)),
          product("blue", photo(BLUE_PANTS)))
    calls = len(triton.segment_calls)
    reply = ask(q, photo(RED_TOP, BLUE_PANTS))
    assert reply.status.value == "ok" and len(triton.segment_calls) == calls + 1
    by_label = {g.label: [m.product_id for m in g.matches] for g in reply.garments}
    assert by_label["Upper-clothes"][0] == "red" and set(by_label["Upper-clothes"]) == {"red", "dark"}
    assert by_label["Pants"] == ["blue"]
    assert reply.garments[0].matches[0].score > 0.999  # the same garment through the same JPEG hop
    assert {"decode", "segment", "crop", "embed", "search", "enrich", "total"} <= set(reply.timings_ms)
    red_rows = [r for r in idx.rows.values() if r.product_id == "red"]
    index(seg, emb, ProductEvent(tenant="acme", product_id="red", op="delete"))
    idx.upsert(red_rows)  # a Bounded search may still see the deleted rows: the tombstone must hide them
    after = {g.label: [m.product_id for m in g.matches] for g in ask(q, photo(RED_TOP)).garments}
    assert after == {"Upper-clothes": ["dark"]}
    only_pants = ask(q, photo(RED_TOP, BLUE_PANTS), garments=["Pants"])
    assert [g.label for g in only_pants.garments] == ["Pants"]
    nothing = ask(q, photo())
    assert nothing.status.value == "error" and nothing.error == "no garments found"
