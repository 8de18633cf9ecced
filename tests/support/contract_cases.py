"""Messages and bad inputs shared by the contract tests (tests/unit/test_contracts*.py): valid messages of every
type, and the invalid-input cases every reader must refuse readably."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest

from contracts import codec
from contracts.codec import DecodeError
from contracts.models import (
    MAX_INLINE_IMAGE_BYTES,
    MAX_TOP_K,
    BBox,
    DeadLetter,
    Filters,
    Garment,
    GarmentMatches,
    GarmentsEvent,
    ImageRef,
    IndexedEvent,
    LookReply,
    LookRequest,
    Match,
    PriceRange,
    ProductEvent,
    ProductMetadata,
    RankedProduct,
    ReplyStatus,
)

T0 = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)
IMG = b"\xff\xd8\xff\xe0fake-jpeg\x00\x01\x02\xfe"
CROP = b"\xff\xd8crop\x00\xff"


def _meta() -> ProductMetadata:
    return ProductMetadata(title="Red dress\twith pockets", brand="Acme", category="dresses", price=49.5,
                           currency="EUR", url="https://shop.example/p/1", in_stock=False,
                           attributes={"colour": "red", "size": "M"})


def _valid_messages() -> dict[type, object]:
    bbox = BBox(x0=1, y0=2, x1=30, y1=40)
    match = Match(product_id="p9", score=0.875, metadata=_meta(), metadata_source="redis")
    return {
        ProductEvent: ProductEvent(event_id="ev-1", tenant="acme", product_id="p1", op="upsert",
                                   image=ImageRef(data=IMG), metadata=_meta(), occurred_at=T0),
        GarmentsEvent: GarmentsEvent(event_id="ev-1", tenant="acme", product_id="p1", op="upsert", image_id="img7",
                                     image_size=(640, 480),
                                     garments=[Garment(label="Dress", bbox=bbox, mask_fraction=0.25, crop_jpeg=CROP)],
                                     metadata=_meta(), occurred_at=T0, segmented_at=T0 + timedelta(seconds=1)),
        IndexedEvent: IndexedEvent(event_id="ev-1", tenant="acme", product_id="p1", op="upsert", status="indexed",
                                   image_id="img7", labels=["Dress", "Bag"], garment_ids=["g1", "g2"], removed=3,
                                   latency_ms=12.5, indexed_at=T0),
        LookRequest: LookRequest(request_id="r-1", tenant="acme", reply_to="looks.replies.c1",
                                 image=ImageRef(uri="s3://bucket/look.jpg"), top_k=5, garments=["Dress", "Bag"],
                                 filters=Filters(price=PriceRange(min=1, max=100), brands=["Acme"],
                                                 categories=["dresses"], in_stock=True),
                                 strategy="lowest_total_distance", deadline=T0 + timedelta(seconds=30), sent_at=T0),
        LookReply: LookReply(request_id="r-1", tenant="acme", status=ReplyStatus.partial, error="bag search failed",
                             garments=[GarmentMatches(label="Dress", bbox=bbox, mask_fraction=0.25, matches=[match])],
                             ranking=[RankedProduct(product_id="p9", score=1.0, labels=["Dress"])],
                             strategy="most_common_overall", timings_ms={"segment": 3.5}, replied_at=T0),
        DeadLetter: DeadLetter(stage="segmentation", source_topic="catalog.products", partition=2, offset=41,
                               key=b"acme:p1", value=b"\x00\xffnot json", headers={"h": b"\x01\x02"},
                               reason="invalid ProductEvent: tenant: bad", error_type="invalid_message", attempts=1,
                               event_id="ev-1", tenant="acme", first_seen_at=T0, failed_at=T0),
    }


def _product(**over) -> dict:
    d = {"tenant": "acme", "product_id": "p1", "image": {"uri": "s3://bucket/p1.jpg"}}
    d.update(over)
    return d


def _request(**over) -> dict:
    d = {"tenant": "acme", "reply_to": "looks.replies", "image": {"uri": "https://cdn.example/q.jpg"}}
    d.update(over)
    return d


def _b64(n: int) -> str:
    return base64.b64encode(b"x" * n).decode()


def _refused(model, obj, *fragments: str) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    with pytest.raises(DecodeError) as ei:
        codec.decode(model, raw)
    msg = str(ei.value)
    assert msg.startswith(f"invalid {model.__name__}: ") or msg.startswith("empty record"), msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


CASES = [
    # (id, model, payload, fragments the message must contain)
    ("unknown field", ProductEvent, _product(colour="red"), ["colour", "Extra inputs are not permitted"]),
    ("unknown nested field", ProductEvent, _product(metadata={"titel": "x"}), ["metadata.titel"]),
    ("unknown image field", ProductEvent, _product(image={"url": "https://x/y"}), ["image.url"]),
    ("tenant not a string", ProductEvent, _product(tenant=5), ["tenant"]),
    ("price is a word", ProductEvent, _product(metadata={"price": "cheap"}), ["metadata.price"]),
    ("in_stock is a list", ProductEvent, _product(metadata={"in_stock": [1]}), ["metadata.in_stock"]),
    ("bad op", ProductEvent, _product(op="merge"), ["op", "'upsert' or 'delete'"]),
    ("occurred_at garbage", ProductEvent, _product(occurred_at="yesterday"), ["occurred_at"]),
    ("image twice", ProductEvent, _product(image={"uri": "s3://b/k", "bytes": _b64(3)}), ["image", "exactly one"]),
    ("image neither", ProductEvent, _product(image={}), ["image", "exactly one"]),
    ("upsert without image", ProductEvent, {"tenant": "acme", "product_id": "p1"}, ["upsert needs an image"]),
    ("delete with image", ProductEvent, _product(op="delete"), ["delete carries no image"]),
    ("negative price", ProductEvent, _product(metadata={"price": -0.01}), ["metadata.price", "greater than or equal to 0"]),
    ("huge price", ProductEvent, _product(metadata={"price": 1e12}), ["metadata.price", "less than or equal"]),
    ("NaN price", ProductEvent, b'{"tenant":"acme","product_id":"p1","image":{"uri":"s3://b/k"},"metadata":{"price":NaN}}',
     ["metadata.price", "finite"]),
    ("infinite price", ProductEvent, b'{"tenant":"acme","product_id":"p1","image":{"uri":"s3://b/k"},"metadata":{"price":1e400}}',
     ["metadata.price", "finite"]),
    ("oversized inline image", ProductEvent, _product(image={"bytes": _b64(MAX_INLINE_IMAGE_BYTES + 1)}),
     ["image.bytes", f"{MAX_INLINE_IMAGE_BYTES + 1} bytes", "pass it by uri"]),
    ("empty bytes", ProductEvent, _product(image={"bytes": ""}), ["image.bytes", "empty"]),
    ("bytes not base64", ProductEvent, _product(image={"bytes": "!!!"}), ["image.bytes", "base64"]),
    ("http uri", ProductEvent, _product(image={"uri": "http://cdn.example/a.jpg"}), ["image.uri", "https://, s3:// or file://"]),
    ("ftp uri", ProductEvent, _product(image={"uri": "ftp://cdn.example/a.jpg"}), ["image.uri", "https://"]),
    ("schemeless uri", LookRequest, _request(image={"uri": "/etc/passwd"}), ["image.uri"]),
    ("major 2", ProductEvent, _product(schema_version="2.0"), ["schema_version", "unsupported", "major version 1"]),
    ("major 0", ProductEvent, _product(schema_version="0.9"), ["schema_version", "unsupported"]),
    ("version no minor", ProductEvent, _product(schema_version="1"), ["schema_version", "must look like"]),
    ("version v-prefix", ProductEvent, _product(schema_version="v1.0"), ["schema_version", "must look like"]),
    ("version three parts", ProductEvent, _product(schema_version="1.0.0"), ["schema_version", "must look like"]),
    ("version non-ascii digits", ProductEvent, _product(schema_version="\u0661.0"), ["schema_version", "must look like"]),
    ("version is a number", ProductEvent, _product(schema_version=1.0), ["schema_version"]),
    ("unknown garment label in request", LookRequest, _request(garments=["Dress", "Cape"]),
     ["garments.1", "unknown garment label 'Cape'"]),
    ("unknown label in indexed", IndexedEvent,
     {"event_id": "e", "tenant": "acme", "product_id": "p", "op": "upsert", "status": "indexed",
      "latency_ms": 1, "labels": ["hat"]}, ["labels.0", "unknown garment label 'hat'"]),
    ("top_k 0", LookRequest, _request(top_k=0), ["top_k", "greater than or equal to 1"]),
    ("top_k huge", LookRequest, _request(top_k=10**6), ["top_k", f"less than or equal to {MAX_TOP_K}"]),
    ("bad strategy", LookRequest, _request(strategy="best"), ["strategy"]),
    ("reply_to with space", LookRequest, _request(reply_to="looks replies"), ["reply_to"]),
    ("tenant uppercase", ProductEvent, _product(tenant="Acme"), ["tenant", "pattern"]),
    ("tenant empty", ProductEvent, _product(tenant=""), ["tenant", "at least 1 character"]),
    ("tenant too long", ProductEvent, _product(tenant="a" * 65), ["tenant", "at most 64 characters"]),
    ("tenant trailing newline", ProductEvent, _product(tenant="acme\n"), ["tenant", "pattern"]),
    ("product id with space", ProductEvent, _product(product_id="p 1"), ["product_id", "pattern"]),
    ("title newline", ProductEvent, _product(metadata={"title": "a\nb"}), ["metadata.title", "control characters"]),
    ("title NUL", ProductEvent, _product(metadata={"title": "a\x00b"}), ["metadata.title", "control characters"]),
    ("title ESC", ProductEvent, _product(metadata={"title": "\x1b[31mred"}), ["metadata.title", "control characters"]),
    ("title DEL", ProductEvent, _product(metadata={"title": "a\x7fb"}), ["metadata.title", "control characters"]),
    ("title C1 NEL", ProductEvent, _product(metadata={"title": "a\x85b"}), ["metadata.title", "control characters"]),
    ("brand control", ProductEvent, _product(metadata={"brand": "a\rb"}), ["metadata.brand", "control characters"]),
    ("title too long", ProductEvent, _product(metadata={"title": "x" * 2001}), ["metadata.title", "at most 2000"]),
    ("bad currency", ProductEvent, _product(metadata={"currency": "eur"}), ["metadata.currency"]),
    ("bbox x1 == x0", GarmentsEvent,
     {"event_id": "e", "tenant": "acme", "product_id": "p", "op": "upsert", "occurred_at": T0.isoformat(),
      "garments": [{"label": "Dress", "bbox": {"x0": 5, "y0": 0, "x1": 5, "y1": 9}, "mask_fraction": 0.5,
                    "crop_jpeg": _b64(4)}]}, ["garments.0.bbox", "x1 > x0"]),
    ("bbox x1 < x0", GarmentsEvent,
     {"event_id": "e", "tenant": "acme", "product_id": "p", "op": "upsert", "occurred_at": T0.isoformat(),
      "garments": [{"label": "Dress", "bbox": {"x0": 9, "y0": 0, "x1": 3, "y1": 9}, "mask_fraction": 0.5,
                    "crop_jpeg": _b64(4)}]}, ["garments.0.bbox", "x1 > x0"]),
    ("bbox negative", GarmentsEvent,
     {"event_id": "e", "tenant": "acme", "product_id": "p", "op": "upsert", "occurred_at": T0.isoformat(),
      "garments": [{"label": "Dress", "bbox": {"x0": -1, "y0": 0, "x1": 3, "y1": 9}, "mask_fraction": 0.5,
                    "crop_jpeg": _b64(4)}]}, ["garments.0.bbox.x0"]),
    ("mask_fraction 0", GarmentsEvent,
     {"event_id": "e", "tenant": "acme", "product_id": "p", "op": "upsert", "occurred_at": T0.isoformat(),
      "garments": [{"label": "Dress", "bbox": {"x0": 0, "y0": 0, "x1": 3, "y1": 9}, "mask_fraction": 0,
                    "crop_jpeg": _b64(4)}]}, ["garments.0.mask_fraction"]),
    ("empty crop", GarmentsEvent,
     {"event_id": "e", "tenant": "acme", "product_id": "p", "op": "upsert", "occurred_at": T0.isoformat(),
      "garments": [{"label": "Dress", "bbox": {"x0": 0, "y0": 0, "x1": 3, "y1": 9}, "mask_fraction": 0.5,
                    "crop_jpeg": ""}]}, ["garments.0.crop_jpeg"]),
    ("garments event missing occurred_at", GarmentsEvent,
     {"event_id": "e", "tenant": "acme", "product_id": "p", "op": "delete"}, ["occurred_at", "Field required"]),
    ("price range min > max", LookRequest, _request(filters={"price": {"min": 50, "max": 10}}),
     ["filters.price", "price.min must not exceed price.max"]),
    ("negative price filter", LookRequest, _request(filters={"price": {"min": -1}}), ["filters.price.min"]),
    ("reply bad status", LookReply, {"request_id": "r", "tenant": "acme", "status": "fine"}, ["status"]),
    ("dead letter missing value", DeadLetter,
     {"stage": "s", "source_topic": "t", "partition": 0, "offset": 1, "reason": "r", "error_type": "e",
      "attempts": 1, "first_seen_at": T0.isoformat()}, ["value", "Field required"]),
    ("malformed JSON", ProductEvent, b'{"tenant": "acme", ', ["<root>", "Invalid JSON"]),
    ("JSON array", ProductEvent, b"[1, 2]", ["<root>"]),
    ("non-UTF8 garbage", ProductEvent, b"\xff\xfe\xfa\x00\x80garbage", ["<root>", "Invalid JSON"]),
    ("empty object", ProductEvent, b"{}", ["tenant", "Field required"]),
    # strict JSON types: a third party validating against the schema sends exactly these types
    ("top_k as a string", LookRequest, _request(top_k="7"), ["top_k", "valid integer"]),
    ("in_stock as a word", ProductEvent, _product(metadata={"in_stock": "yes"}), ["metadata.in_stock", "valid boolean"]),
    ("price as a string", ProductEvent, _product(metadata={"price": "9.5"}), ["metadata.price", "valid number"]),
    ("version leading zero", ProductEvent, _product(schema_version="01.0"), ["schema_version", "must look like"]),
    ("minor leading zero", ProductEvent, _product(schema_version="1.01"), ["schema_version", "must look like"]),
    # timestamps carry a timezone: a naive one would crash the stage comparing it with its clock
    ("naive occurred_at", ProductEvent, _product(occurred_at="2026-12-01T10:00:00"), ["occurred_at", "timezone"]),
    ("naive deadline", LookRequest, _request(deadline="2026-12-01T10:00:00"), ["deadline", "timezone"]),
    ("naive sent_at", LookRequest, _request(sent_at="2026-12-01T10:00:00.5"), ["sent_at", "timezone"]),
    ("naive garments occurred_at", GarmentsEvent,
     {"event_id": "e", "tenant": "acme", "product_id": "p", "op": "delete", "occurred_at": "2026-12-01T10:00:00"},
     ["occurred_at", "timezone"]),
    ("duplicate tenant key", ProductEvent,
     b'{"tenant":"acme","tenant":"globex","product_id":"p1","image":{"uri":"s3://b/k"}}', ["duplicate JSON key 'tenant'"]),
    ("duplicate nested key", LookRequest,
     b'{"tenant":"acme","reply_to":"looks.replies.acme","image":{"uri":"s3://b/k","uri":"s3://b/j"}}',
     ["duplicate JSON key 'uri'"]),
]
