"""The store's contract, on both Milvus kinds (Milvus Lite 2.5 and a real Milvus 2.3.5 server) and a real
redis-server: replace, delete, filters, tenant isolation, delete-then-search, stale events, batching."""

import numpy as np
from storekit import delete, look, product_ids, unit, upsert, visible

from contracts.models import Filters

V1, V2, V3 = "2026-01-01T00:00:01.000000Z|e1", "2026-01-01T00:00:02.000000Z|e2", "2026-01-01T00:00:03.000000Z|e3"


def rows_of(store, tenant, pid):
    return {r["id"]: r for r in store.index.rows(f'tenant == "{tenant}" and product_id == "{pid}"',
                                                 ("id", "label", "image_id", "version"))}


def test_replace_keeps_the_new_image_and_removes_the_old_ones_rows(store):
    first = upsert("acme", "p1", "imgA", {"Upper-clothes": 1, "Pants": 2}, V1)
    second = upsert("acme", "p1", "imgB", {"Upper-clothes": 3}, V2)
    assert [a.status for a in store.writer.apply([first])] == ["indexed"]
    assert set(rows_of(store, "acme", "p1")) == {r.id for r in first.rows}
    [done] = store.writer.apply([second])
    assert (done.status, done.removed) == ("indexed", 2)
    rows = rows_of(store, "acme", "p1")
    assert set(rows) == {second.rows[0].id} and rows[second.rows[0].id]["version"] == V2
    st = store.cache.get_states([("acme", "p1")])[("acme", "p1")]
    assert (st.version, st.deleted, st.garment_ids) == (V2, False, (second.rows[0].id,))
    assert store.cache.get_many("acme", ["p1"])["p1"].title == "acme p1 imgB"
    # the old image's vectors find nothing of p1 any more; the new one finds it
    assert product_ids(look(store, "acme", {"Pants": unit(2)})) == set()
    reply = visible(store, "acme", {"Upper-clothes": unit(3)}, {"p1"})
    assert reply.garments[0].matches[0].product_id == "p1"
    assert reply.garments[0].matches[0].metadata_source == "redis"


def test_delete_removes_rows_and_leaves_a_tombstone_that_expires(store):
    store.writer.apply([upsert("acme", "p1", "imgA", {"Dress": 1}, V1)])
    [done] = store.writer.apply([delete("acme", "p1", V2)])
    assert (done.status, done.removed) == ("deleted", 1)
    assert rows_of(store, "acme", "p1") == {}
    assert store.cache.get_many("acme", ["p1"]) == {}
    ttl = store.cache.redis.ttl(store.cache.key("acme", "p1"))
    assert 0 < ttl <= store.settings.tombstone_retention_s
    # a second delete (a replay) is harmless
    assert store.writer.apply([delete("acme", "p1", V2)])[0].status == "deleted"


def test_delete_then_search_never_returns_the_product(store):
    """Searches run at Bounded consistency (a real server still serves deleted rows for ~0.2-0.5 s); the
    product states keep a deleted product out of every reply from the moment the delete returns."""
    for round_ in range(5):
        pid = f"gone{round_}"
        store.writer.apply([upsert("acme", pid, "img", {"Skirt": 100 + round_}, V1),
                            upsert("acme", f"stay{round_}", "img", {"Skirt": 200 + round_}, V1)])
        visible(store, "acme", {"Skirt": unit(100 + round_)}, {pid, f"stay{round_}"}, top_k=20)
        store.writer.apply([delete("acme", pid, V2)])
        reply = look(store, "acme", {"Skirt": unit(100 + round_)}, top_k=20)
        assert pid not in product_ids(reply)
        assert f"stay{round_}" in product_ids(reply)


def test_filters_select_exactly_the_matching_rows(store):
    md = [dict(price=10.0, brand="A", in_stock=True, category="top"),
          dict(price=50.0, brand="B", in_stock=False, category="top"),
          dict(price=None, brand="A", in_stock=True, category="shirt"),
          dict(price=90.0, brand="C", in_stock=True, category="top")]
    store.writer.apply([upsert("acme", f"p{i}", "img", {"Upper-clothes": i}, V1, **m) for i, m in enumerate(md)])
    q = unit(99)
    visible(store, "acme", {"Upper-clothes": q}, {"p0", "p1", "p2", "p3"})

    def ids(**f):
        return product_ids(look(store, "acme", {"Upper-clothes": q}, filters=Filters.model_validate(f)))

    assert ids() == {"p0", "p1", "p2", "p3"}
    assert ids(price={"max": 60}) == {"p0", "p1"}  # unknown price never matches a price bound
    assert ids(price={"min": 20, "max": 95}) == {"p1", "p3"}
    assert ids(brands=["A"]) == {"p0", "p2"}
    assert ids(in_stock=False) == {"p1"}
    assert ids(categories=["shirt"]) == {"p2"}
    assert ids(brands=["A", "C"], in_stock=True, price={"max": 100}) == {"p0", "p3"}


def test_tenants_never_see_or_delete_each_others_rows(store):
    # the same product ids and vectors in two tenants
    store.writer.apply([upsert(t, f"p{i}", "img", {"Pants": i}, V1) for t in ("alpha", "beta") for i in range(4)])
    for t in ("alpha", "beta"):
        reply = visible(store, t, {"Pants": unit(1)}, {"p0", "p1", "p2", "p3"}, top_k=10)
        assert all(m.metadata.title.startswith(t + " ") for g in reply.garments for m in g.matches)
        assert product_ids(reply) == {"p0", "p1", "p2", "p3"}
    store.writer.apply([delete("alpha", "p1", V2)])
    assert "p1" not in product_ids(look(store, "alpha", {"Pants": unit(1)}))
    assert "p1" in product_ids(look(store, "beta", {"Pants": unit(1)}))
    assert len(rows_of(store, "beta", "p1")) == 1


def test_stale_events_never_roll_a_product_back_or_bring_it_back(store):
    new = upsert("acme", "p1", "imgB", {"Dress": 2}, V2)
    old = upsert("acme", "p1", "imgA", {"Dress": 1}, V1)
    assert [a.status for a in store.writer.apply([new])] == ["indexed"]
    assert [a.status for a in store.writer.apply([old])] == ["stale"]  # a replay of an older update
    assert set(rows_of(store, "acme", "p1")) == {new.rows[0].id}
    assert store.cache.get_many("acme", ["p1"])["p1"].title == "acme p1 imgB"
    # the same event again (at-least-once redelivery) is applied again, idempotently
    assert [a.status for a in store.writer.apply([new])] == ["indexed"]
    store.writer.apply([delete("acme", "p1", V3)])
    assert [a.status for a in store.writer.apply([new, old])] == ["stale", "stale"]  # a DLQ replay after a delete
    assert rows_of(store, "acme", "p1") == {}
    assert "p1" not in product_ids(look(store, "acme", {"Dress": unit(2)}))


def test_a_batch_folds_each_products_events_in_order(store):
    a = upsert("acme", "p1", "imgA", {"Dress": 1}, V1)
    b = upsert("acme", "p1", "imgB", {"Skirt": 2}, V2)
    gone = upsert("acme", "p2", "img", {"Dress": 3}, V1)
    done = store.writer.apply([a, gone, b, delete("acme", "p2", V2), upsert("acme", "p2", "img", {"Dress": 3}, V1)])
    assert [d.status for d in done] == ["indexed", "indexed", "indexed", "deleted", "stale"]
    assert set(rows_of(store, "acme", "p1")) == {b.rows[0].id}
    assert rows_of(store, "acme", "p2") == {}


def test_known_products_are_written_without_querying_milvus(store, monkeypatch):
    """Stale rows are found from the states in Redis: Milvus is queried (Bounded, no time-tick wait) once per
    batch for the products Redis does not know, never per product, and not at all for known ones."""
    calls = []
    real = store.index.product_rows
    monkeypatch.setattr(store.index, "product_rows", lambda keys: calls.append(list(keys)) or real(keys))
    batch = [upsert("acme", f"p{i}", "imgA", {"Dress": i, "Pants": 50 + i}, V1) for i in range(10)]
    store.writer.apply(batch)
    assert len(calls) == 1 and len(calls[0]) == 10  # new products: one query for the batch
    done = store.writer.apply([upsert("acme", f"p{i}", "imgB", {"Dress": 100 + i}, V2) for i in range(10)])
    assert len(calls) == 1  # known products: none
    assert [d.removed for d in done] == [2] * 10
    assert store.index.count('tenant == "acme"') == 10


def test_product_unknown_to_redis_is_confirmed_in_milvus(store):
    """Rows written without a state (a tool, or Redis lost its data) are shown only while they exist."""
    store.writer.apply([upsert("acme", "p1", "img", {"Hat": 7}, V1)])
    visible(store, "acme", {"Hat": unit(7)}, {"p1"})
    store.cache.redis.delete(store.cache.key("acme", "p1"))
    assert product_ids(look(store, "acme", {"Hat": unit(7)})) == {"p1"}
    match = look(store, "acme", {"Hat": unit(7)}).garments[0].matches[0]
    assert (match.metadata_source, match.metadata.title) == ("milvus", "acme p1 img")  # read from the row
    store.index.delete_product("acme", "p1")  # the slow path, as a tool would
    assert product_ids(look(store, "acme", {"Hat": unit(7)})) == set()


def test_all_garments_of_a_look_are_searched_together(store):
    store.writer.apply([upsert("acme", "p1", "img", {"Upper-clothes": 1, "Pants": 2, "Left-shoe": 3}, V1),
                        upsert("acme", "p2", "img", {"Upper-clothes": 4, "Pants": 5}, V1)])
    got = store.index.search_garments("acme", [("Upper-clothes", unit(1)), ("Pants", unit(5)),
                                               ("Left-shoe", unit(3)), ("Upper-clothes", unit(4))], 1, Filters(),
                                      consistency="Strong")
    assert [[h.product_id for h in hits] for hits in got] == [["p1"], ["p2"], ["p1"], ["p2"]]
    assert np.isclose(got[0][0].score, 1.0, atol=1e-4)


def test_a_garment_gets_its_own_labels_rows_when_other_labels_are_nearer(store):
    """A garment whose nearest rows are all of the look's other labels still gets the nearest rows of its own."""
    store.writer.apply([upsert("acme", "hatA", "img", {"Hat": 1}, V1), upsert("acme", "hatB", "img2", {"Hat": 1}, V1),
                        upsert("acme", "jeans", "img", {"Pants": 50}, V1)])
    visible(store, "acme", {"Hat": unit(1)}, {"hatA", "hatB"})
    got = store.index.search_garments("acme", [("Pants", unit(1)), ("Hat", unit(1))], 1, Filters())
    assert [h.product_id for h in got[0]] == ["jeans"]
    assert [h.label for h in got[1]] == ["Hat"] and got[1][0].product_id in {"hatA", "hatB"}
