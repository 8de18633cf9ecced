"""JSON encoding of messages on the wire, and the headers every record carries."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import ValidationError

from .models import Message

M = TypeVar("M", bound=Message)

CONTENT_TYPE = "application/json"
HEADER_TYPE = "lookstream-type"  # the message class name, for tools reading a topic
HEADER_REQUEST_ID = "request-id"


class DecodeError(ValueError):
    """The record is not a valid message of the expected type; ``reason`` is readable."""


def encode(msg: Message) -> bytes:
    return msg.model_dump_json(by_alias=True, exclude_none=True).encode()


def headers_for(msg: Message) -> list[tuple[str, bytes]]:
    return [(HEADER_TYPE, type(msg).__name__.encode()), ("content-type", CONTENT_TYPE.encode())]


def decode(model: type[M], raw: bytes | None) -> M:
    if raw is None or len(raw) == 0:
        raise DecodeError(f"empty record where a {model.__name__} was expected")
    _refuse_duplicate_keys(model, raw)
    try:
        # strict: a JSON string is not a number, "yes" is not a boolean (third parties validate against the schema)
        return model.model_validate_json(raw, strict=True)
    except ValidationError as e:
        raise DecodeError(f"invalid {model.__name__}: {explain(e)}") from None


def _refuse_duplicate_keys(model: type[Message], raw: bytes) -> None:
    """Two ``tenant`` fields in one object: JSON parsers disagree on which wins, so neither does."""

    def pairs(items):
        seen = set()
        for k, _ in items:
            if k in seen:
                raise DecodeError(f"invalid {model.__name__}: duplicate JSON key {k[:64]!r}")
            seen.add(k)
        return None  # the parsed value is never used: pydantic parses the record itself

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except DecodeError:
        raise
    except (ValueError, RecursionError):
        pass  # not JSON, or nested too deep for this parser: pydantic's own error explains it


def explain(e: ValidationError, limit: int = 5) -> str:
    """One readable line: 'field.path: message; ...'."""
    parts = []
    for err in e.errors()[:limit]:
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = e.error_count() - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
