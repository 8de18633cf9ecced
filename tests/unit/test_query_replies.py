"""Reply routing and the size bound of a LookReply (pure logic of workers/stages/query.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts import codec
from contracts.models import BBox, GarmentMatches, ImageRef, LookReply, LookRequest, Match, ProductMetadata, utc_now
from workers.runtime.errors import PoisonError
from workers.stages.query import QueryStage, fit_reply, reply_topic
from workers.runtime.records import Item, Out, Record
from workers.runtime.settings import Settings

P = "looks.replies"


def req(reply_to: str, tenant: str = "acme", **kw) -> LookRequest:
    return LookRequest(tenant=tenant, reply_to=reply_to, image=ImageRef(data=b"\xff\xd8\xff"), **kw)


@pytest.mark.parametrize("asked,goes", [
    ("looks.replies.acme", "looks.replies.acme"),
    ("looks.replies.acme.web-1", "looks.replies.acme.web-1"),
    ("looks.replies.acmeco", "looks.replies.acme"),     # another tenant's prefix-sharing topic
    ("looks.replies.globex", "looks.replies.acme"),
    ("catalog.products", "looks.replies.acme"),
    ("looks.replies", "looks.replies.acme"),
])
def test_one_function_decides_every_reply_topic(asked, goes):
    assert reply_topic(req(asked), P) == goes


@pytest.mark.parametrize("reply_to", ["catalog.products", "looks.replies.globex"])
def test_expired_and_refused_requests_never_reply_outside_the_tenant(reply_to):
    stage = QueryStage(Settings(_env_file=None), triton=None, index=None, cache=None)
    old = req(reply_to, deadline=utc_now() - timedelta(hours=1))
    (res,) = stage.process([Item(Record("looks.requests", 0, 0, None, b""), old)])
    assert [o.topic for o in res.outputs] == ["looks.replies.acme"]
    assert res.dead_letter is not None and res.dead_letter.category == "bad_reply_to"


def _reply(garments: int, matches: int, attrs: int) -> LookReply:
    meta = ProductMetadata(title="t", attributes={f"a{i:02d}": "x" * 2000 for i in range(attrs)})
    gm = [GarmentMatches(label="Dress", bbox=BBox(x0=0, y0=0, x1=5, y1=5), mask_fraction=0.5,
                         matches=[Match(product_id=f"p{j}", score=1 - j / 1000, metadata=meta, metadata_source="redis")
                                  for j in range(matches)]) for _ in range(garments)]
    return LookReply(request_id="r", tenant="acme", status="ok", garments=gm)


def test_a_reply_that_fits_is_untouched():
    r = _reply(2, 3, 1)
    assert fit_reply(r, 1 << 20) is r and not r.truncated


def test_an_oversized_reply_keeps_the_best_matches_and_says_it_was_cut():
    r = _reply(4, 100, 8)  # ~6.5 MB
    limit = 1 << 20
    cut = fit_reply(r, limit)
    assert len(codec.encode(cut)) <= limit and cut.truncated and cut.status.value == "ok"
    for g in cut.garments:
        assert 1 <= len(g.matches) < 100
        assert [m.product_id for m in g.matches] == [f"p{j}" for j in range(len(g.matches))]  # the best first


def test_attributes_go_when_one_match_per_garment_is_still_too_big():
    r = _reply(18, 2, 64)  # one match with 64 x 2000-char attributes is ~130 kB, x18 garments
    cut = fit_reply(r, 1 << 20)
    assert len(codec.encode(cut)) <= 1 << 20 and cut.truncated
    assert all(len(g.matches) == 1 and g.matches[0].metadata.attributes == {} for g in cut.garments)


def test_undeliverable_reply_becomes_an_error_reply_on_the_tenants_own_topic():
    stage = QueryStage(Settings(_env_file=None), triton=None, index=None, cache=None)
    sent = Out.of("looks.replies.acme.gone", LookReply(request_id="r-9", tenant="acme", status="ok"))
    (out,) = stage.on_undeliverable(Record("looks.requests", 0, 3, None, b""), sent, PoisonError("x"))
    assert out.topic == "looks.replies.acme"
    assert codec.decode(LookReply, out.value).status.value == "error"
