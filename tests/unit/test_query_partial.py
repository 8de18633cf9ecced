"""The query stage's per-garment failure rule (pure logic; the index is a stand-in that fails one label).

One garment's search failing (not a dependency outage) makes the reply ``partial``: the other garments are
answered, the failed one is named in the error; all failing is an ``error``; an outage raises, so the whole
batch waits and retries instead of answering partially.
"""

from __future__ import annotations

import numpy as np
import pytest

from contracts import codec
from contracts.models import BBox, LookReply, LookRequest
from workers.runtime.errors import DependencyError
from workers.media.garments import GarmentCrop
from workers.stages.query import QueryStage
from workers.runtime.settings import Settings
from workers.adapters.garment_rows import Hit


class Index:
    """Answers every label from fixed rows, except the labels in ``fail`` (their search raised)."""

    def __init__(self, fail: dict[str, Exception]):
        self.fail = fail

    def search_garments(self, tenant, queries, top_k, filters, consistency=None):
        out = []
        for label, _vec in queries:
            err = self.fail.get(label)
            if isinstance(err, DependencyError):
                raise err  # an outage fails the whole look
            out.append(err if err is not None else [
                Hit(f"{label}-p1", label, 0.9, {"id": f"{label}-r1", "title": "t", "brand": "b", "price": 5.0}),
                Hit(f"{label}-p2", label, 0.5, {"id": f"{label}-r2", "title": "u", "brand": "c", "price": 7.0})])
        return out

    def existing_ids(self, ids):
        return set(ids)  # every row exists (no delete in flight)

    def row_fields(self, ids, consistency=None):
        return {}  # the hits above carry their metadata already


class Cache:
    def get_states(self, keys):
        return {}  # Redis knows none of them: the index confirms them


def crop(label: str) -> GarmentCrop:
    return GarmentCrop(label, BBox(x0=0, y0=0, x1=4, y1=4), 0.2, np.zeros((4, 4, 3), np.uint8))


def answer(fail: dict[str, Exception]):
    stage = QueryStage(Settings(_env_file=None), None, Index(fail), Cache())
    req = LookRequest(tenant="acme", reply_to="looks.replies.acme", image={"bytes": b"x" * 16}, top_k=2)
    found = [crop("Upper-clothes"), crop("Pants")]
    res = stage._search_and_reply(req, found, np.ones((2, 2048), np.float32), {})
    assert len(res.outputs) == 1  # exactly one reply
    return codec.decode(LookReply, res.outputs[0].value)


def test_one_garment_failing_makes_the_reply_partial():
    r = answer({"Pants": ValueError("bad expression")})
    assert r.status.value == "partial" and r.error == "search failed for Pants"
    assert [g.label for g in r.garments] == ["Upper-clothes"]
    assert [m.product_id for m in r.garments[0].matches] == ["Upper-clothes-p1", "Upper-clothes-p2"]
    assert [x.product_id for x in r.ranking] == ["Upper-clothes-p1"]  # first place of the one answered garment


def test_every_garment_failing_is_an_error_and_none_is_ok():
    r = answer({"Pants": ValueError("x"), "Upper-clothes": RuntimeError("y")})
    assert r.status.value == "error" and r.error == "search failed for Upper-clothes, Pants" and not r.garments
    ok = answer({})
    assert ok.status.value == "ok" and ok.error is None and [g.label for g in ok.garments] == ["Upper-clothes", "Pants"]


def test_an_outage_is_not_a_partial_answer():
    with pytest.raises(DependencyError):
        answer({"Pants": DependencyError("milvus", "down")})
