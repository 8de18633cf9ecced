"""Garment rows as Milvus stores them, search hits, and the ids and versions that make writes idempotent."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from contracts.models import Filters, ProductMetadata

NO_PRICE = -1.0  # Milvus Lite has no nullable scalars; a negative price means "unknown"


def garment_id(tenant: str, product_id: str, image_id: str, label: str) -> str:
    """Deterministic row id: a replay of the same event upserts the same row."""
    return hashlib.sha256(f"{tenant}\x00{product_id}\x00{image_id}\x00{label}".encode()).hexdigest()[:40]


def image_id_of(data: bytes) -> str:
    """Content hash of the image: the same picture re-sent gives the same garment rows."""
    return hashlib.sha256(data).hexdigest()[:16]


def event_version(occurred_at: datetime, event_id: str) -> str:
    """A product version that sorts as strings: UTC event time (microseconds), then the event id."""
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=timezone.utc)
    return f"{occurred_at.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}|{event_id}"


def q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _clip(s: str, limit: int) -> str:
    b = s.encode()
    return s if len(b) <= limit else b[:limit].decode(errors="ignore")


@dataclass(frozen=True)
class GarmentRow:
    id: str
    tenant: str
    product_id: str
    image_id: str
    label: str
    bbox: list[int]
    metadata: ProductMetadata
    embedding: np.ndarray
    version: str = ""

    def to_milvus(self) -> dict[str, Any]:
        md = self.metadata
        return {
            "id": self.id, "tenant": self.tenant, "product_id": self.product_id, "image_id": self.image_id,
            "label": self.label, "bbox": [int(x) for x in self.bbox],
            "title": _clip(md.title, 1000), "brand": _clip(md.brand, 500), "category": _clip(md.category, 500),
            "price": float(md.price) if md.price is not None else NO_PRICE, "currency": md.currency or "",
            "url": _clip(md.url, 2000), "in_stock": bool(md.in_stock), "version": self.version,
            "embedding": np.asarray(self.embedding, dtype=np.float32).tolist(),
        }


@dataclass(frozen=True)
class Hit:
    product_id: str
    label: str
    score: float
    fields: dict[str, Any]

    @property
    def id(self) -> str:
        return self.fields.get("id", "")

    @property
    def version(self) -> str:
        return self.fields.get("version", "")

    def metadata(self) -> ProductMetadata:
        f = self.fields
        price = f.get("price")
        return ProductMetadata(
            title=f.get("title", ""), brand=f.get("brand", ""), category=f.get("category", ""),
            price=None if price is None or price < 0 else round(float(price), 2), currency=f.get("currency") or None,
            url=f.get("url", ""), in_stock=bool(f.get("in_stock", True)),
        )



def filter_expression(tenant: str, label: str, f: Filters) -> str:
    parts = [f"tenant == {q(tenant)}", f"label == {q(label)}"]
    if f.price is not None:
        if f.price.min is not None:
            parts.append(f"price >= {float(f.price.min)!r}")
        if f.price.max is not None:
            parts.append(f"price >= 0 and price <= {float(f.price.max)!r}")
    if f.brands:
        parts.append(f"brand in [{', '.join(q(b) for b in f.brands)}]")
    if f.categories:
        parts.append(f"category in [{', '.join(q(c) for c in f.categories)}]")
    if f.in_stock is not None:
        parts.append(f"in_stock == {str(f.in_stock).lower()}")
    return " and ".join(parts)
