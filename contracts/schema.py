"""JSON Schema files generated from the models: ``python -m contracts.schema [--check]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .models import ALL_MESSAGES

SCHEMA_DIR = Path(__file__).parent / "schemas"


def render() -> dict[str, str]:
    out = {}
    for model in ALL_MESSAGES:
        schema = model.model_json_schema(by_alias=True, mode="validation")
        out[f"{model.__name__}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def drift() -> list[str]:
    """Names of schema files that differ from the models (missing, changed or stale)."""
    want = render()
    have = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.json")}
    return sorted(n for n in set(want) | set(have) if want.get(n) != have.get(n))


def write() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for p in SCHEMA_DIR.glob("*.json"):
        p.unlink()
    for name, text in render().items():
        (SCHEMA_DIR / name).write_text(text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        bad = drift()
        if bad:
            print(f"schema files out of date: {', '.join(bad)}; run: python -m contracts.schema", file=sys.stderr)
            return 1
        print("schemas match the models")
        return 0
    write()
    print(f"wrote {len(render())} schema files to {SCHEMA_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
