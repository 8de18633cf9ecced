"""The wire contracts: every message round-trips, every kind of bad input is refused readably."""

from __future__ import annotations

import base64
import json
import shutil
from datetime import datetime, timedelta, timezone

import jsonschema
import pytest

from contracts import codec, schema
from contracts.schema import SCHEMA_DIR
from contracts.codec import DecodeError
from contracts.models import (
    ALL_MESSAGES,
    LABELS,
    MAX_INLINE_IMAGE_BYTES,
    MAX_TOP_K,
    SCHEMA_VERSION,
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


def test_every_message_has_a_round_trip_case():
    assert set(_valid_messages()) == set(ALL_MESSAGES)


@pytest.mark.parametrize("model", ALL_MESSAGES, ids=lambda m: m.__name__)
def test_round_trip(model):
    msg = _valid_messages()[model]
    raw = codec.encode(msg)
    assert isinstance(raw, bytes)
    back = codec.decode(model, raw)
    assert type(back) is model
    assert back == msg
    assert codec.encode(back) == raw


def test_bytes_travel_as_base64():
    # pydantic's 'base64' is the URL-safe alphabet (RFC 4648 section 5); the JSON Schemas say "base64url".
    b64 = base64.urlsafe_b64encode
    msgs = _valid_messages()
    pe = json.loads(codec.encode(msgs[ProductEvent]))
    assert pe["image"] == {"bytes": b64(IMG).decode()}  # alias 'bytes', uri left out
    assert base64.urlsafe_b64decode(pe["image"]["bytes"]) == IMG
    ge = json.loads(codec.encode(msgs[GarmentsEvent]))
    assert ge["garments"][0]["crop_jpeg"] == b64(CROP).decode()
    dl = json.loads(codec.encode(msgs[DeadLetter]))
    assert dl["value"] == b64(b"\x00\xffnot json").decode()
    assert dl["key"] == b64(b"acme:p1").decode()
    assert dl["headers"] == {"h": b64(b"\x01\x02").decode()}
    schema_text = (schema.SCHEMA_DIR / "ProductEvent.json").read_text()
    assert '"format": "base64url"' in schema_text


def test_standard_base64_accepted_on_input():
    std = base64.b64encode(IMG).decode()
    assert "/" in std or "+" in std  # the standard alphabet differs from the URL-safe one here
    ev = codec.decode(ProductEvent, json.dumps(_product(image={"bytes": std})).encode())
    assert ev.image.data == IMG


def test_headers_name_the_type():
    h = dict(codec.headers_for(_valid_messages()[IndexedEvent]))
    assert h[codec.HEADER_TYPE] == b"IndexedEvent"
    assert h["content-type"] == b"application/json"


def test_nan_timing_is_replaced_so_reply_stays_encodable():
    r = LookReply(request_id="r", tenant="acme", status="ok", timings_ms={"a": float("nan"), "b": 2.0})
    assert r.timings_ms == {"a": -1.0, "b": 2.0}
    assert codec.decode(LookReply, codec.encode(r)).timings_ms == {"a": -1.0, "b": 2.0}


# --------------------------------------------------------------------------- invalid inputs

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


@pytest.mark.parametrize("model,payload,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_input_is_refused_readably(model, payload, fragments):
    msg = _refused(model, payload, *fragments)
    assert "\n" not in msg  # one readable line


@pytest.mark.parametrize("raw", [b"", None], ids=["empty bytes", "None"])
@pytest.mark.parametrize("model", ALL_MESSAGES, ids=lambda m: m.__name__)
def test_empty_record_refused(model, raw):
    with pytest.raises(DecodeError, match=f"empty record where a {model.__name__} was expected"):
        codec.decode(model, raw)


def test_decode_error_is_a_value_error_and_limits_the_list():
    with pytest.raises(ValueError) as ei:
        codec.decode(LookRequest, json.dumps({"tenant": "A", "reply_to": "", "top_k": 0, "strategy": "x",
                                              "garments": ["a", "b", "c"], "image": {}}).encode())
    msg = str(ei.value)
    assert isinstance(ei.value, DecodeError)
    shown = [loc for loc in ("tenant:", "reply_to:", "image:", "top_k:", "garments.0:", "garments.1:",
                             "garments.2:", "strategy:") if f" {loc} " in msg]
    assert shown == ["tenant:", "reply_to:", "image:", "top_k:", "garments.0:"]  # five shown ...
    assert msg.endswith("(+3 more)")  # ... and the other three counted


def test_aware_timestamps_of_any_offset_accepted():
    ev = codec.decode(ProductEvent, json.dumps(_product(occurred_at="2026-12-01T10:00:00+05:30")).encode())
    assert ev.occurred_at.utcoffset() == timedelta(hours=5, minutes=30)


def test_naive_timestamp_refused_in_python_construction_too():
    with pytest.raises(ValueError, match="timezone"):
        LookRequest(tenant="acme", reply_to="looks.replies.acme", image=ImageRef(uri="s3://b/k"),
                    deadline=datetime(2026, 12, 1, 10, 0))


def test_minor_version_accepted_major_refused():
    ev = codec.decode(ProductEvent, json.dumps(_product(schema_version="1.7")).encode())
    assert ev.schema_version == "1.7"
    assert ev.tenant == "acme" and ev.image.uri == "s3://bucket/p1.jpg"
    _refused(ProductEvent, _product(schema_version="2.0"), "unsupported schema_version '2.0'")


def test_inline_image_at_the_limit_accepted_one_byte_over_refused():
    def wire(n: int) -> bytes:  # as a producer sends it: base64 inside the JSON record
        return json.dumps(_product(image={"bytes": base64.urlsafe_b64encode(b"x" * n).decode()})).encode()

    assert codec.decode(ProductEvent, wire(MAX_INLINE_IMAGE_BYTES)).image.data == b"x" * MAX_INLINE_IMAGE_BYTES
    with pytest.raises(codec.DecodeError, match=f"over the {MAX_INLINE_IMAGE_BYTES}-byte limit"):
        codec.decode(ProductEvent, wire(MAX_INLINE_IMAGE_BYTES + 1))


@pytest.mark.parametrize("uri", ["https://cdn.example/a.jpg", "s3://bucket/a.jpg", "file:///data/a.jpg"])
def test_allowed_uri_schemes(uri):
    ev = codec.decode(ProductEvent, json.dumps(_product(image={"uri": uri})).encode())
    assert ev.image.uri == uri and ev.image.data is None


def test_delete_without_image_and_defaults():
    ev = codec.decode(ProductEvent, b'{"tenant":"acme","product_id":"p1","op":"delete"}')
    assert ev.op == "delete" and ev.image is None
    assert ev.schema_version == SCHEMA_VERSION == "1.1"
    assert ev.key == "acme:p1"
    assert len(ev.event_id) == 32


def test_tab_allowed_in_title_and_all_labels_known():
    assert ProductMetadata(title="a\tb").title == "a\tb"
    req = LookRequest(tenant="acme", reply_to="looks.replies", image=ImageRef(uri="s3://b/k"), garments=list(LABELS))
    assert req.garments == list(LABELS)


def test_price_range_equal_bounds_allowed():
    req = codec.decode(LookRequest, json.dumps(_request(filters={"price": {"min": 10, "max": 10}})).encode())
    assert (req.filters.price.min, req.filters.price.max) == (10, 10)
    with pytest.raises(codec.DecodeError, match="price.min must not exceed price.max"):
        codec.decode(LookRequest, json.dumps(_request(filters={"price": {"min": 10.01, "max": 10}})).encode())


def test_messages_are_immutable():
    ev = _valid_messages()[ProductEvent]
    with pytest.raises(Exception):
        ev.tenant = "other"
    assert ev.tenant == "acme"


def test_model_construction_refuses_bad_values_too():
    with pytest.raises(ValueError, match="bbox must have x1 > x0"):
        BBox(x0=3, y0=0, x1=3, y1=1)
    with pytest.raises(ValueError, match="exactly one"):
        ImageRef()


# --------------------------------------------------------------------------- schema drift

def test_committed_schemas_match_models():
    assert schema.drift() == []
    assert sorted(p.name for p in schema.SCHEMA_DIR.glob("*.json")) == sorted(f"{m.__name__}.json" for m in ALL_MESSAGES)


@pytest.fixture
def schema_copy(tmp_path, monkeypatch):
    d = tmp_path / "schemas"
    shutil.copytree(schema.SCHEMA_DIR, d)
    monkeypatch.setattr(schema, "SCHEMA_DIR", d)
    assert schema.drift() == []
    return d


def test_drift_detects_edited_file(schema_copy):
    p = schema_copy / "LookRequest.json"
    doc = json.loads(p.read_text())
    doc["properties"]["top_k"]["maximum"] = 1000
    p.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    assert schema.drift() == ["LookRequest.json"]
    assert schema.main(["--check"]) == 1


def test_drift_detects_removed_and_stale_files(schema_copy):
    (schema_copy / "DeadLetter.json").unlink()
    (schema_copy / "OldEvent.json").write_text("{}\n")
    assert schema.drift() == ["DeadLetter.json", "OldEvent.json"]


def test_write_repairs_drift(schema_copy):
    (schema_copy / "ProductEvent.json").write_text("{}\n")
    (schema_copy / "Stale.json").write_text("{}\n")
    assert schema.drift() == ["ProductEvent.json", "Stale.json"]
    schema.write()
    assert schema.drift() == []
    assert not (schema_copy / "Stale.json").exists()
    assert schema.main(["--check"]) == 0


# --------------------------------------------------------------------------- schema and model agree
# A third party that validates against contracts/schemas must never be dead-lettered for a rule the schema
# hides, and the schema must not refuse what the workers accept: every case above runs through both.

# Rules JSON Schema cannot state; their schema descriptions name them instead.
CROSS_FIELD = {"bbox x1 == x0", "bbox x1 < x0", "price range min > max"}
# Not JSON documents at all (or not one object): a schema validator never sees them.
NOT_JSON = {"NaN price", "infinite price", "malformed JSON", "non-UTF8 garbage", "duplicate tenant key",
            "duplicate nested key"}


def _schema_accepts(model, doc) -> bool:
    schema = json.loads((SCHEMA_DIR / f"{model.__name__}.json").read_text())
    return jsonschema.Draft202012Validator(schema).is_valid(doc)


def _model_accepts(model, raw: bytes) -> bool:
    try:
        codec.decode(model, raw)
        return True
    except DecodeError:
        return False


@pytest.mark.parametrize("case", [c for c in CASES if c[0] not in CROSS_FIELD | NOT_JSON], ids=lambda c: c[0])
def test_schema_refuses_what_the_model_refuses(case):
    _, model, payload, _ = case
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    assert not _model_accepts(model, raw)
    assert not _schema_accepts(model, json.loads(raw)), "the schema accepts a message the workers refuse"


@pytest.mark.parametrize("name", sorted(CROSS_FIELD))
def test_cross_field_rules_are_named_in_the_schema(name):
    text = " ".join(p.read_text() for p in SCHEMA_DIR.glob("*.json"))
    phrase = {"price range min > max": "min must not exceed max"}.get(name, "x1 > x0 and y1 > y0")
    assert phrase in text


VALID = [
    ("inline image at the limit", ProductEvent, _product(image={"bytes": _b64(MAX_INLINE_IMAGE_BYTES)})),
    ("inline image of one byte", ProductEvent, _product(image={"bytes": _b64(1)})),
    ("inline image 2 bytes under the limit", ProductEvent, _product(image={"bytes": _b64(MAX_INLINE_IMAGE_BYTES - 2)})),
    ("file uri", ProductEvent, _product(image={"uri": "file:///srv/images/a.jpg"})),
    ("https uri", LookRequest, _request(image={"uri": "https://cdn.example/q.jpg"})),
    ("uri with explicit null bytes", LookRequest, _request(image={"uri": "s3://b/k", "bytes": None})),
    ("delete", ProductEvent, {"tenant": "acme", "product_id": "p1", "op": "delete"}),
    ("delete with explicit null image", ProductEvent, {"tenant": "acme", "product_id": "p1", "op": "delete", "image": None}),
    ("tab in title", ProductEvent, _product(metadata={"title": "a\tb", "attributes": {"k\t": "v"}})),
    ("every label", LookRequest, _request(garments=list(LABELS))),
    ("minor version 1.7", ProductEvent, _product(schema_version="1.7")),
    ("version 1.0", ProductEvent, _product(schema_version="1.0")),
    ("offset timestamp", LookRequest, _request(deadline="2026-12-01T10:00:00.25+05:30", sent_at="2026-12-01T10:00:00Z")),
    ("integer price", ProductEvent, _product(metadata={"price": 10})),
]


@pytest.mark.parametrize("case", VALID, ids=lambda c: c[0])
def test_both_accept_boundary_cases(case):
    _, model, doc = case
    assert _model_accepts(model, json.dumps(doc).encode())
    assert _schema_accepts(model, doc)


def test_inline_image_one_byte_over_is_refused_by_both():
    doc = _product(image={"bytes": _b64(MAX_INLINE_IMAGE_BYTES + 1)})
    assert not _model_accepts(ProductEvent, json.dumps(doc).encode())
    assert not _schema_accepts(ProductEvent, doc)


@pytest.mark.parametrize("model,msg", list(_valid_messages().items()), ids=lambda x: getattr(x, "__name__", ""))
def test_every_message_the_system_writes_is_schema_valid(model, msg):
    assert _schema_accepts(model, json.loads(codec.encode(msg)))


# ------------------------------------------------------------------ 1.1: several images, the product's own garments
V10_PRODUCT = (b'{"schema_version":"1.0","event_id":"ev-1","tenant":"acme","product_id":"p1","op":"upsert",'
               b'"image":{"uri":"s3://bucket/p1.jpg"},"metadata":{"title":"Red dress"},'
               b'"occurred_at":"2024-05-01T12:30:15Z"}')
V10_INDEXED = (b'{"schema_version":"1.0","event_id":"ev-1","tenant":"acme","product_id":"p1","op":"upsert",'
               b'"status":"indexed","image_id":"img7","labels":["Dress"],"garment_ids":["g1"],"removed":0,'
               b'"latency_ms":5.0,"indexed_at":"2024-05-01T12:30:16Z"}')
V10_GARMENTS = (b'{"schema_version":"1.0","event_id":"ev-1","tenant":"acme","product_id":"p1","op":"upsert",'
                b'"image_id":"img7","image_size":[64,48],"garments":[{"label":"Dress","bbox":{"x0":0,"y0":0,"x1":9,'
                b'"y1":9},"mask_fraction":0.5,"crop_jpeg":"/9j/"}],"occurred_at":"2024-05-01T12:30:15Z",'
                b'"segmented_at":"2024-05-01T12:30:15Z"}')


def test_version_1_0_messages_still_valid():
    ev = codec.decode(ProductEvent, V10_PRODUCT)
    assert ev.schema_version == "1.0" and ev.images is None and ev.garments is None
    assert [i.uri for i in ev.all_images] == ["s3://bucket/p1.jpg"]
    ix = codec.decode(IndexedEvent, V10_INDEXED)
    assert ix.status == "indexed" and ix.found_labels == [] and ix.wanted_labels is None and ix.image_ids == []
    ge = codec.decode(GarmentsEvent, V10_GARMENTS)
    assert ge.garments[0].image_id == "" and ge.image_ids == [] and ge.wanted_labels is None


def test_version_1_1_fields_round_trip_and_are_written_as_1_1():
    ev = ProductEvent(tenant="acme", product_id="p1", images=[ImageRef(uri="s3://b/front.jpg"), ImageRef(data=IMG)],
                      garments=["Dress"], occurred_at=T0)
    assert ev.schema_version == "1.1"
    back = codec.decode(ProductEvent, codec.encode(ev))
    assert back == ev and [i.uri for i in back.all_images] == ["s3://b/front.jpg", None]
    assert back.all_images[1].data == IMG and back.garments == ["Dress"]
    ix = IndexedEvent(event_id="e", tenant="acme", product_id="p1", op="upsert", status="garment_not_found",
                      image_ids=["a", "b"], wanted_labels=["Dress"], found_labels=["Upper-clothes", "Pants"],
                      latency_ms=1.0, indexed_at=T0)
    assert codec.decode(IndexedEvent, codec.encode(ix)) == ix


@pytest.mark.parametrize("over,fragment", [
    ({"images": [{"uri": "s3://b/a.jpg"}]}, "either 'image' or 'images'"),
    ({"image": None, "images": []}, "at least 1 item"),
    ({"image": None, "images": [{"uri": f"s3://b/{i}.jpg"} for i in range(9)]}, "at most 8 items"),
    ({"garments": []}, "at least 1 item"),
    ({"garments": ["Jacket"]}, "unknown garment label 'Jacket'"),
    ({"op": "delete", "image": None, "garments": ["Dress"]}, "a delete carries no garments"),
    ({"op": "delete", "image": None, "images": [{"uri": "s3://b/a.jpg"}]}, "a delete carries no image"),
    ({"image": None, "images": [{"bytes": base64.b64encode(b"x" * (MAX_INLINE_IMAGE_BYTES // 2 + 1)).decode()}] * 2},
     "inline images total"),
])
def test_1_1_product_fields_refused_readably(over, fragment):
    _refused(ProductEvent, _product(**over), fragment)
    if fragment != "inline images total":  # the one rule beyond JSON Schema (named in its description)
        assert not _schema_accepts(ProductEvent, _product(**over)), "the schema accepts what the workers refuse"


def test_1_1_inline_total_rule_is_named_in_the_schema():
    assert "inline images total at most" in (SCHEMA_DIR / "ProductEvent.json").read_text()


@pytest.mark.parametrize("doc", [
    _product(image=None, images=[{"uri": "s3://b/front.jpg"}, {"bytes": "/9j/"}]),
    _product(image=None, images=[{"uri": f"s3://b/{i}.jpg"} for i in range(8)], garments=["Dress", "Bag"]),
    _product(garments=["Upper-clothes"]),
    {"tenant": "acme", "product_id": "p1", "op": "delete", "images": None, "garments": None},
], ids=["two images", "eight images and garments", "one image and garments", "delete with explicit nulls"])
def test_both_accept_1_1_products(doc):
    assert _model_accepts(ProductEvent, json.dumps(doc).encode())
    assert _schema_accepts(ProductEvent, doc)
