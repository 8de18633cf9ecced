"""Triton ``config.pbtxt`` as a structure: parse the protobuf text format into dicts, edit, write it back.

Stdlib only (the Triton image's entry point imports it). The committed ``triton_models/*/config.pbtxt`` are read
with :func:`parse`, the runtime configs are built by editing that structure (workers/local/model_repo.py), and
:func:`dumps` writes them; no regular expression ever edits a config. The tests parse every rendered config with
Triton's own ``model_config.proto`` (tritonclient's ``model_config_pb2``) to prove the structure is valid.

Representation: a message is a ``dict``; a repeated field is a ``list``; an enum value (``TYPE_UINT8``,
``KIND_GPU``) is an :class:`Enum`; strings are ``str``; numbers ``int``/``float``; ``true``/``false`` ``bool``.
The map field ``parameters`` is a list of ``{"key": ..., "value": {"string_value": ...}}`` as in the text format.
"""

from __future__ import annotations

import json
import re
from typing import Any


class Enum(str):
    """An enum identifier, written without quotes."""


_TOKEN = re.compile(r"""\s*(?:(\#[^\n]*)|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([{}\[\]:,;])|([^\s{}\[\]:,;"'#]+))""")


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while text[pos:].strip():
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"config.pbtxt: cannot read at {text[pos:pos + 30].strip()!r}")
        pos = m.end()
        if m.group(2) is not None:
            out.append(("str", m.group(2)))
        elif m.group(3) is not None:
            out.append(("punct", m.group(3)))
        elif m.group(4) is not None:
            out.append(("word", m.group(4)))
    return out


def _scalar(kind: str, tok: str) -> Any:
    if kind == "str":
        return json.loads(tok) if tok[0] == '"' else tok[1:-1]
    if tok in ("true", "false"):
        return tok == "true"
    if re.fullmatch(r"[-+]?\d+", tok):
        return int(tok)
    if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", tok):
        return float(tok)
    return Enum(tok)


class _Parser:
    def __init__(self, text: str):
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, want: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (want is not None and tok[1] != want):
            raise ValueError(f"config.pbtxt: expected {want or 'a token'}, got {tok}")
        self.i += 1
        return tok

    def message(self, end: str | None) -> dict:
        msg: dict[str, Any] = {}
        while True:
            tok = self.peek()
            if tok is None:
                if end is None:
                    return msg
                raise ValueError(f"config.pbtxt: missing {end!r}")
            if tok[1] == end:
                self.i += 1
                return msg
            if tok[1] in (",", ";"):
                self.i += 1
                continue
            kind, name = self.take()
            if kind != "word":
                raise ValueError(f"config.pbtxt: expected a field name, got {name!r}")
            if self.peek() and self.peek()[1] == ":":
                self.i += 1
            value = self.value()
            if name in msg:  # a repeated field written as several entries
                prev = msg[name]
                msg[name] = (prev if isinstance(prev, list) else [prev]) + (value if isinstance(value, list) else [value])
            else:
                msg[name] = value

    def value(self) -> Any:
        kind, tok = self.take()
        if tok == "{":
            return self.message("}")
        if tok == "[":
            items = []
            while True:
                if self.peek() and self.peek()[1] == "]":
                    self.i += 1
                    return items
                if self.peek() and self.peek()[1] == ",":
                    self.i += 1
                    continue
                items.append(self.value())
        if kind == "punct":
            raise ValueError(f"config.pbtxt: unexpected {tok!r}")
        return _scalar(kind, tok)


def parse(text: str) -> dict:
    """config.pbtxt text -> a dict (comments dropped)."""
    return _Parser(text).message(None)


# Fields that are repeated in model_config.proto: always written as lists, even with one element.
REPEATED = {"input", "output", "dims", "instance_group", "preferred_batch_size", "parameters", "gpus",
            "gpu_execution_accelerator", "cpu_execution_accelerator", "reshape", "label_filename"}


def _fmt_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    raise TypeError(f"cannot write {type(v).__name__} {v!r} into config.pbtxt")


def _fmt(name: str, v: Any, indent: int) -> list[str]:
    pad = "  " * indent
    if isinstance(v, dict):
        return [f"{pad}{name} {{", *_body(v, indent + 1), f"{pad}}}"]
    if isinstance(v, list):
        if all(not isinstance(x, (dict, list)) for x in v):
            return [f"{pad}{name}: [ {', '.join(_fmt_scalar(x) for x in v)} ]"]
        lines = [f"{pad}{name} ["]
        for k, x in enumerate(v):
            lines += [f"{pad}  {{", *_body(x, indent + 2), f"{pad}  }}{',' if k < len(v) - 1 else ''}"]
        return lines + [f"{pad}]"]
    return [f"{pad}{name}: {_fmt_scalar(v)}"]


def _body(msg: dict, indent: int) -> list[str]:
    lines: list[str] = []
    for name, v in msg.items():
        if v is None:
            continue
        if name in REPEATED and not isinstance(v, list):
            v = [v]
        lines += _fmt(name, v, indent)
    return lines


def dumps(config: dict, header: str = "") -> str:
    """A dict -> config.pbtxt text (``header``: comment lines on top)."""
    top = "".join(f"# {line}\n" for line in header.splitlines())
    return top + "\n".join(_body(config, 0)) + "\n"


def parameters(config: dict) -> dict[str, str]:
    """The ``parameters`` map as {key: string_value}."""
    items = config.get("parameters") or []
    items = items if isinstance(items, list) else [items]
    return {p["key"]: p.get("value", {}).get("string_value", "") for p in items}


def set_parameters(config: dict, values: dict[str, str | None]) -> None:
    """Set (or, with None, remove) entries of the ``parameters`` map, keeping the others in order."""
    current = parameters(config)
    for k, v in values.items():
        if v is None:
            current.pop(k, None)
        else:
            current[k] = str(v)
    config["parameters"] = [{"key": k, "value": {"string_value": v}} for k, v in current.items()]
    if not config["parameters"]:
        del config["parameters"]


def as_list(v: Any) -> list:
    """A field that may hold one message or several, as a list."""
    return [] if v is None else v if isinstance(v, list) else [v]
