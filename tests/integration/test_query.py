"""Shop the look end to end: query worker on real services, answered through the LookClient SDK."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from datetime import timedelta

import pytest

from contracts import codec, topics
from contracts.client import CatalogPublisher, LookClient
from contracts.models import DeadLetter, LookRequest, utc_now
from workers.local.ingest import OutcomeWatcher, ingest, read_catalog

from support.pipeline import new_pipeline
from support.waits import settled, wait_for

N = 20
GLOBEX_COPY = "globex-copy-of-acme-0"


@pytest.fixture(scope="module")
def pipeline(services):
    p = new_pipeline(services)
    yield p
    p.stop_all()


@pytest.fixture(scope="module")
def indexed(pipeline, sample_catalog):
    """acme and globex with 20 DISTINCT products each (other ids, other images), and the three workers running."""
    root, products = sample_catalog
    procs = [pipeline.start_worker(k) for k in ("segmentation", "embedding", "query")]
    for p in procs:
        pipeline.wait_ready(p, timeout=90)
    entries = read_catalog(root)
    # globex also holds acme's first image under an id of its own: identical vectors in both tenants
    copy = dataclasses.replace(entries[0], product_id=GLOBEX_COPY)
    reports = {"acme": ingest(pipeline.settings, entries[:N], "acme", timeout=300),
               "globex": ingest(pipeline.settings, [*entries[N:2 * N], copy], "globex", timeout=300)}
    assert reports["acme"].indexed == N and reports["globex"].indexed == N + 1
    assert not reports["acme"].missing and not reports["globex"].missing
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


def _expected_ranking(garments, strategy):
    """Each strategy worked out from its definition (README / workers/stages/ranking.py docstring), not by rank().

    Ties: best score of the product over all garments (higher first), then product id."""
    best, seen_in = {}, {}
    for g in garments:
        for m in g.matches:
            best[m.product_id] = max(best.get(m.product_id, -1.0), m.score)
            seen_in.setdefault(m.product_id, []).append(g.label)
    if strategy == "first_place_votes":  # one vote per garment, for its first match; no vote: not ranked
        score = {}
        for g in garments:
            if g.matches:
                score[g.matches[0].product_id] = score.get(g.matches[0].product_id, 0) + 1
        key = lambda p: (-score[p], -best[p], p)  # noqa: E731
    elif strategy == "lowest_total_distance":  # sum of (1 - score); a garment it did not match counts 2.0
        score = {p: round(sum(next((1 - m.score for m in g.matches if m.product_id == p), 2.0) for g in garments), 6)
                 for p in best}
        key = lambda p: (score[p], -best[p], p)  # noqa: E731
    else:  # most_common_overall: in how many garments' lists it appears
        score = {p: len(ls) for p, ls in seen_in.items()}
        key = lambda p: (-score[p], -best[p], p)  # noqa: E731
    return [(p, pytest.approx(score[p], abs=1e-6), sorted(set(seen_in[p]))) for p in sorted(score, key=key)]


def test_ranking_strategies(pipeline, indexed):
    products, outcomes = indexed
    look = next(p for p in products if len(outcomes[p.product_id].labels) >= 2)
    with client(pipeline) as c:
        replies = {s: c.ask(look.path.read_bytes(), top_k=3, strategy=s, timeout=60)
                   for s in ("first_place_votes", "lowest_total_distance", "most_common_overall")}
    for s, r in replies.items():
        assert r.strategy == s and r.ranking[0].product_id == look.product_id
        assert len(r.garments) >= 2 and len(r.ranking) >= (1 if s == "first_place_votes" else 2), s
        assert [(x.product_id, x.score, x.labels) for x in r.ranking] == _expected_ranking(r.garments, s), s
    # the strategies disagree on this look (otherwise the test could not tell them apart)
    orders = {s: tuple(x.product_id for x in r.ranking) for s, r in replies.items()}
    assert len(set(orders.values())) >= 2, orders


def test_tenants_never_see_each_other(pipeline, indexed, sample_catalog):
    """Distinct catalogs: an answer from the wrong tenant would name products the asking tenant does not have."""
    products, _ = indexed
    globex_products = sample_catalog[1][N:2 * N]
    acme_ids = {p.product_id for p in products}
    globex_ids = {p.product_id for p in globex_products} | {GLOBEX_COPY}
    assert acme_ids and globex_ids and not acme_ids & globex_ids
    for tenant, image, own, other in (("globex", products[0], globex_ids, acme_ids),  # an acme image, asked by globex
                                      ("acme", globex_products[0], acme_ids, globex_ids)):
        with client(pipeline, tenant=tenant) as c:
            reply = c.ask(image.path.read_bytes(), top_k=50, timeout=60)
        assert reply.tenant == tenant and reply.status.value == "ok" and reply.garments, reply.error
        got = {m.product_id for g in reply.garments for m in g.matches} | {r.product_id for r in reply.ranking}
        assert got and got <= own and not got & other, (tenant, sorted(got & other))
    # the same image in both tenants: each tenant gets its own copy (score 1.0), never the other's
    for tenant, want in (("acme", products[0].product_id), ("globex", GLOBEX_COPY)):
        with client(pipeline, tenant=tenant) as c:
            reply = c.ask(products[0].path.read_bytes(), top_k=3, timeout=60)
        assert reply.ranking[0].product_id == want, tenant
        for g in reply.garments:
            assert g.matches[0].product_id == want and g.matches[0].score == pytest.approx(1.0, abs=1e-3)
            assert {m.product_id for m in g.matches} <= (acme_ids if tenant == "acme" else globex_ids)


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


def test_a_look_after_a_completed_delete_never_returns_the_product(pipeline, indexed, collector_factory):
    """As a user sees it: once the delete's IndexedEvent is out, no reply names the product; looks sent while
    the delete is under way each get exactly one ok reply (with or without it)."""
    products, _ = indexed
    s = pipeline.settings
    doomed, image = "doomed-1", products[2].path.read_bytes()
    watcher = OutcomeWatcher(s)
    try:
        with CatalogPublisher(s.bootstrap_servers, topic=s.topic_products) as pub, client(pipeline) as c:
            replies_col = collector_factory(s, [c.reply_to])
            up = pub.upsert("acme", doomed, image=image, metadata={"title": "doomed", "price": 1})
            pub.flush()
            watcher.wait({up.event_id}, 120)
            assert watcher.outcomes[up.event_id].status == "indexed"
            before = c.ask(image, top_k=3, timeout=60)
            assert doomed in {m.product_id for g in before.garments for m in g.matches}  # it is findable
            in_flight = [c.send(image, top_k=3, timeout=120) for _ in range(4)]
            gone = pub.delete("acme", doomed)
            pub.flush()
            in_flight += [c.send(image, top_k=3, timeout=120) for _ in range(2)]
            watcher.wait({gone.event_id}, 120)
            out = watcher.outcomes[gone.event_id]
            assert out.status == "deleted" and out.removed == len(watcher.outcomes[up.event_id].labels)
            after = [c.ask(image, top_k=50, timeout=60) for _ in range(3)]  # sent after the delete completed
            for r in after:
                assert r.status.value == "ok" and r.garments
                named = {m.product_id for g in r.garments for m in g.matches} | {x.product_id for x in r.ranking}
                assert doomed not in named and products[2].product_id in named
            during = [c.wait(f, 125) for f in in_flight]
            assert all(r.status.value == "ok" for r in during), [r.error for r in during]
            asked = {before.request_id, *(f.request_id for f in in_flight), *(r.request_id for r in after)}
            settled(lambda: len(replies_col.of(c.reply_to)))
            keys = ((r.key or b"").decode() for r in replies_col.of(c.reply_to))  # the topic is the tenant's
            per_request = Counter(k for k in keys if k in asked)
            assert per_request == {rid: 1 for rid in asked}  # exactly one reply per request
    finally:
        watcher.close()


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
    # Redis came back EMPTY (no persistence): answers fall back to the Milvus fields, still right
    with client(pipeline) as c:
        reply = c.ask(products[1].path.read_bytes(), timeout=60)
    assert reply.status.value == "ok"
    top = reply.garments[0].matches[0]
    assert top.product_id == products[1].product_id and top.metadata_source == "milvus"
    assert top.metadata.brand == products[1].metadata["brand"]
    # a new upsert of the product writes its metadata again: served from Redis from then on
    s = pipeline.settings
    watcher = OutcomeWatcher(s)
    try:
        with CatalogPublisher(s.bootstrap_servers, topic=s.topic_products) as pub:
            ev = pub.upsert("acme", products[1].product_id, image=products[1].path.read_bytes(),
                            metadata=products[1].metadata)
        watcher.wait({ev.event_id}, 120)
        assert watcher.outcomes[ev.event_id].status == "indexed"
    finally:
        watcher.close()
    with client(pipeline) as c:
        top = c.ask(products[1].path.read_bytes(), timeout=60).garments[0].matches[0]
    assert top.product_id == products[1].product_id and top.metadata_source == "redis"
    assert top.metadata.brand == products[1].metadata["brand"]


def test_twenty_concurrent_clients_get_their_own_replies(pipeline, indexed, collector_factory):
    products, _ = indexed
    results = {}
    errors = []
    with client(pipeline) as c:
        replies_col = collector_factory(pipeline.settings, [c.reply_to])
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
        settled(lambda: len(replies_col.of(c.reply_to)))
        keys = ((r.key or b"").decode() for r in replies_col.of(c.reply_to))
        per_request = Counter(k for k in keys if k.startswith("req-"))
    assert not errors
    assert len(results) == 20
    for i, (rid, top, expected) in results.items():
        assert rid == f"req-{i}" and top == expected
    assert per_request == {f"req-{i}": 1 for i in range(20)}  # exactly one reply per request, every record counted
