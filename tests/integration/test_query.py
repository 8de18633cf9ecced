"""Shop the look end to end: query worker on real services, answered through the LookClient SDK."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

from contracts import codec, topics
from contracts.client import LookClient
from contracts.models import DeadLetter, LookRequest, utc_now
from workers.ingest import ingest, read_catalog

from conftest import new_pipeline, wait_for

N = 20


@pytest.fixture(scope="module")
def pipeline(services):
    p = new_pipeline(services)
    yield p
    p.stop_all()


@pytest.fixture(scope="module")
def indexed(pipeline, sample_catalog):
    """Two tenants with the same 20 products indexed, and the three workers running."""
    root, products = sample_catalog
    procs = [pipeline.start_worker(k) for k in ("segmentation", "embedding", "query")]
    for p in procs:
        pipeline.wait_ready(p, timeout=90)
    entries = read_catalog(root)[:N]
    reports = {t: ingest(pipeline.settings, entries, t, timeout=300) for t in ("acme", "globex")}
    for r in reports.values():
        assert r.indexed == N and not r.missing
    outcomes = {o.product_id: o for o in reports["acme"].outcomes.values()}
    return products[:N], outcomes


def client(pipeline, tenant="acme", **kw):
    s = pipeline.settings
    return LookClient(s.bootstrap_servers, tenant=tenant, request_topic=s.topic_look_requests, **kw)


def test_a_catalog_image_finds_itself_for_every_garment(pipeline, indexed):
    products, outcomes = indexed
    with client(pipeline) as c:
        for p in products[:6]:
            reply = c.ask(p.path.read_bytes(), top_k=3, timeout=60)
            assert reply.status.value == "ok", reply.error
            assert sorted(g.label for g in reply.garments) == sorted(outcomes[p.product_id].labels)
            for g in reply.garments:
                assert 1 <= len(g.matches) <= 3
                top = g.matches[0]
                assert top.product_id == p.product_id, (p.product_id, g.label, [m.product_id for m in g.matches])
                assert top.score == pytest.approx(1.0, abs=1e-3)  # the same crop gives the same vector
                assert top.metadata_source == "redis" and top.metadata.brand == p.metadata["brand"]
                assert [m.score for m in g.matches] == sorted((m.score for m in g.matches), reverse=True)
            assert reply.ranking[0].product_id == p.product_id  # won every garment's first place
            assert {"segment", "embed", "search", "enrich", "total"} <= set(reply.timings_ms)


def test_top_k_and_garment_restriction(pipeline, indexed):
    products, outcomes = indexed
    look = next(p for p in products if len(outcomes[p.product_id].labels) >= 2)
    label = outcomes[look.product_id].labels[0]
    same_label = [pid for pid, o in outcomes.items() if label in o.labels]
    with client(pipeline) as c:
        reply = c.ask(look.path.read_bytes(), top_k=50, timeout=60)
        g = next(g for g in reply.garments if g.label == label)
        assert sorted(m.product_id for m in g.matches) == sorted(same_label)  # every product with that garment
        reply = c.ask(look.path.read_bytes(), top_k=1, garments=[label], timeout=60)
        assert [g.label for g in reply.garments] == [label]
        assert [m.product_id for m in reply.garments[0].matches] == [look.product_id]
        reply = c.ask(look.path.read_bytes(), garments=["Scarf"], timeout=60)
        assert reply.status.value == "error" and "no garments found among Scarf" in reply.error


def test_filters_return_only_matching_products(pipeline, indexed):
    products, outcomes = indexed
    meta = {p.product_id: p.metadata for p in products}
    look = next(p for p in products if "Upper-clothes" in outcomes[p.product_id].labels)
    tops = [pid for pid, o in outcomes.items() if "Upper-clothes" in o.labels]
    cases = {
        "price": ({"price": {"min": 50, "max": 150}}, lambda m: 50 <= m["price"] <= 150),
        "brand": ({"brands": ["Contoso", "Adatum"]}, lambda m: m["brand"] in ("Contoso", "Adatum")),
        "in_stock": ({"in_stock": False}, lambda m: not m["in_stock"]),
        "category": ({"categories": ["tops"]}, lambda m: m["category"] == "tops"),
    }
    with client(pipeline) as c:
        for name, (filters, keep) in cases.items():
            reply = c.ask(look.path.read_bytes(), top_k=50, garments=["Upper-clothes"], filters=filters, timeout=60)
            got = sorted(m.product_id for g in reply.garments for m in g.matches)
            want = sorted(pid for pid in tops if keep(meta[pid]))
            assert want, f"test data has no product for filter {name}"
            assert got == want, name


def test_ranking_strategies(pipeline, indexed):
    products, outcomes = indexed
    look = next(p for p in products if len(outcomes[p.product_id].labels) >= 2)
    with client(pipeline) as c:
        replies = {s: c.ask(look.path.read_bytes(), top_k=3, strategy=s, timeout=60)
                   for s in ("first_place_votes", "lowest_total_distance", "most_common_overall")}
    for s, r in replies.items():
        assert r.strategy == s and r.ranking[0].product_id == look.product_id
    from workers.ranking import rank

    g = replies["most_common_overall"].garments
    for s, r in replies.items():
        assert [x.product_id for x in r.ranking] == [x.product_id for x in rank(r.garments, s)]
    counts = {}
    for gm in g:
        for m in gm.matches:
            counts[m.product_id] = counts.get(m.product_id, 0) + 1
    assert [x.score for x in replies["most_common_overall"].ranking] == sorted(counts.values(), reverse=True)


def test_tenants_never_see_each_other(pipeline, indexed):
    products, _ = indexed
    with client(pipeline, tenant="globex") as c:
        reply = c.ask(products[0].path.read_bytes(), top_k=50, timeout=60)
    assert reply.tenant == "globex" and reply.garments
    from workers.store import GarmentIndex

    with GarmentIndex(pipeline.settings) as index:
        rows = index.rows('tenant == "globex"', ("product_id",))
    assert {m.product_id for g in reply.garments for m in g.matches} <= {r["product_id"] for r in rows}
    # the same ids exist in both tenants; a globex reply must come from globex rows, which the filter proves:
    from workers.store import filter_expression
    from contracts.models import Filters

    assert filter_expression("globex", "Pants", Filters()).startswith('tenant == "globex"')


def test_expired_bad_image_and_forbidden_reply_topic(pipeline, indexed, collector_factory):
    products, _ = indexed
    s = pipeline.settings
    dlq = collector_factory(s, [topics.dlq(s.topic_look_requests)])
    with client(pipeline) as c:
        expired = LookRequest(tenant="acme", reply_to=c.reply_to, image={"bytes": products[0].path.read_bytes()},
                              deadline=utc_now() - timedelta(seconds=1))
        r = c.wait(c.send_request(expired), 60)
        assert r.status.value == "expired" and "deadline" in r.error
        r = c.ask(b"\x89PNG\r\n\x1a\n broken", timeout=60)
        assert r.status.value == "error" and r.error.startswith("bad image")
        # asking for replies on another tenant's topic: refused, answered on the requester's own topic
        evil = LookRequest(tenant="acme", reply_to="looks.replies.globex", image={"bytes": products[0].path.read_bytes()})
        r = c.wait(c.send_request(evil), 60)
        assert r.status.value == "error" and "not a reply topic of tenant 'acme'" in r.error
        # an invalid request that still names its reply topic gets an error reply
        raw = json.dumps({"request_id": "bad-1", "tenant": "acme", "reply_to": c.reply_to, "top_k": 0,
                          "image": {"bytes": "AAAA"}}).encode()
        fut = c._waiting.setdefault("bad-1", __import__("concurrent.futures").futures.Future())
        fut.request_id = "bad-1"
        c.producer.send(s.topic_look_requests, key=b"bad-1", value=raw)
        c.producer.flush()
        r = c.wait(fut, 60)
        assert r.status.value == "error" and "top_k" in r.error
    letters = wait_for(lambda: len(dlq.of(topics.dlq(s.topic_look_requests))) >= 3 and dlq.of(topics.dlq(s.topic_look_requests)),
                       30, "3 dead letters")
    kinds = sorted(codec.decode(DeadLetter, r.value).error_type for r in letters)
    assert kinds == ["bad_image", "bad_reply_to", "invalid_message"]


def test_redis_down_answers_from_milvus_fields(pipeline, indexed):
    products, _ = indexed
    redis_proc = pipeline.services.services["redis"]
    redis_proc.proc.stop()
    try:
        with client(pipeline) as c:
            reply = c.ask(products[1].path.read_bytes(), timeout=60)
        assert reply.status.value == "ok"
        top = reply.garments[0].matches[0]
        assert top.metadata_source == "milvus"
        assert top.metadata.brand == products[1].metadata["brand"]
        assert top.metadata.price == pytest.approx(products[1].metadata["price"], abs=0.01)
    finally:
        redis_proc.start()


def test_twenty_concurrent_clients_get_their_own_replies(pipeline, indexed):
    products, _ = indexed
    results = {}
    errors = []
    with client(pipeline) as c:
        def one(i):
            try:
                p = products[i % len(products)]
                r = c.ask(p.path.read_bytes(), top_k=1, timeout=120, request_id=f"req-{i}")
                results[i] = (r.request_id, r.ranking[0].product_id if r.ranking else None, p.product_id)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert len(results) == 20
    for i, (rid, top, expected) in results.items():
        assert rid == f"req-{i}" and top == expected
