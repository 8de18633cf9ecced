"""Tenant isolation fuzz: several tenants share one collection; random searches and filters never cross."""

import random
import uuid

import numpy as np

from contracts.models import Filters, ProductMetadata
from workers.store import GarmentIndex, GarmentRow, garment_id

TENANTS = ["alpha", "beta", "gamma"]
LABELS = ["Upper-clothes", "Pants", "Dress"]
BRANDS = ["Northwind", "Contoso", "Fabrikam"]


def test_random_searches_never_return_another_tenants_rows(services):
    rng = random.Random(5)
    s = services.settings(milvus_collection=f"iso_{uuid.uuid4().hex[:8]}")
    index = GarmentIndex(s)
    by_tenant = {}
    # the same product ids in every tenant, so an id alone could not tell them apart
    for tenant in TENANTS:
        for i in range(30):
            label = LABELS[i % 3]
            vec = np.random.default_rng(rng.randrange(1 << 30)).standard_normal(2048).astype(np.float32)
            md = ProductMetadata(title=f"{tenant} {i}", brand=rng.choice(BRANDS), category=label.lower(),
                                 price=round(rng.uniform(5, 200), 2), in_stock=rng.random() < 0.7)
            row = GarmentRow(garment_id(tenant, f"p{i}", "img", label), tenant, f"p{i}", "img", label,
                             [0, 0, 10, 10], md, vec / np.linalg.norm(vec))
            index.replace_product(tenant, f"p{i}", [row])
            by_tenant.setdefault(tenant, {})[f"p{i}"] = md
    searches = 0
    for _ in range(60):
        tenant = rng.choice(TENANTS)
        label = rng.choice(LABELS)
        f = {}
        if rng.random() < 0.5:
            lo = rng.uniform(0, 150)
            f["price"] = {"min": lo, "max": lo + rng.uniform(10, 100)}
        if rng.random() < 0.4:
            f["brands"] = rng.sample(BRANDS, rng.randint(1, 2))
        if rng.random() < 0.3:
            f["in_stock"] = rng.random() < 0.5
        filters = Filters.model_validate(f)
        q = np.random.default_rng(rng.randrange(1 << 30)).standard_normal((1, 2048)).astype(np.float32)
        hits = index.search(tenant, label, q / np.linalg.norm(q), 100, filters)[0]
        searches += 1
        for h in hits:
            assert h.fields["tenant"] == tenant  # never another tenant's row
            assert h.fields["title"].startswith(tenant + " ")
            md = by_tenant[tenant][h.product_id]
            assert h.label == label
            if filters.price:
                assert filters.price.min <= md.price <= filters.price.max
            if filters.brands:
                assert md.brand in filters.brands
            if filters.in_stock is not None:
                assert md.in_stock == filters.in_stock
        # and nothing the tenant owns that matches was left out (top_k 100 > rows per label)
        expected = {pid for pid, md in by_tenant[tenant].items()
                    if int(pid[1:]) % 3 == LABELS.index(label)
                    and (not filters.price or filters.price.min <= md.price <= filters.price.max)
                    and (not filters.brands or md.brand in filters.brands)
                    and (filters.in_stock is None or md.in_stock == filters.in_stock)}
        assert {h.product_id for h in hits} == expected
    assert searches == 60
    # deletes are tenant-scoped too: deleting alpha's p0 leaves beta's p0
    assert index.delete_product("alpha", "p0") == 1
    assert index.count('tenant == "beta" and product_id == "p0"') == 1
    index.close()
