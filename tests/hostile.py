"""A corpus of hostile inputs for the ingest and query workers, each with the outcome it must have.

``ingest_cases`` builds records for the products topic, ``request_cases`` records for the look-requests
topic. Every case is one Kafka record (key, value, headers) plus its expected outcome:

- ``indexed``      an IndexedEvent with status "indexed" whose labels are exactly ``labels``
- ``no_garments``  an IndexedEvent with status "no_garments" (decoded fine, nothing to index)
- ``deleted``      an IndexedEvent with status "deleted" and ``removed`` rows
- ``dlq``          a dead letter whose reason contains ``reason``
- ``reply_ok`` / ``reply_error`` / ``reply_expired``  a LookReply with that status (error containing
                   ``reason``); ``dlq_too`` adds a dead letter on the requests DLQ
- ``dlq_only``     a dead letter and no reply (nowhere safe to answer)

Images follow the test model's colour rule (modeltools/colour_probe.py): a saturated red block on a grey
background is "Upper-clothes", blue is "Pants". Inputs outside what the colour probe was fitted on (grey
scenes, 1-bit images, slivers that letterboxing shrinks to a few pixels) still get ONE deterministic answer
from the declared seed-0 tiny model, and the case pins that exact label set (re-pin deliberately, from
the printed table, when the declared test model changes).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from contracts.models import MAX_INLINE_IMAGE_BYTES, SCHEMA_VERSION
from support.hostile_images import (
    HTML, PDF, RED, SVG, animated, cmyk_jpeg, corrupt, encode, exif_garbage, exif_rotated, jpeg, jpeg_forged_size, palette_png, png, png_flat_bomb, png_forged_size, png_rgb48, rgba_png, scene, webp, webp_forged_size,
)

CASE_HEADER = "hostile-case"


@dataclass
class Case:
    kind: str
    value: bytes
    expect: str
    reason: str = ""  # substring of the DLQ reason / the reply error
    labels: tuple[str, ...] = ()
    event_id: str | None = None  # ingest: the IndexedEvent / dead letter event id; query: the request id
    removed: int | None = None
    image_size: tuple[int, int] | None = None  # (w, h) the segmentation must report (EXIF applied)
    count: int = 1  # IndexedEvents expected under this event id
    dlq_too: bool = False
    reply_topic: str | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    def __post_init__(self):
        self.headers = [(CASE_HEADER, self.kind.encode()), *self.headers]


# ----------------------------------------------------------------------------- records
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def product(tenant: str, product_id: str, image: bytes | None = None, uri: str | None = None, event_id=None,
            **fields) -> dict:
    d = {"schema_version": SCHEMA_VERSION, "event_id": event_id or uuid.uuid4().hex, "tenant": tenant,
         "product_id": product_id, "op": "upsert", "occurred_at": "2025-01-01T00:00:00Z"}
    if image is not None:
        d["image"] = {"bytes": _b64(image)}
    if uri is not None:
        d["image"] = {"uri": uri}
    d.update(fields)
    return d


def _case(kind: str, d: dict | bytes, expect: str, reason: str = "", **kw) -> Case:
    if isinstance(d, dict):
        kw.setdefault("event_id", d.get("event_id"))
        value = json.dumps(d, ensure_ascii=kw.pop("ascii", True)).encode()
    else:
        value = d
    return Case(kind, value, expect, reason, **kw)


def ingest_cases(tenant: str, image_root: Path | None = None) -> list[Case]:
    """The products-topic corpus. ``image_root`` (the workers' LOOKSTREAM_IMAGE_ROOT) enables file:// cases."""
    T = tenant

    def up(kind, image, expect, reason="", uri=None, **kw):
        fields = kw.pop("fields", {})
        return _case(kind, product(T, f"h-{kind}", image, uri=uri, **fields), expect, reason, **kw)

    UC = ("Upper-clothes",)
    cases = [
        up("good_jpeg", jpeg(), "indexed", labels=UC),
        # --- broken files
        up("truncated_jpeg", jpeg()[:400], "dlq", "truncated"),
        up("corrupt_jpeg_header", corrupt(jpeg(), 20, 40), "dlq", "corrupt"),
        up("truncated_png", png()[:-40], "dlq", "corrupt or truncated"),
        up("corrupt_png_idat", corrupt(png(), 60, 24), "dlq", "corrupt or truncated"),
        up("truncated_webp", webp()[:60], "dlq", "corrupt or truncated"),
        up("corrupt_webp", corrupt(webp(), 30, 24), "dlq", "corrupt"),
        up("png_bad_magic", b"\x89PNX\r\n\x1a\n" + png()[8:], "dlq", "not a recognised image"),
        # --- decompression bombs: huge declared sizes, refused before decoding
        up("jpeg_declared_65535x65535", jpeg_forged_size(65535, 65535), "dlq", "pixel limit"),
        up("png_declared_100000x100000", png_forged_size(100000, 100000), "dlq", "pixel limit"),
        up("webp_declared_16384x16384", webp_forged_size(), "dlq", "pixel limit"),
        up("png_declared_2e9x1", png_forged_size(2_000_000_000, 1), "dlq", "pixel limit"),
        up("png_flat_bomb_5000x5000", png_flat_bomb(5000), "no_garments"),  # 25 MP: inside the limits
        # --- sizes and shapes
        up("one_by_one", png(scene((1, 1), block=None)), "dlq", "at least 16 pixels"),
        up("15x4000", png(scene((15, 4000))), "dlq", "at least 16 pixels"),
        up("wide_10000x16", png(scene((10000, 16))), "indexed", labels=UC),
        up("tall_16x10000", png(scene((16, 10000))), "indexed", labels=("Dress", "Pants")),
        up("min_16x16_all_red", png(Image.new("RGB", (16, 16), RED)), "indexed", labels=UC),
        # --- modes
        up("cmyk_jpeg", cmyk_jpeg(), "indexed", labels=UC),
        up("grey_jpeg", jpeg(scene(mode="L")), "indexed", labels=("Bag", "Pants", "Skirt")),
        up("grey16_png", png(scene(mode="L").convert("I;16")), "no_garments"),
        up("rgb48_png", png_rgb48(), "indexed", labels=UC),
        up("palette_png", palette_png(False), "indexed", labels=UC),
        up("palette_trns_png", palette_png(True), "indexed", labels=UC),
        up("rgba_png", rgba_png(), "indexed", labels=UC),
        up("la_png", png(scene(mode="LA")), "indexed", labels=("Bag", "Pants", "Skirt")),
        up("bilevel_png", png(scene(mode="1")), "indexed",  # garments as objects: its stray Skirt blob is dropped
           labels=("Bag", "Dress", "Hat", "Pants", "Upper-clothes")),
        up("animated_gif", animated("GIF"), "dlq", "format GIF not allowed"),
        up("animated_webp_first_frame", animated("WEBP"), "indexed", labels=UC),
        up("apng_first_frame", animated("PNG"), "indexed", labels=UC),
        up("tiff", encode(scene(), "TIFF"), "dlq", "format TIFF not allowed"),
        up("bmp", encode(scene(), "BMP"), "dlq", "format BMP not allowed"),
        up("exif_rotated", exif_rotated(), "indexed", labels=UC, image_size=(128, 64)),
        up("exif_garbage", exif_garbage(), "indexed", labels=UC, image_size=(96, 128)),
        # --- not images at all
        up("svg_as_image", SVG, "dlq", "not a recognised image"),
        up("html_as_image", HTML, "dlq", "not a recognised image"),
        up("pdf_as_image", PDF, "dlq", "not a recognised image"),
        up("jpeg_magic_then_html", b"\xff\xd8\xff\xe0" + HTML, "dlq", "corrupt"),
        # --- envelopes
        _case("empty_image_bytes", _with(product(T, "h-empty"), image={"bytes": ""}), "dlq",
              "inline image bytes are empty"),
        _case("base64_garbage", _with(product(T, "h-b64"), image={"bytes": "!!not*base64$$"}), "dlq",
              "valid base64"),
        _case("oversized_inline_10mib", product(T, "h-big", os.urandom(10 * 1024 * 1024)), "dlq",
              f"over the {MAX_INLINE_IMAGE_BYTES}-byte limit"),
        _case("malformed_json", b'{"tenant": "acme", "product_id": ', "dlq", "Invalid JSON"),
        _case("not_utf8", b'{"tenant": "acme", "product_id": "\xff\xfe"}', "dlq", "Invalid JSON"),
        _case("json_array", b"[1, 2, 3]", "dlq", "Input should be an object"),
        _case("deeply_nested_json", b'{"metadata": {"attributes": ' + b"[" * 50000 + b"]" * 50000 + b"}}",
              "dlq", "recursion limit"),
        _case("empty_record", b"", "dlq", "empty record"),
        _case("wrong_schema_look_request", {"request_id": "r-1", "tenant": T, "reply_to": "looks.replies." + T,
                                            "image": {"uri": "https://x.example/a.jpg"}}, "dlq",
              "Extra inputs are not permitted", event_id="r-1"),
        _case("unknown_field", _with(product(T, "h-unknown", jpeg()), priority="high"), "dlq",
              "Extra inputs are not permitted"),
        _case("schema_version_2", _with(product(T, "h-v2", jpeg()), schema_version="2.0"), "dlq",
              "unsupported schema_version '2.0'"),
        _case("schema_version_1_9", _with(product(T, "h-v19", jpeg()), schema_version="1.9"), "indexed",
              labels=UC),
        _case("schema_version_arabic_digit", _with(product(T, "h-v-ar", jpeg()), schema_version="\u0661.0"),
              "dlq", "schema_version must look like"),
        _case("schema_version_5000_digits", _with(product(T, "h-v-long", jpeg()), schema_version="1" * 5000 + ".0"),
              "dlq", "schema_version must look like"),
        _case("missing_tenant", _without(product(T, "h-notenant", jpeg()), "tenant"), "dlq",
              "tenant: Field required"),
        _case("tenant_injection", product('acme" or tenant != "', "h-inj", jpeg()), "dlq", "tenant: String should"),
        _case("upsert_without_image", product(T, "h-noimg"), "dlq", "an upsert needs an image"),
        _case("delete_with_image", _with(product(T, "h-delimg", jpeg()), op="delete"), "dlq",
              "a delete carries no image"),
        _case("uri_and_bytes", _with(product(T, "h-both", jpeg()), image={"bytes": _b64(jpeg()),
                                                                          "uri": "https://x.example/a.jpg"}),
              "dlq", "exactly one"),
        # --- metadata
        up("unicode_metadata", jpeg(), "indexed", labels=UC, ascii=False, fields={"metadata": {
            "title": "Robe d'été 👗 夏のドレス שמלה \u200d\u202e", "brand": "Ünïcødé", "attributes": {"色": "赤"}}}),
        up("nul_in_title", jpeg(), "dlq", "control characters", fields={"metadata": {"title": "a\x00b"}}),
        up("c1_control_in_brand", jpeg(), "dlq", "control characters", fields={"metadata": {"brand": "a\x85b"}}),
        up("control_char_in_attribute_key", jpeg(), "dlq", "control characters",
           fields={"metadata": {"attributes": {"k\x1b[31m": "v"}}}),
        _case("lone_surrogate_title", json.dumps(product(T, "h-sur", jpeg())).encode().replace(
            b'"occurred_at"', b'"metadata": {"title": "\\ud800"}, "occurred_at"'), "dlq", "Invalid JSON"),
        up("title_2001_chars", jpeg(), "dlq", "at most 2000 characters", fields={"metadata": {"title": "x" * 2001}}),
        up("price_nan", jpeg(), "dlq", "valid number", fields={"metadata": {"price": "NaN"}}),
        up("price_negative", jpeg(), "dlq", "greater than or equal to 0", fields={"metadata": {"price": -1}}),
        up("price_huge", jpeg(), "dlq", "less than or equal to 1000000000", fields={"metadata": {"price": 1e308}}),
        _case("price_1e400", json.dumps(product(T, "h-inf", jpeg())).encode().replace(
            b'"occurred_at"', b'"metadata": {"price": 1e400}, "occurred_at"'), "dlq", "finite number"),
        up("price_bignum_5000_digits", None, "dlq", "Invalid JSON"),  # value replaced below
        up("product_id_with_dots_and_slashes", jpeg(), "indexed", labels=UC),  # product_id replaced below
        # --- ops
        _case("delete_unknown_product", _with(_without(product(T, "h-never-existed"), "image"), op="delete"),
              "deleted", removed=0),
    ]
    by_kind = {c.kind: c for c in cases}
    big = by_kind["price_bignum_5000_digits"]
    big.value = json.dumps(product(T, "h-bignum", jpeg(), event_id=big.event_id)).encode().replace(
        b'"occurred_at"', b'"metadata": {"price": 1' + b"0" * 5000 + b'}, "occurred_at"')
    pid = by_kind["product_id_with_dots_and_slashes"]
    d = json.loads(pid.value)
    d["product_id"] = "a/../../b.c:d@e"
    pid.value = json.dumps(d).encode()
    # the same event twice: both processed, one set of rows
    dup = product(T, "h-duplicate", jpeg(), event_id="dup-" + uuid.uuid4().hex[:8])
    cases.append(_case("duplicate_event_id", dup, "indexed", labels=UC, count=2))
    cases.append(Case("duplicate_event_id#2", json.dumps(dup).encode(), "same_as_previous", event_id=dup["event_id"]))
    # remote URIs: refused by policy before any connection (the workers' allow-list names these hosts)
    cases += [
        up("uri_http", None, "dlq", "image uri must use https://", uri="http://127.0.0.1/a.jpg"),
        up("uri_metadata_ip", None, "dlq", "cloud metadata address", uri="https://169.254.169.254/latest/meta-data/"),
        up("uri_private_ip", None, "dlq", "private address", uri="https://10.0.0.1/a.jpg"),
        up("uri_localhost", None, "dlq", "loopback address", uri="https://localhost:1/a.jpg"),
        up("uri_unlisted_host", None, "dlq", "not on the allow-list", uri="https://evil.example/a.jpg"),
        up("uri_credentials", None, "dlq", "carries credentials", uri="https://u:p@10.0.0.1/a.jpg"),
        up("uri_s3_not_configured", None, "dlq", "s3:// images are not enabled", uri="s3://bucket/a.jpg"),
        up("uri_ftp", None, "dlq", "image uri must use https://", uri="ftp://127.0.0.1/a.jpg"),
    ]
    if image_root is not None:
        root = Path(image_root)
        root.mkdir(parents=True, exist_ok=True)
        (root / "good.jpg").write_bytes(jpeg())
        (root / "escape.jpg").unlink(missing_ok=True)
        (root / "escape.jpg").symlink_to("/etc/hostname")
        fifo = root / "fifo.jpg"
        if not fifo.exists():
            os.mkfifo(fifo)
        cases += [
            up("file_ok", None, "indexed", labels=UC, uri=f"file://{root}/good.jpg"),
            up("file_dotdot_escape", None, "dlq", "outside the allowed root", uri=f"file://{root}/../../etc/passwd"),
            up("file_symlink_escape", None, "dlq", "outside the allowed root", uri=f"file://{root}/escape.jpg"),
            up("file_with_host", None, "dlq", "with a host is not allowed", uri=f"file://evil.example{root}/good.jpg"),
            up("file_missing", None, "dlq", "not found", uri=f"file://{root}/nope.jpg"),
            up("file_is_directory", None, "dlq", "is a directory", uri=f"file://{root}"),
            up("file_fifo", None, "dlq", "not a regular file", uri=f"file://{root}/fifo.jpg"),
        ]
    return cases


def request_cases(tenant: str, reply_to: str, internal_topic: str, good_image: bytes) -> list[Case]:
    """The look-requests corpus. Replies go to ``reply_to`` (a topic of the tenant's own)."""
    own = reply_to.rsplit(".", 1)[0] if reply_to.count(".") > 2 else reply_to

    def req(kind, expect, reason="", image=None, **fields):
        rid = f"{kind}-{uuid.uuid4().hex[:8]}"
        d = {"schema_version": SCHEMA_VERSION, "request_id": rid, "tenant": tenant, "reply_to": reply_to,
             "image": {"bytes": _b64(good_image if image is None else image)}}
        d.update(fields)
        return d, rid

    def case(kind, expect, reason="", dlq_too=False, reply_topic=None, image=None, drop=(), **fields):
        d, rid = req(kind, expect, reason, image, **fields)
        for k in drop:
            d.pop(k)
        return Case(kind, json.dumps(d).encode(), expect, reason, event_id=rid, dlq_too=dlq_too,
                    reply_topic=reply_topic or reply_to)

    return [
        case("req_top_k_0", "reply_error", "top_k", dlq_too=True, top_k=0),
        case("req_top_k_1e6", "reply_error", "top_k", dlq_too=True, top_k=10**6),
        case("req_unknown_label", "reply_error", "unknown garment label 'Cape'", dlq_too=True, garments=["Cape"]),
        case("req_nan_price_filter", "reply_error", "valid number", dlq_too=True,
             filters={"price": {"max": "NaN"}}),
        case("req_min_over_max", "reply_error", "price.min must not exceed price.max", dlq_too=True,
             filters={"price": {"min": 10, "max": 1}}),
        case("req_unknown_strategy", "reply_error", "strategy", dlq_too=True, strategy="random"),
        case("req_schema_version_2", "reply_error", "unsupported schema_version", dlq_too=True, schema_version="2.0"),
        case("req_reply_to_internal_topic", "reply_error", "not a reply topic of tenant", dlq_too=True,
             reply_to=internal_topic, reply_topic=own),
        case("req_reply_to_other_tenant", "reply_error", "not a reply topic of tenant", dlq_too=True,
             reply_to="looks.replies.globex", reply_topic=own),
        case("req_invalid_and_internal_reply_to", "dlq_only", "top_k", reply_to=internal_topic, top_k=0),
        case("req_corrupt_image", "reply_error", "bad image", dlq_too=True, image=jpeg()[:300]),
        case("req_svg_image", "reply_error", "not a recognised image", dlq_too=True, image=SVG),
        case("req_bomb_image", "reply_error", "pixel limit", dlq_too=True, image=png_forged_size(100000, 100000)),
        _uri_case(tenant, reply_to, "req_uri_metadata_ip", "https://169.254.169.254/latest/meta-data/",
                  "cloud metadata address"),
        case("req_grey_image_no_garments", "reply_error", "no garments found", image=jpeg(scene(block=None))),
        case("req_garments_filter_absent", "reply_error", "no garments found among Scarf", garments=["Scarf"]),
        case("req_expired_deadline", "reply_expired", "deadline", deadline="2000-01-01T00:00:00Z"),
        Case("req_malformed_json", b'{"request_id": "x", "tenant": ', "dlq_only", "Invalid JSON"),
        case("req_missing_tenant", "dlq_only", "tenant: Field required", drop=("tenant",)),
    ]


def _uri_case(tenant, reply_to, kind, uri, reason) -> Case:
    rid = f"{kind}-{uuid.uuid4().hex[:8]}"
    d = {"schema_version": SCHEMA_VERSION, "request_id": rid, "tenant": tenant, "reply_to": reply_to,
         "image": {"uri": uri}}
    return Case(kind, json.dumps(d).encode(), "reply_error", reason, event_id=rid, dlq_too=True,
                reply_topic=reply_to)


def _with(d: dict, **kw) -> dict:
    return {**d, **kw}


def _without(d: dict, *keys) -> dict:
    return {k: v for k, v in d.items() if k not in keys}
