"""The building blocks of the messages: schema version, size limits, the garment labels, ids and clocks, and the
constrained field types (identifiers, tenants, texts, labels, versions, timestamps, topic names) each with its
JSON Schema twin (contracts/models.py builds the messages from them)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated
from uuid import uuid4

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    StringConstraints,
)


SCHEMA_MAJOR = 1
# 1.1: LookReply.truncated; timestamps must carry a timezone; strict JSON types; ProductEvent.images (several
# images per product) and ProductEvent.garments (the product's own garment labels), with the GarmentsEvent,
# Garment and IndexedEvent fields that carry them through. Every 1.0 message stays valid.
SCHEMA_VERSION = f"{SCHEMA_MAJOR}.1"

# Inline images travel inside Kafka records; producers and consumers raise their size limits to
# MAX_RECORD_BYTES (below). Larger catalog images must be passed by `uri`.
MAX_INLINE_IMAGE_BYTES = 8 * 1024 * 1024
# The largest Kafka record any client or worker sends or accepts: an inline image plus its envelope.
MAX_RECORD_BYTES = 16 * 1024 * 1024
MAX_CROP_BYTES = 512 * 1024
# A product may be shot several times (front, back, flat, on model): each image is indexed.
MAX_PRODUCT_IMAGES = 8


def _base64_max_chars(n: int) -> dict:
    """JSON Schema for base64 text of at most ``n`` bytes: 4*ceil(n/3) characters, padded as n requires."""
    chars = 4 * -(-n // 3)
    pad = (3 - n % 3) % 3  # '=' signs a text of exactly ``chars`` characters must end with to stay <= n
    if pad == 0:
        return {"maxLength": chars}
    return {"anyOf": [{"maxLength": chars - 4}, {"maxLength": chars, "pattern": "=" * pad + "$"}]}

# The 'mattmdjaga/segformer_b2_clothes' label map (index = label id of the segformer model output).
LABELS: tuple[str, ...] = (
    "Background", "Hat", "Hair", "Sunglasses", "Upper-clothes", "Skirt", "Pants", "Dress", "Belt",
    "Left-shoe", "Right-shoe", "Face", "Left-leg", "Right-leg", "Left-arm", "Right-arm", "Bag", "Scarf",
)
LABEL_IDS: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
# Not garments: never indexed, never searched (configurable in workers.runtime.settings).
DEFAULT_NON_GARMENT_LABELS: tuple[str, ...] = (
    "Background", "Hair", "Face", "Left-leg", "Right-leg", "Left-arm", "Right-arm",
)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid4().hex


_VERSION_NUMBER = r"(?:0|[1-9][0-9]{0,5})"  # ASCII digits, no leading zero ("01.0" is not a version)
_CONTROL_FREE = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$"  # the JSON Schema twin of _no_control_chars
_AWARE_DATETIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"


def _check_version(v: str) -> str:
    m = re.fullmatch(rf"({_VERSION_NUMBER})\.({_VERSION_NUMBER})", v)  # \d would also match e.g. "١"
    if not m:
        raise ValueError(f"schema_version must look like '{SCHEMA_MAJOR}.0', got {v[:40]!r}")
    if int(m.group(1)) != SCHEMA_MAJOR:
        raise ValueError(
            f"unsupported schema_version {v[:40]!r}: this reader understands major version {SCHEMA_MAJOR}"
        )
    return v


def _no_control_chars(v: str) -> str:
    if any((ord(c) < 32 or 0x7F <= ord(c) <= 0x9F) and c != "\t" for c in v):  # C0, DEL and C1
        raise ValueError("control characters are not allowed")
    return v


def _check_label(v: str) -> str:
    if v not in LABEL_IDS:
        raise ValueError(f"unknown garment label {v!r}; known labels: {', '.join(LABELS)}")
    return v


# Python's re (jsonschema) lets "$" match before a final newline; this end is the end in every engine.
_END = r"$(?![\s\S])"
_BASE64 = r"^[A-Za-z0-9+/_-]*={0,2}" + _END


def _schema(**extra):
    """Extra JSON Schema keywords for a rule a validator function enforces (schema and model agree)."""
    return Field(json_schema_extra=extra)


Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$"),
    _schema(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*" + _END),
]
TenantId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$"),
                     _schema(pattern=r"^[a-z0-9][a-z0-9_-]*" + _END)]
Text = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_no_control_chars), _schema(pattern=_CONTROL_FREE)]
ShortText = Annotated[str, StringConstraints(max_length=128), AfterValidator(_no_control_chars), _schema(pattern=_CONTROL_FREE)]
Label = Annotated[str, AfterValidator(_check_label), _schema(enum=list(LABELS))]
Version = Annotated[str, AfterValidator(_check_version),
                    _schema(pattern=rf"^{SCHEMA_MAJOR}\.{_VERSION_NUMBER}$")]
# Naive timestamps are refused: they cannot be compared with the aware clock of a worker.
Timestamp = Annotated[AwareDatetime, _schema(pattern=_AWARE_DATETIME)]
# A topic name a client may ask replies on (checked against the allowed prefix by the query worker).
TopicName = Annotated[str, StringConstraints(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$"),
                      _schema(pattern=r"^[A-Za-z0-9._-]+" + _END)]
