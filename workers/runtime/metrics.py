"""Prometheus metrics shared by every worker, and the /metrics, /healthz, /readyz endpoint.

Label values are bounded: worker, topic, stage, outcome, reason category, dependency, label, status.
Never a product, tenant or request id.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)

MESSAGES = Counter(
    "lookstream_messages", "Input records handled, by outcome (ok, dlq, retried, expired).",
    ["worker", "topic", "outcome"], registry=REGISTRY,
)
PRODUCED = Counter(
    "lookstream_produced_messages", "Records produced, by topic.", ["worker", "topic"], registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "lookstream_stage_duration_seconds",
    "Time spent per processing stage (decode, fetch, segment, crop, embed, upsert, search, enrich, produce, commit).",
    ["worker", "stage"], buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
END_TO_END_SECONDS = Histogram(
    "lookstream_end_to_end_seconds",
    "From the event's own time (occurred_at / sent_at) until this worker finished with it.",
    ["worker"], buckets=_E2E_BUCKETS, registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "lookstream_batch_size", "Records per processed batch.", ["worker"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=REGISTRY,
)
IN_FLIGHT = Gauge("lookstream_in_flight", "Records polled and not yet committed.", ["worker"], registry=REGISTRY)
DLQ = Counter(
    "lookstream_dead_letters", "Records sent to a dead-letter topic, by reason category.",
    ["worker", "reason"], registry=REGISTRY,
)
POLL_ERRORS = Counter(
    "lookstream_poll_errors", "poll() failures (corrupt batch, unreadable codec) and offsets skipped past them.",
    ["worker", "kind"], registry=REGISTRY,
)
UNDELIVERABLE = Counter(
    "lookstream_undeliverable_outputs", "Outputs the broker refused for good, replaced by dead letters.",
    ["worker", "error"], registry=REGISTRY,
)
DEPENDENCY_UP = Gauge(
    "lookstream_dependency_up", "1 if the last call to the dependency succeeded, else 0.",
    ["worker", "dependency"], registry=REGISTRY,
)
DEPENDENCY_RETRIES = Counter(
    "lookstream_dependency_retries", "Batch retries after a dependency failure.",
    ["worker", "dependency"], registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "lookstream_consumer_lag_records", "High watermark minus the consumer position, per partition.",
    ["worker", "topic", "partition"], registry=REGISTRY,
)
GARMENTS_INDEXED = Counter(
    "lookstream_garments_indexed", "Garment vectors upserted into Milvus, by garment label.",
    ["label"], registry=REGISTRY,
)
STALE_EVENTS = Counter(
    "lookstream_stale_events", "Catalog events skipped: older than the product's applied version or tombstone.",
    ["worker"], registry=REGISTRY,
)
QUERY_REPLIES = Counter(
    "lookstream_query_replies", "Look replies sent, by status.", ["status"], registry=REGISTRY,
)
WORKER_READY = Gauge(
    "lookstream_worker_ready", "1 when /readyz would answer 200.", ["worker"], registry=REGISTRY,
)

# Names as they appear in the exposition (counters gain _total; histograms _bucket/_sum/_count).
EXPORTED_METRIC_NAMES: frozenset[str] = frozenset(
    name
    for m in (MESSAGES, PRODUCED, DLQ, DEPENDENCY_RETRIES, GARMENTS_INDEXED, STALE_EVENTS, QUERY_REPLIES)
    for name in (m._name + "_total",)
) | frozenset(
    name
    for m in (STAGE_SECONDS, END_TO_END_SECONDS, BATCH_SIZE)
    for name in (m._name + "_bucket", m._name + "_sum", m._name + "_count")
) | frozenset(m._name for m in (IN_FLIGHT, DEPENDENCY_UP, CONSUMER_LAG, WORKER_READY))


class HealthServer:
    """Serves /metrics, /healthz (alive) and /readyz (``ready_check`` returns {name: ok}) in a thread."""

    def __init__(self, host: str, port: int, worker: str, ready_check: Callable[[], dict[str, bool]]):
        self.worker = worker
        self.ready_check = ready_check
        handler = self._handler()
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="health", daemon=True)

    def start(self) -> HealthServer:
        self.thread.start()
        log.info("metrics and health on http://%s:%d/metrics", *self.httpd.server_address[:2])
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                path = self.path.split("?")[0]
                if path == "/metrics":
                    self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b'{"status":"alive"}', "application/json")
                elif path == "/readyz":
                    try:
                        checks = server.ready_check()
                    except Exception as e:  # a failing check must answer, not hang
                        checks = {"check": False, "error": str(e)}  # type: ignore[dict-item]
                    ok = all(v is True for v in checks.values())
                    WORKER_READY.labels(server.worker).set(1 if ok else 0)
                    body = json.dumps({"ready": ok, "checks": checks}).encode()
                    self._send(200 if ok else 503, body, "application/json")
                else:
                    self._send(404, b"not found", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet: scrapes every few seconds
                pass

        return Handler
