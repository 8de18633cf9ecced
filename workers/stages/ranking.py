"""Ranking a whole look from per-garment matches: the seed's three strategies.

- first_place_votes: products ordered by how many garments they matched first (ties: best score).
- lowest_total_distance: products ordered by the sum over garments of their distance (1 - score);
  a garment a product did not match counts the worst distance (2.0 for cosine).
- most_common_overall: products ordered by in how many garments' top-k lists they appear.
"""

from __future__ import annotations

from collections import defaultdict

from contracts.models import GarmentMatches, RankedProduct

MISSING_DISTANCE = 2.0


def best_per_product(hits: list, k: int) -> list:
    """The first (best) hit of each product, at most ``k``: a product indexed from several images (front, back,
    flat...) is listed once per garment. ``hits`` are ordered best first; the query stage searches again with
    room for ``MAX_PRODUCT_IMAGES`` per product when a first page holds fewer than k live products."""
    seen: set[str] = set()
    out = []
    for h in hits:
        if h.product_id not in seen:
            seen.add(h.product_id)
            out.append(h)
            if len(out) == k:
                break
    return out


def rank(garments: list[GarmentMatches], strategy: str, limit: int | None = None) -> list[RankedProduct]:
    labels: dict[str, list[str]] = defaultdict(list)
    best: dict[str, float] = defaultdict(lambda: -1.0)
    for g in garments:
        for mt in g.matches:
            labels[mt.product_id].append(g.label)
            best[mt.product_id] = max(best[mt.product_id], mt.score)
    if strategy == "first_place_votes":
        votes: dict[str, float] = defaultdict(float)
        for g in garments:
            if g.matches:
                votes[g.matches[0].product_id] += 1
        scored = {p: votes[p] for p in votes}
        order = sorted(scored, key=lambda p: (-scored[p], -best[p], p))
    elif strategy == "lowest_total_distance":
        scored = {}
        for p in labels:
            total = 0.0
            for g in garments:
                s = next((mt.score for mt in g.matches if mt.product_id == p), None)
                total += (1.0 - s) if s is not None else MISSING_DISTANCE
            scored[p] = round(total, 6)
        order = sorted(scored, key=lambda p: (scored[p], -best[p], p))
    elif strategy == "most_common_overall":
        scored = {p: float(len(ls)) for p, ls in labels.items()}
        order = sorted(scored, key=lambda p: (-scored[p], -best[p], p))
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    ranked = [RankedProduct(product_id=p, score=scored[p], labels=sorted(set(labels[p]))) for p in order]
    return ranked[:limit] if limit else ranked
