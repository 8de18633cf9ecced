"""Hostile inputs through real worker processes: every kind gets its defined outcome, nothing dies.

All ingest records share one key (one partition) and are followed by a good product; all look requests
share one key and are followed by a good request. The good ones must come out fine after the rest, every
worker process must still be the one we started, and the table of (kind, expected, got) is printed
(``pytest -s``) and asserted.
"""

from __future__ import annotations

import json
import time
import uuid

from contracts import codec, topics
from contracts.client import CatalogPublisher
from contracts.models import DeadLetter, GarmentsEvent, IndexedEvent, LookReply

from support.waits import wait_for
from hostile import CASE_HEADER, Case, ingest_cases, jpeg, product, request_cases

TENANT = "acme"
WORKER_ENV = {
    # the allow-list names the hosts of the uri_* cases: what refuses them is the address check
    "LOOKSTREAM_FETCH_ALLOWED_HOSTS": "169.254.169.254,10.0.0.1,localhost",
    "LOOKSTREAM_FETCH_TIMEOUT_S": "2",
    "LOOKSTREAM_ITEM_ATTEMPTS": "2",
    "LOOKSTREAM_BACKOFF_INITIAL_S": "0.2",
}


def _key_of(value: bytes | None) -> bytes:
    """The key a well-behaved producer gives a ProductEvent: tenant:product_id (any key for undecodable ones)."""
    try:
        d = json.loads(value or b"")
        return f"{d['tenant']}:{d['product_id']}".encode()
    except Exception:
        return b"acme:hostile"


def _case_of(letter: DeadLetter) -> str | None:
    v = letter.headers.get(CASE_HEADER)
    return v.decode() if v else None


def _ingest_outcome(c: Case, indexed: dict, letters: dict, garments: dict) -> tuple[bool, str]:
    evs = indexed.get(c.event_id, []) if c.event_id else []
    letter = letters.get(c.kind)
    if c.expect == "dlq":
        if evs:
            return False, f"{evs[0].status} {evs[0].labels}"
        if letter is None:
            return False, "nothing"
        return c.reason in letter.reason, f"dlq [{letter.error_type}] {letter.reason[:90]}"
    if letter is not None:
        return False, f"dlq [{letter.error_type}] {letter.reason[:90]}"
    if not evs:
        return False, "nothing"
    ev = evs[0]
    got = f"{ev.status} {','.join(ev.labels)}".strip()
    ok = {"indexed": ev.status == "indexed", "no_garments": ev.status == "no_garments",
          "deleted": ev.status == "deleted"}[c.expect]
    ok = ok and sorted(ev.labels) == sorted(c.labels)  # deterministic under the declared test model
    if c.expect == "no_garments":
        ok = ok and not ev.labels
    if c.removed is not None:
        ok = ok and ev.removed == c.removed
        got += f" removed={ev.removed}"
    if c.image_size is not None:
        size = (garments.get(c.event_id) or [None])[0]
        ok = ok and size == c.image_size
        got += f" size={size}"
    ok = ok and len(evs) == c.count  # every IndexedEvent counted: a second one is a duplicate
    if len(evs) != 1:
        got += f" x{len(evs)}"
    return ok, got


def _request_outcome(c: Case, replies: dict, letters: dict) -> tuple[bool, str]:
    got_replies = replies.get(c.event_id, [])  # every reply record with this request id: (topic, reply)
    reply = got_replies[0][1] if got_replies else None
    letter = letters.get(c.kind)
    got = []
    ok = True
    for topic, r in got_replies:
        got.append(f"reply {r.status.value} on {topic}: {(r.error or '')[:80]}")
    if letter is not None:
        got.append(f"dlq [{letter.error_type}]")
    if c.expect == "dlq_only":
        ok = not got_replies and letter is not None and c.reason in letter.reason
    else:
        want = c.expect.removeprefix("reply_")
        # exactly one reply, on the topic the case names (a refused reply_to is answered on the tenant's own)
        ok = len(got_replies) == 1 and got_replies[0][0] == c.reply_topic
        ok = ok and reply.status.value == want and c.reason in (reply.error or "")
        ok = ok and (letter is not None) == c.dlq_too
    return ok, "; ".join(got) or "nothing"


def test_hostile_inputs_get_their_outcome_and_nothing_dies(pipeline, tmp_path, collector_factory):
    s = pipeline.settings
    image_root = tmp_path / "images"
    image_root.mkdir()
    workers = {k: pipeline.start_worker(k, LOOKSTREAM_IMAGE_ROOT=str(image_root), **WORKER_ENV)
               for k in ("segmentation", "embedding", "query")}
    for p in workers.values():
        pipeline.wait_ready(p, timeout=90)
    pids = {k: p.pid() for k, p in workers.items()}

    reply_to = f"{s.reply_topic_prefix}.{TENANT}.{pipeline.ns}"
    own_topic = f"{s.reply_topic_prefix}.{TENANT}"
    dlq_products, dlq_garments, dlq_requests = (topics.dlq(t) for t in
                                                (s.topic_products, s.topic_garments, s.topic_look_requests))
    other_tenant = f"{s.reply_topic_prefix}.globex"  # a refused request must never reach these
    col = collector_factory(s, [s.topic_indexed, s.topic_garments, dlq_products, dlq_garments, dlq_requests,
                                reply_to, own_topic, other_tenant, s.topic_products])

    ingest = ingest_cases(TENANT, image_root)
    good = product(TENANT, "h-good-last", jpeg(), event_id="good-" + uuid.uuid4().hex[:8])
    requests = request_cases(TENANT, reply_to, s.topic_products, jpeg())
    good_rid = "good-req-" + uuid.uuid4().hex[:8]
    good_req = {"request_id": good_rid, "tenant": TENANT, "reply_to": reply_to,
                "image": good["image"], "top_k": 3}
    kinds = [c.kind for c in ingest + requests]
    assert len(kinds) == len(set(kinds))  # the dead letters are told apart by kind

    t0 = time.monotonic()
    pub = CatalogPublisher(s.bootstrap_servers, topic=s.topic_products)
    try:
        for c in ingest:  # one partition, in this order; each keyed by its own product (a foreign key is refused)
            pub.producer.send(s.topic_products, key=_key_of(c.value), value=c.value, headers=c.headers, partition=0)
        pub.producer.send(s.topic_products, key=_key_of(json.dumps(good).encode()), value=json.dumps(good).encode(),
                          partition=0)
        for c in requests:
            pub.producer.send(s.topic_look_requests, key=b"hostile", value=c.value, headers=c.headers)
        pub.producer.send(s.topic_look_requests, key=b"hostile", value=json.dumps(good_req).encode())
        pub.flush()
    finally:
        pub.close()

    letter_count: dict[str, int] = {}  # every dead letter counted, per case

    def gather():
        indexed, garments, letters, replies = {}, {}, {}, {}
        letter_count.clear()
        for r in col.of(s.topic_indexed):
            ev = codec.decode(IndexedEvent, r.value)
            indexed.setdefault(ev.event_id, []).append(ev)
        for r in col.of(s.topic_garments):
            g = codec.decode(GarmentsEvent, r.value)
            garments.setdefault(g.event_id, []).append(g.image_size)
        for t in (dlq_products, dlq_garments, dlq_requests):
            for r in col.of(t):
                d = codec.decode(DeadLetter, r.value)
                letters.setdefault(_case_of(d) or f"?{d.offset}", d)
                letter_count[_case_of(d) or f"?{d.offset}"] = letter_count.get(_case_of(d) or f"?{d.offset}", 0) + 1
        for t in (reply_to, own_topic):
            for r in col.of(t):
                rid = (r.key or b"").decode()
                try:
                    replies.setdefault(rid, []).append((t, codec.decode(LookReply, r.value)))
                except codec.DecodeError:
                    pass
        return indexed, garments, letters, replies

    def settled():
        indexed, garments, letters, replies = gather()
        if good["event_id"] not in indexed or good_rid not in replies:
            return False
        pending = [c.kind for c in ingest if c.expect != "same_as_previous"
                   and c.kind not in letters and c.event_id not in indexed]
        pending += [c.kind for c in requests
                    if (c.expect != "dlq_only" and c.event_id not in replies) or
                    ((c.dlq_too or c.expect == "dlq_only") and c.kind not in letters)]
        return not pending or pending

    try:
        wait_for(lambda: settled() is True, 150, "every hostile input's outcome", interval=0.5)
    except AssertionError:
        print("pending:", settled())
        raise
    elapsed = time.monotonic() - t0
    indexed, garments, letters, replies = gather()

    rows, failures = [], []
    for c in ingest:
        if c.expect == "same_as_previous":
            continue
        ok, got = _ingest_outcome(c, indexed, letters, garments)
        rows.append((c.kind, c.expect + (f" {','.join(c.labels)}" if c.labels else "")
                     + (f" ~{c.reason!r}" if c.reason else ""), got, ok))
    for c in requests:
        ok, got = _request_outcome(c, replies, letters)
        rows.append((c.kind, c.expect + (f" ~{c.reason!r}" if c.reason else "") + (" +dlq" if c.dlq_too else ""),
                     got, ok))
    good_ev = indexed[good["event_id"]][0]
    rows.append(("GOOD product after all of them", "indexed Upper-clothes", f"{good_ev.status} {good_ev.labels}",
                 good_ev.status == "indexed" and "Upper-clothes" in good_ev.labels))
    good_reply = replies[good_rid][0][1]
    rows.append(("GOOD request after all of them", "reply ok", good_reply.status.value,
                 good_reply.status.value == "ok" and bool(good_reply.garments)))
    alive = {k: (p.pid() == pids[k] and p._popen.poll() is None) for k, p in workers.items()}
    rows.append(("worker processes alive (same pid)", "all", str(alive), all(alive.values())))

    w = max(len(r[0]) for r in rows)
    e = min(60, max(len(r[1]) for r in rows))
    print(f"\n{len(rows)} rows, settled in {elapsed:.1f} s\n{'kind':<{w}}  {'expected':<{e}}  got")
    for kind, exp, got, ok in rows:
        print(f"{kind:<{w}}  {exp[:e]:<{e}}  {'' if ok else '!! '}{got}")
        if not ok:
            failures.append(f"{kind}: expected {exp}, got {got}")
    unexpected = sorted(k for k in letters if k not in {c.kind for c in ingest + requests})
    assert not unexpected, f"dead letters of no case: {unexpected}"
    twice = {k: n for k, n in letter_count.items() if n != 1}
    assert not twice, f"dead-lettered more than once: {twice}"
    # every record counted: one GarmentsEvent per decodable image event (two for the event sent twice)
    for c in ingest:
        if c.expect != "same_as_previous" and c.event_id in garments:
            assert len(garments[c.event_id]) == len(indexed[c.event_id]), (c.kind, garments[c.event_id])
    assert len(replies[good_rid]) == 1
    # a refused request reaches neither another tenant's reply topic nor an internal topic
    rids = {c.event_id for c in requests if c.event_id} | {good_rid}
    for topic in (other_tenant, s.topic_products, s.topic_garments, s.topic_indexed):
        leaked = [r for r in col.of(topic) if (r.key or b"").decode(errors="replace") in rids
                  or any(rid.encode() in (r.value or b"") for rid in rids)]
        assert not leaked, f"{len(leaked)} record(s) of look requests on {topic}"
    assert not failures, "\n".join(failures)
    # a record too big to be copied whole into a dead letter (base64 grows it past the record limit)
    # is dead-lettered with a prefix of its bytes instead of blocking the partition
    big = letters["oversized_inline_10mib"]
    assert "dead letter keeps the first" in big.reason and 0 < len(big.value) < len(
        next(c.value for c in ingest if c.kind == "oversized_inline_10mib"))
