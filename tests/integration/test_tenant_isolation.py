"""Tenant isolation fuzz: several tenants share one collection; random searches and filters never cross.

Every tenant holds the SAME product ids with the SAME vectors, so only the tenant filter can tell their
rows apart, and top_k is below the rows a tenant has, so a search that leaked another tenant's rows
would have to push the tenant's own (equally close) rows out of the answer.
"""

import random
import uuid

import numpy as np

from contracts.models import Filters, ProductMetadata
from workers.adapters.milvus_index import GarmentIndex
from workers.adapters.garment_rows import GarmentRow, garment_id

TENANTS = ["alpha", "beta", "gamma"]
LABELS = ["Upper-clothes", "Pants", "Dress"]
BRANDS = ["Northwind", "Contoso", "Fabrikam"]
PER_TENANT = 30  # 10 rows per label and tenant
TOP_K = 4  # below the rows of one label in one tenant (10)


def test_random_searches_never_return_another_tenants_rows(services):
    rng = random.Random(5)
    s = services.settings(milvus_collection=f"iso_{uuid.uuid4().hex[:8]}")
    index = GarmentIndex(s)
    dim = index.embedder.dim  # the served embedder's width, from Triton's model config
    vecs = {}
    for i in range(PER_TENANT):  # one vector per product id, shared by every tenant
        v = np.random.default_rng(1000 + i).standard_normal(dim).astype(np.float32)
        vecs[f"p{i}"] = v / np.linalg.norm(v)
    by_tenant = {}
    for tenant in TENANTS:
        for i in range(PER_TENANT):
            label = LABELS[i % 3]
            md = ProductMetadata(title=f"{tenant} {i}", brand=rng.choice(BRANDS), category=label.lower(),
                                 price=round(rng.uniform(5, 200), 2), in_stock=rng.random() < 0.7)
            row = GarmentRow(garment_id(tenant, f"p{i}", "img", label), tenant, f"p{i}", "img", label,
                             [0, 0, 10, 10], md, vecs[f"p{i}"])
            index.replace_product(tenant, f"p{i}", [row])
            by_tenant.setdefault(tenant, {})[f"p{i}"] = md
    assert index.count("") == len(TENANTS) * PER_TENANT
    searches = truncated = 0
    for _ in range(60):
        tenant = rng.choice(TENANTS)
        label = rng.choice(LABELS)
        f = {}
        if rng.random() < 0.4:
            lo = rng.uniform(0, 120)
            f["price"] = {"min": lo, "max": lo + rng.uniform(40, 120)}
        if rng.random() < 0.3:
            f["brands"] = rng.sample(BRANDS, 2)
        if rng.random() < 0.2:
            f["in_stock"] = True
        filters = Filters.model_validate(f)
        q = np.random.default_rng(rng.randrange(1 << 30)).standard_normal((1, dim)).astype(np.float32)
        q /= np.linalg.norm(q)
        hits = index.search(tenant, label, q, TOP_K, filters)[0]
        searches += 1
        for h in hits:
            assert h.fields["tenant"] == tenant  # never another tenant's row
            assert h.fields["title"].startswith(tenant + " ")
        # the answer is exactly the tenant's own top_k among its matching rows (exact FLAT search, IP)
        matching = [pid for pid, md in by_tenant[tenant].items()
                    if int(pid[1:]) % 3 == LABELS.index(label)
                    and (not filters.price or filters.price.min <= md.price <= filters.price.max)
                    and (not filters.brands or md.brand in filters.brands)
                    and (filters.in_stock is None or md.in_stock == filters.in_stock)]
        want = sorted(matching, key=lambda pid: -float(vecs[pid] @ q[0]))[:TOP_K]
        truncated += len(matching) > TOP_K
        assert [h.product_id for h in hits] == want, (tenant, label, f)
    assert searches == 60 and truncated >= 20  # most searches had more matching rows than top_k
    # deletes are tenant-scoped too, read back: alpha's p0 is gone, beta's and gamma's p0 stay
    assert index.delete_product("alpha", "p0") == 1
    assert index.count('tenant == "alpha" and product_id == "p0"') == 0
    assert index.count('tenant == "beta" and product_id == "p0"') == 1
    assert index.count('tenant == "gamma" and product_id == "p0"') == 1
    assert index.count("") == len(TENANTS) * PER_TENANT - 1
    probe = vecs["p0"][None, :]
    assert "p0" not in [h.product_id for h in index.search("alpha", LABELS[0], probe, TOP_K, Filters())[0]]
    top = index.search("beta", LABELS[0], probe, TOP_K, Filters())[0][0]
    assert (top.product_id, top.fields["tenant"]) == ("p0", "beta")
    index.close()
