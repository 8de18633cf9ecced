"""Observability on real services: /metrics content (promtool-clean, right counts, bounded labels),
/healthz and /readyz following a dependency outage, and JSON log lines carrying event ids.

One module-scoped run feeds every test: three workers, 6 good products + 1 corrupt one ingested,
one good look and one look with a corrupt image.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.client import LookClient
from contracts.models import DeadLetter, IndexedEvent
from workers.local.ingest import CatalogEntry, ingest, read_catalog

from support.pipeline import new_pipeline
from support.waits import wait_for

N = 6
TENANT = "obsvtenant"
PROMTOOL = "/usr/bin/promtool"
WORKERS = ("segmentation", "embedding", "query")
READY_CHECKS = {
    "segmentation": {"kafka", "triton"},
    "embedding": {"kafka", "triton", "milvus", "redis"},
    "query": {"kafka", "triton", "milvus"},
}


# ----------------------------------------------------------------------------- helpers
def get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def scrape(proc) -> str:
    code, body = get(proc.metrics_url + "/metrics")
    assert code == 200, code
    return body.decode()


def samples(text: str) -> list:
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def value(text: str, name: str, **labels) -> float | None:
    """Sum of the samples called ``name`` whose labels include ``labels``; None if there is none."""
    hits = [s.value for s in samples(text) if s.name == name and labels.items() <= s.labels.items()]
    return sum(hits) if hits else None


def readyz(proc) -> tuple[int, dict]:
    code, body = get(proc.metrics_url + "/readyz")
    return code, json.loads(body)


# ----------------------------------------------------------------------------- the run
@pytest.fixture(scope="module")
def pipeline(services):
    p = new_pipeline(services)
    yield p
    p.stop_all()


@pytest.fixture(scope="module")
def run(pipeline, sample_catalog, tmp_path_factory):
    _root, products = sample_catalog
    procs = {k: pipeline.start_worker(k, **({"LOOKSTREAM_LOG_JSON": "1"} if k != "embedding" else {}))
             for k in WORKERS}
    # Ready by /metrics alone (never /readyz first): the Readiness thread must keep the gauge current.
    for k, proc in procs.items():
        wait_for(lambda: value(_scrape_or_empty(proc), "lookstream_worker_ready", worker=k) == 1, 90,
                 f"{k} lookstream_worker_ready == 1 on /metrics", interval=0.5)
    bad = tmp_path_factory.mktemp("bad") / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    entries = [*read_catalog(_root)[:N], CatalogEntry("corrupt-product", bad, {"title": "corrupt"})]
    report = ingest(pipeline.settings, entries, TENANT, timeout=240)
    assert not report.missing, report.summary()
    assert report.indexed + report.no_garments == N and list(report.failed) == ["corrupt-product"], report.summary()
    indexed = [o for o in report.outcomes.values() if isinstance(o, IndexedEvent)]
    bad_event = next(o for o in report.outcomes.values() if isinstance(o, DeadLetter))
    look = next(p for p in products[:N] for o in indexed if o.product_id == p.product_id and o.labels)
    s = pipeline.settings
    with LookClient(s.bootstrap_servers, tenant=TENANT, request_topic=s.topic_look_requests) as c:
        ok = c.ask(look.path.read_bytes(), top_k=3, timeout=90, request_id="obsv-good-look")
        broken = c.ask(b"\x89PNG\r\n\x1a\n broken", timeout=90, request_id="obsv-bad-look")
    assert ok.status.value == "ok", ok.error
    assert broken.status.value == "error" and broken.error.startswith("bad image"), broken.error
    return {
        "procs": procs,
        "report": report,
        "garments": sum(len(o.labels) for o in indexed),
        "bad_event_id": bad_event.event_id,
        "product_ids": {e.product_id for e in entries},
        "ids": {*report.outcomes, "obsv-good-look", "obsv-bad-look"},
    }


def _scrape_or_empty(proc) -> str:
    try:
        return scrape(proc)
    except Exception:  # not listening yet
        return ""


# ----------------------------------------------------------------------------- tests
def test_metrics_expositions_are_valid_and_count_the_traffic(pipeline, run):
    procs = run["procs"]

    def drained() -> dict[str, str] | None:
        texts = {k: scrape(p) for k, p in procs.items()}
        for k, text in texts.items():
            topic = getattr(pipeline.settings, {"segmentation": "topic_products", "embedding": "topic_garments",
                                                "query": "topic_look_requests"}[k])
            lag = [s.value for s in samples(text) if s.name == "lookstream_consumer_lag_records"
                   and s.labels["worker"] == k and s.labels["topic"] == topic]
            if not lag or any(lag) or value(text, "lookstream_in_flight", worker=k) != 0:
                return None
        return texts

    texts = wait_for(drained, 30, "consumer lag present and 0 on every worker", interval=0.5)

    for k, text in texts.items():  # (a) promtool lints each exposition
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        assert r.returncode == 0, f"promtool on {k}: rc {r.returncode}\n{r.stdout.decode()}{r.stderr.decode()}"

    seg, emb, qry = texts["segmentation"], texts["embedding"], texts["query"]
    # (b) counts
    assert value(seg, "lookstream_messages_total", worker="segmentation", outcome="ok") == N
    assert value(seg, "lookstream_messages_total", worker="segmentation", outcome="dlq") == 1
    assert value(seg, "lookstream_dead_letters_total", worker="segmentation", reason="bad_image") == 1
    assert value(emb, "lookstream_messages_total", worker="embedding", outcome="ok") == N
    assert value(emb, "lookstream_messages_total", worker="embedding", outcome="dlq") is None
    assert (value(emb, "lookstream_garments_indexed_total") or 0) == run["garments"] > 0
    assert value(emb, "lookstream_end_to_end_seconds_count", worker="embedding") == N
    assert value(qry, "lookstream_query_replies_total", status="ok") == 1
    assert value(qry, "lookstream_query_replies_total", status="error") == 1
    assert value(qry, "lookstream_dead_letters_total", worker="query", reason="bad_image") == 1
    assert value(qry, "lookstream_messages_total", worker="query", outcome="ok") == 1
    assert value(qry, "lookstream_messages_total", worker="query", outcome="dlq") == 1
    assert value(qry, "lookstream_end_to_end_seconds_count", worker="query") == 1  # ok replies only
    stages = {"segmentation": ("segment",), "embedding": ("embed", "upsert"), "query": ("segment", "embed", "search", "enrich")}
    for k, names in stages.items():
        for st in names:
            assert (value(texts[k], "lookstream_stage_duration_seconds_count", worker=k, stage=st) or 0) > 0, (k, st)
        assert (value(texts[k], "lookstream_batch_size_count", worker=k) or 0) > 0
    for k, text in texts.items():
        up = {s.labels["dependency"]: s.value for s in samples(text)
              if s.name == "lookstream_dependency_up" and s.labels["worker"] == k}
        assert READY_CHECKS[k] <= set(up) and all(v == 1 for v in up.values()), (k, up)
        assert value(text, "lookstream_worker_ready", worker=k) == 1
        assert (value(text, "lookstream_produced_messages_total", worker=k) or 0) > 0

    # bounded cardinality: no label value is (or names) a product, tenant, event or request id
    forbidden = run["product_ids"] | run["ids"]
    for k, text in texts.items():
        for s in samples(text):
            for lk, lv in s.labels.items():
                assert lv not in forbidden and TENANT not in lv, f"{k}: {s.name} {lk}={lv!r} is unbounded"


def test_health_and_readiness_follow_a_redis_outage(pipeline, run):
    procs = run["procs"]
    for k, proc in procs.items():
        code, body = get(proc.metrics_url + "/healthz")
        assert code == 200 and json.loads(body) == {"status": "alive"}, k
        code, r = readyz(proc)
        assert code == 200 and r["ready"] is True and set(r["checks"]) == READY_CHECKS[k], (k, r)
        assert all(v is True for v in r["checks"].values()), (k, r)

    emb, qry = procs["embedding"], procs["query"]
    redis = pipeline.services.services["redis"]
    redis.proc.stop()
    try:
        # /metrics first: the background check must notice without anyone asking /readyz
        wait_for(lambda: value(_scrape_or_empty(emb), "lookstream_dependency_up", worker="embedding",
                               dependency="redis") == 0, 30, "embedding dependency_up{redis} 0", interval=0.3)
        text = scrape(emb)
        assert value(text, "lookstream_worker_ready", worker="embedding") == 0
        code, r = readyz(emb)
        assert code == 503 and r["ready"] is False and r["checks"]["redis"] is False, r
        assert r["checks"]["milvus"] is True and r["checks"]["triton"] is True, r
        # the query worker falls back to Milvus fields: still ready
        for _ in range(3):
            code, r = readyz(qry)
            assert code == 200 and "redis" not in r["checks"], r
            time.sleep(0.5)
        assert get(emb.metrics_url + "/healthz")[0] == 200  # alive, only not ready
    finally:
        redis.start()
    wait_for(lambda: readyz(emb)[0] == 200, 15, "embedding /readyz back to 200", interval=0.3)
    assert value(scrape(emb), "lookstream_dependency_up", worker="embedding", dependency="redis") == 1


def test_json_log_lines_carry_event_ids(run):
    procs = run["procs"]
    for k, event_id in (("segmentation", run["bad_event_id"]), ("query", "obsv-bad-look")):
        raw = [ln for ln in procs[k].log_file.read_text(errors="replace").splitlines() if ln.strip()]
        assert raw, f"{k}: empty log"
        lines, not_json = [], []
        for ln in raw:
            try:
                lines.append(json.loads(ln))
            except ValueError:
                not_json.append(ln)
        assert not not_json, f"{k}: non-JSON log lines:\n" + "\n".join(not_json[:10])
        for d in lines:
            assert {"ts", "level", "logger", "msg"} <= set(d), d
            assert d.get("worker") == k, d
        dead = [d for d in lines if d["level"] == "WARNING" and "dead letter" in d["msg"]]
        assert len(dead) == 1, (k, dead)
        assert dead[0]["event_id"] == event_id and "bad_image" in dead[0]["msg"], dead[0]
