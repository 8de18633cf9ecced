"""JSON encoding of messages on the wire, and the headers every record carries."""

from __future__ import annotations

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
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        raise DecodeError(f"invalid {model.__name__}: {explain(e)}") from None


def explain(e: ValidationError, limit: int = 5) -> str:
    """One readable line: 'field.path: message; ...'."""
    parts = []
    for err in e.errors()[:limit]:
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = e.error_count() - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
