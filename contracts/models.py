"""Every message that crosses a topic, as strict pydantic v2 models.

Rules shared by all messages:
- ``schema_version`` is "MAJOR.MINOR". A reader accepts any minor of its own major and rejects
  other majors (the runtime sends those to the dead-letter topic).
- Unknown fields are errors (``extra="forbid"``): a typo in a producer must not be silently dropped.
- ``bytes`` fields travel as base64 in JSON.
- Every timestamp carries its timezone (a naive one is refused: comparing it would crash a stage).
- On the wire (``contracts.codec.decode``) types are strict: ``"top_k": "7"`` or ``"in_stock": "yes"`` are
  refused. The committed JSON Schemas state the same rules (a test walks every rule through both), except
  the two cross-field rules JSON Schema cannot express, which their descriptions name.
"""

from __future__ import annotations

import math
import re
from enum import Enum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from .fields import (  # noqa: F401  (the public ones are part of contracts.models' API)
    Identifier, LABELS, Label, MAX_CROP_BYTES, MAX_INLINE_IMAGE_BYTES, MAX_PRODUCT_IMAGES, MAX_RECORD_BYTES, SCHEMA_VERSION, ShortText, TenantId, Text, Timestamp, TopicName, Version, _BASE64, _CONTROL_FREE, _END, _base64_max_chars, _no_control_chars, _schema, new_id, utc_now,
    DEFAULT_NON_GARMENT_LABELS, LABEL_IDS, SCHEMA_MAJOR,
)


class Message(BaseModel):
    """Base of every message: strict, immutable, base64 bytes in JSON."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        ser_json_bytes="base64",
        val_json_bytes="base64",
        str_strip_whitespace=False,
    )

    schema_version: Version = SCHEMA_VERSION


class ImageRef(BaseModel):
    """An image, by reference (``uri``) or inline (``bytes``): exactly one of them."""

    uri: Annotated[str, StringConstraints(min_length=1, max_length=2048), _schema(pattern=r"^(https|s3|file)://")] | None = None
    data: Annotated[bytes, _schema(minLength=1, pattern=_BASE64, **_base64_max_chars(MAX_INLINE_IMAGE_BYTES))] | None = Field(
        default=None, alias="bytes")

    model_config = ConfigDict(
        extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64", populate_by_name=True,
        json_schema_extra={"oneOf": [{"required": ["uri"], "properties": {"uri": {"type": "string"}}},
                                     {"required": ["bytes"], "properties": {"bytes": {"type": "string"}}}]},
    )

    @field_validator("uri")
    @classmethod
    def _uri_scheme(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^(https|s3|file)://", v):
            raise ValueError("image uri must use https://, s3:// or file://")
        return v

    @field_validator("data")
    @classmethod
    def _bytes_size(cls, v: bytes | None) -> bytes | None:
        if v is not None:
            if len(v) == 0:
                raise ValueError("inline image bytes are empty")
            if len(v) > MAX_INLINE_IMAGE_BYTES:
                raise ValueError(
                    f"inline image is {len(v)} bytes, over the {MAX_INLINE_IMAGE_BYTES}-byte limit; pass it by uri"
                )
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageRef:
        if (self.uri is None) == (self.data is None):
            raise ValueError("image needs exactly one of 'uri' or 'bytes'")
        return self


class ProductMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    title: Text = ""
    brand: ShortText = ""
    category: ShortText = ""
    price: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)] | None = None
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), _schema(pattern=r"^[A-Z]{3}" + _END)] | None = None
    url: Annotated[str, StringConstraints(max_length=2048)] = ""
    in_stock: bool = True
    attributes: dict[Annotated[str, StringConstraints(max_length=64), AfterValidator(_no_control_chars),
                               _schema(pattern=_CONTROL_FREE)], Text] = Field(
        default_factory=dict, max_length=64
    )


class ProductEvent(Message):
    """A retailer's catalog change. Kafka key = ``tenant:product_id`` keeps one product's events ordered
    (a record whose key names another product is refused).

    An upsert carries one ``image`` or a list of ``images`` (up to MAX_PRODUCT_IMAGES shots of the same product).
    ``garments`` names the garment labels the product IS (a dress SKU shot on a model who also wears a bag:
    ``["Dress"]``): only those are indexed. Without it every garment found is indexed (an outfit product).
    Rule beyond JSON Schema: inline images total at most MAX_INLINE_IMAGE_BYTES (8 MiB) bytes.
    """

    model_config = ConfigDict(json_schema_extra={
        "if": {"required": ["op"], "properties": {"op": {"const": "delete"}}},
        "then": {"properties": {"image": {"type": "null"}, "images": {"type": "null"}, "garments": {"type": "null"}}},
        "else": {
            "anyOf": [{"required": ["image"], "properties": {"image": {"type": "object"}}},
                      {"required": ["images"], "properties": {"images": {"type": "array"}}}],
            "not": {"required": ["image", "images"],
                    "properties": {"image": {"type": "object"}, "images": {"type": "array"}}},
        },
    })

    event_id: Identifier = Field(default_factory=new_id)
    tenant: TenantId
    product_id: Identifier
    op: Literal["upsert", "delete"] = "upsert"
    image: ImageRef | None = None
    images: list[ImageRef] | None = Field(default=None, min_length=1, max_length=MAX_PRODUCT_IMAGES)
    garments: list[Label] | None = Field(default=None, min_length=1, max_length=len(LABELS))
    metadata: ProductMetadata = Field(default_factory=ProductMetadata)
    occurred_at: Timestamp = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _image_for_upsert(self) -> ProductEvent:
        if self.image is not None and self.images is not None:
            raise ValueError("give either 'image' or 'images', not both")
        if self.op == "upsert" and not self.all_images:
            raise ValueError("an upsert needs an image")
        if self.op == "delete" and self.all_images:
            raise ValueError("a delete carries no image")
        if self.op == "delete" and self.garments is not None:
            raise ValueError("a delete carries no garments")
        inline = sum(len(i.data) for i in self.all_images if i.data is not None)
        if inline > MAX_INLINE_IMAGE_BYTES:  # the whole record must fit the Kafka record limit
            raise ValueError(f"inline images total {inline} bytes, over the {MAX_INLINE_IMAGE_BYTES}-byte limit; "
                             "pass some by uri")
        return self

    @property
    def all_images(self) -> list[ImageRef]:
        """The product's images in order (``image`` or ``images``)."""
        return list(self.images) if self.images is not None else ([self.image] if self.image is not None else [])

    @property
    def key(self) -> str:
        return product_key(self.tenant, self.product_id)


def product_key(tenant: str, product_id: str) -> str:
    return f"{tenant}:{product_id}"


class BBox(BaseModel):
    """A box in original-image pixels, inclusive-exclusive: [x0, x1) x [y0, y1). Rule beyond JSON Schema:
    x1 > x0 and y1 > y0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x0: Annotated[int, Field(ge=0)]
    y0: Annotated[int, Field(ge=0)]
    x1: Annotated[int, Field(ge=1)]
    y1: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _ordered(self) -> BBox:
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError("bbox must have x1 > x0 and y1 > y0")
        return self


class Garment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    label: Label
    bbox: BBox
    mask_fraction: Annotated[float, Field(gt=0, le=1)]
    crop_jpeg: Annotated[bytes, Field(min_length=1, max_length=MAX_CROP_BYTES)]
    image_id: Annotated[str, StringConstraints(max_length=64)] = ""  # its image; "" = the event's image_id


class GarmentsEvent(Message):
    """Segmentation -> embedding: all garments of one product image in one record.

    One record per image (not one per garment) makes "replace this product's garments" and the
    single IndexedEvent per image atomic: the embedding worker never has to gather parts.
    A delete passes through as ``op="delete"`` with no garments, in order with the upserts.
    """

    event_id: Identifier
    tenant: TenantId
    product_id: Identifier
    op: Literal["upsert", "delete"]
    image_id: Annotated[str, StringConstraints(max_length=64)] = ""  # the first image's id
    image_ids: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list, max_length=MAX_PRODUCT_IMAGES)  # every image of the product (1.1)
    image_size: tuple[int, int] | None = None  # (width, height) of the original image
    garments: list[Garment] = Field(default_factory=list, max_length=len(LABELS) * MAX_PRODUCT_IMAGES)
    # The product's own garment labels (ProductEvent.garments), and every garment label the segmenter found
    # in its images before that selection: the IndexedEvent tells a producer what was there instead.
    wanted_labels: list[Label] | None = None
    found_labels: list[Label] = Field(default_factory=list)
    metadata: ProductMetadata = Field(default_factory=ProductMetadata)
    occurred_at: Timestamp
    segmented_at: Timestamp = Field(default_factory=utc_now)


class IndexedEvent(Message):
    """What became searchable (or was removed) for one product event."""

    event_id: Identifier
    tenant: TenantId
    product_id: Identifier
    op: Literal["upsert", "delete"]
    # stale: skipped, older than the version (or delete tombstone) already applied to the product.
    # garment_not_found: the product named its garments (ProductEvent.garments) and none was found;
    # ``found_labels`` says what the segmenter saw instead. Nothing of the product is searchable then.
    status: Literal["indexed", "no_garments", "garment_not_found", "deleted", "stale"]
    image_id: str = ""
    image_ids: list[str] = Field(default_factory=list)
    labels: list[Label] = Field(default_factory=list)
    wanted_labels: list[Label] | None = None
    found_labels: list[Label] = Field(default_factory=list)
    garment_ids: list[str] = Field(default_factory=list)
    removed: int = 0  # rows deleted (stale garments of a replaced image, or the whole product)
    latency_ms: float  # occurred_at -> indexed
    indexed_at: Timestamp = Field(default_factory=utc_now)


class PriceRange(BaseModel):
    """Rule beyond JSON Schema: min must not exceed max."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    max: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> PriceRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("price.min must not exceed price.max")
        return self


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    price: PriceRange | None = None
    brands: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] | None = Field(
        default=None, max_length=100
    )
    categories: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] | None = Field(
        default=None, max_length=100
    )
    in_stock: bool | None = None


Strategy = Literal["first_place_votes", "lowest_total_distance", "most_common_overall"]
MAX_TOP_K = 100


class LookRequest(Message):
    request_id: Identifier = Field(default_factory=new_id)
    tenant: TenantId
    reply_to: TopicName
    image: ImageRef
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] = 3
    garments: list[Label] | None = Field(default=None, max_length=len(LABELS))
    filters: Filters = Field(default_factory=Filters)
    strategy: Strategy = "first_place_votes"
    deadline: Timestamp | None = None
    sent_at: Timestamp = Field(default_factory=utc_now)


class Match(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    product_id: str
    score: float  # inner product of unit vectors = cosine similarity, higher is closer
    metadata: ProductMetadata
    metadata_source: Literal["redis", "milvus"]


class GarmentMatches(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: Label
    bbox: BBox
    mask_fraction: float
    matches: list[Match]


class RankedProduct(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    product_id: str
    score: float  # strategy-specific: votes, summed distance, or appearances
    labels: list[str]


class ReplyStatus(str, Enum):
    ok = "ok"
    partial = "partial"
    error = "error"
    expired = "expired"


class LookReply(Message):
    request_id: str
    tenant: str
    status: ReplyStatus
    error: str | None = None
    garments: list[GarmentMatches] = Field(default_factory=list)
    ranking: list[RankedProduct] = Field(default_factory=list)
    strategy: Strategy = "first_place_votes"
    timings_ms: dict[str, float] = Field(default_factory=dict)
    # The reply was cut to fit in one Kafka record (fewer matches per garment, then fewer attributes).
    truncated: bool = False
    replied_at: Timestamp = Field(default_factory=utc_now)

    @field_validator("timings_ms")
    @classmethod
    def _finite(cls, v: dict[str, float]) -> dict[str, float]:
        return {k: (x if math.isfinite(x) else -1.0) for k, x in v.items()}


class DeadLetter(Message):
    """An input that a stage could not process: the original bytes and why."""

    stage: str
    source_topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes
    headers: dict[str, bytes] = Field(default_factory=dict)
    reason: str
    error_type: str
    attempts: int
    event_id: str | None = None
    tenant: str | None = None
    first_seen_at: Timestamp
    failed_at: Timestamp = Field(default_factory=utc_now)


ALL_MESSAGES: tuple[type[Message], ...] = (
    ProductEvent, GarmentsEvent, IndexedEvent, LookRequest, LookReply, DeadLetter,
)
