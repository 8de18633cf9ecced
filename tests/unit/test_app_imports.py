"""The production entry point (``python -m workers.app``, the worker image) loads the product only.

Run in a fresh interpreter (sys.modules is global to the test session): importing ``workers.app`` and every
module of the product packages must load no ``workers.local`` module (developer tooling: CLI, embedded stack,
sample catalog, sheet) and no torch (inference lives in Triton).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("runtime", "stages", "media", "adapters")

PROBE = """
import importlib, json, pkgutil, sys
import workers.app
after_app = sorted(sys.modules)
for pkg in {product!r}:
    for m in pkgutil.iter_modules([f"workers/{{pkg}}"]):
        importlib.import_module(f"workers.{{pkg}}.{{m.name}}")
print(json.dumps({{"app": after_app, "product": sorted(sys.modules)}}))
"""


def _loaded() -> dict[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(product=PRODUCT)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _forbidden(modules: list[str]) -> list[str]:
    return [m for m in modules if m == "workers.local" or m.startswith("workers.local.")
            or m == "torch" or m.startswith("torch.")]


def test_worker_entry_point_loads_no_local_tooling_and_no_torch():
    loaded = _loaded()
    assert "workers.app" in loaded["app"] and "workers.runtime.worker" in loaded["app"]
    # every stage and adapter got imported too: the check covers what a running worker imports lazily
    assert {"workers.stages.query", "workers.stages.embedding", "workers.stages.segmentation",
            "workers.adapters.milvus_index", "workers.adapters.product_state"} <= set(loaded["product"])
    assert _forbidden(loaded["app"]) == []
    assert _forbidden(loaded["product"]) == []


def test_entry_point_usage():
    help_ = subprocess.run([sys.executable, "-m", "workers.app", "worker", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert help_.returncode == 0 and "segmentation|embedding|query" in help_.stdout
    bad = subprocess.run([sys.executable, "-m", "workers.app", "nonsense"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "usage" in bad.stderr


# What each folder of workers/ may import (docs/architecture.md has the same table). runtime -> media is the one
# lazy edge: Settings.garment_rules builds the media.garments rules object from settings.
MAY_IMPORT = {
    "runtime": {"runtime", "media"},
    "media": {"media", "runtime"},
    "adapters": {"adapters", "runtime"},
    "stages": {"stages", "runtime", "media", "adapters"},
    "app": {"runtime", "stages", "adapters"},
    "local": {"local", "app", "runtime", "stages", "media", "adapters"},
}


def _workers_imports(path: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "workers" and len(parts) > 1:
                found.add(parts[1])
            if node.module == "workers":
                found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.add("<relative>")
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("workers.")}
    return found


def test_folders_import_only_what_the_architecture_allows():
    bad = {}
    for path in sorted((ROOT / "workers").rglob("*.py")):
        rel = path.relative_to(ROOT / "workers")
        folder = "app" if rel.name == "app.py" and len(rel.parts) == 1 else rel.parts[0]
        if folder == "__init__.py":
            continue
        extra = _workers_imports(path) - MAY_IMPORT[folder]
        if extra:
            bad[str(rel)] = sorted(extra)
    assert bad == {}, f"imports across folders that docs/architecture.md does not allow: {bad}"
