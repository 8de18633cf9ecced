"""The wire contracts: every message round-trips, every kind of bad input is refused readably."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta

import pytest
from support.contract_cases import CASES, CROP, IMG, _product, _refused, _request, _valid_messages

from contracts import codec, schema
from contracts.codec import DecodeError
from contracts.models import (
    ALL_MESSAGES,
    LABELS,
    MAX_INLINE_IMAGE_BYTES,
    SCHEMA_VERSION,
    BBox,
    DeadLetter,
    GarmentsEvent,
    ImageRef,
    IndexedEvent,
    LookReply,
    LookRequest,
    ProductEvent,
    ProductMetadata,
)


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
