"""`lookstream dlq list|show|replay` as an operator runs it, on dead letters a real worker wrote.

Three records go into the products topic: a product whose image file does not exist yet, a product
whose image bytes are garbage, and a record that is not JSON at all. The segmentation worker dead-letters
all three. The operator lists them, shows one, dry-runs a replay, then "fixes" the missing image and
replays: that product is indexed; the not-JSON record, replayed too, is dead-lettered again with its
original key, value and headers (plus the replay marker).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from contracts import codec, topics
from contracts.models import DeadLetter, IndexedEvent
from workers.local.dlq import REPLAY_HEADER
from workers.runtime.kafka_io import make_producer

from support.waits import wait_for
from hostile import jpeg, product

ROOT = Path(__file__).resolve().parents[2]
TENANT = "acme"


def lookstream(args, env, timeout=120):
    r = subprocess.run([sys.executable, "-m", "workers.local.cli", "dlq", *args], env=env, capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout + r.stderr


def counts(listing: str, source_topic: str) -> dict[str, int]:
    """The (error type -> count) rows of `dlq list` for one source topic."""
    rows = [line.split() for line in listing.splitlines() if line.startswith(source_topic + " ")]
    return {r[1]: int(r[2]) for r in rows}


def test_dead_letters_listed_shown_and_replayed_after_a_fix(pipeline, tmp_path, collector_factory):
    s = pipeline.settings
    images = tmp_path / "images"
    images.mkdir()
    workers = [pipeline.start_worker(k, LOOKSTREAM_IMAGE_ROOT=str(images)) for k in ("segmentation", "embedding")]
    for w in workers:
        pipeline.wait_ready(w, timeout=90)
    dlq_topic = topics.dlq(s.topic_products)
    col = collector_factory(s, [s.topic_products, dlq_topic, s.topic_indexed])
    env = {**os.environ, **pipeline.env, "LOOKSTREAM_STATE_DIR": str(tmp_path / "state")}

    missing = product(TENANT, "dlq-missing", uri=f"file://{images}/later.jpg")
    garbage = product(TENANT, "dlq-garbage", image=b"GIF89a not really an image" * 8)
    not_json = b"\x00\x01 this is not json"
    prod = make_producer(s)
    try:
        prod.send(s.topic_products, key=b"acme:dlq-missing", value=json.dumps(missing).encode())
        prod.send(s.topic_products, key=b"acme:dlq-garbage", value=json.dumps(garbage).encode())
        prod.send(s.topic_products, key=b"acme:dlq-raw", value=not_json, headers=[("origin", b"a test \xff")])
        prod.flush()
    finally:
        prod.close()

    def letters():
        return [(r, codec.decode(DeadLetter, r.value)) for r in col.of(dlq_topic)]

    wait_for(lambda: len(letters()) >= 3, 120, "three dead letters")
    by_event = {d.event_id: (r, d) for r, d in letters()}
    raw_rec, raw_letter = next((r, d) for r, d in letters() if d.value == not_json)
    assert by_event[missing["event_id"]][1].error_type == "image_fetch"
    assert by_event[garbage["event_id"]][1].error_type == "bad_image"

    # list: counts per source topic x error type, and the recent entries with their references
    rc, out = lookstream(["list"], env)
    assert rc == 0, out
    assert counts(out, s.topic_products) == {"image_fetch": 1, "bad_image": 1, "invalid_message": 1}, out
    ref = f"{dlq_topic}/{raw_rec.partition}@{raw_rec.offset}"
    assert ref in out, out
    rc, out = lookstream(["list", "--error-type", "fetch"], env)
    assert rc == 0 and "image_fetch" in out and "bad_image" not in out, out

    # show one by its reference: the reason, the original key, headers and value
    rc, out = lookstream(["show", ref], env)
    assert rc == 0, out
    assert raw_letter.reason in out and "b'acme:dlq-raw'" in out and "origin=b'a test \\xff'" in out, out
    rc, out = lookstream(["show", f"{dlq_topic}/{raw_rec.partition}@{raw_rec.offset + 1000}"], env)
    assert rc == 2 and "no record" in out, out

    # a dry run sends nothing; a replay without a terminal or --yes refuses
    before = len(col.of(s.topic_products))
    rc, out = lookstream(["replay", "--reason", "not found", "--dry-run"], env)
    assert rc == 0 and "1 dead letter(s) selected" in out and "dry run" in out, out
    rc, out = lookstream(["replay", "--reason", "not found"], env)
    assert rc == 2 and "--yes" in out, out
    assert len(col.of(s.topic_products)) == before

    # the fix: the image now exists. Replay that one and the not-JSON record (by DLQ offset range).
    (images / "later.jpg").write_bytes(jpeg())
    rc, out = lookstream(["replay", "--event-id", missing["event_id"], "--yes"], env)
    assert rc == 0 and "replayed 1 record(s)" in out, out
    rc, out = lookstream(["replay", "--error-type", "invalid_message", "--partition", str(raw_rec.partition),
                          "--offsets", f"{raw_rec.offset}-{raw_rec.offset}", "--yes"], env)
    assert rc == 0 and "replayed 1 record(s)" in out and f"{ref} -> {s.topic_products}/" in out, out

    # the fixed product is indexed
    def indexed():
        return [codec.decode(IndexedEvent, r.value) for r in col.of(s.topic_indexed)]
    wait_for(lambda: any(e.event_id == missing["event_id"] for e in indexed()), 120, "the fixed product indexed")
    ev = next(e for e in indexed() if e.event_id == missing["event_id"])
    assert ev.status == "indexed" and "Upper-clothes" in ev.labels, ev

    # the replayed records are the originals, byte for byte, plus the marker of where they came from
    replayed = [r for r in col.of(s.topic_products) if dict(r.headers or []).get(REPLAY_HEADER)]
    assert len(replayed) == 2
    raw_again = next(r for r in replayed if r.value == not_json)
    assert raw_again.key == b"acme:dlq-raw"
    assert dict(raw_again.headers) == {"origin": b"a test \xff", REPLAY_HEADER: ref.encode()}
    fixed_again = next(r for r in replayed if r.value != not_json)
    assert fixed_again.value == json.dumps(missing).encode() and fixed_again.key == b"acme:dlq-missing"

    # the not-JSON record is still bad: dead-lettered again, carrying the marker
    wait_for(lambda: len(letters()) >= 4, 60, "the replayed bad record dead-lettered again")
    again = [d for _, d in letters() if d.value == not_json and REPLAY_HEADER in d.headers]
    assert len(again) == 1 and again[0].headers[REPLAY_HEADER] == ref.encode()
    assert again[0].key == b"acme:dlq-raw" and again[0].error_type == "invalid_message"
    rc, out = lookstream(["list"], env)
    assert rc == 0 and counts(out, s.topic_products) == {"image_fetch": 1, "bad_image": 1, "invalid_message": 2}, out
    assert all(w._popen.poll() is None for w in workers)
