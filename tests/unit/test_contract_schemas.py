"""The committed JSON Schemas: no drift from the models, schema and model agree on every case, the 1.1 fields."""

from __future__ import annotations

import base64
import json
import shutil

import jsonschema
import pytest
from support.contract_cases import CASES, IMG, T0, _b64, _product, _refused, _request, _valid_messages

from contracts import codec, schema
from contracts.schema import SCHEMA_DIR
from contracts.codec import DecodeError
from contracts.models import (
    ALL_MESSAGES,
    LABELS,
    MAX_INLINE_IMAGE_BYTES,
    GarmentsEvent,
    ImageRef,
    IndexedEvent,
    LookRequest,
    ProductEvent,
)


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
