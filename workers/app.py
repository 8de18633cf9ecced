"""Builds and runs one worker process: stage + Kafka clients + health/metrics endpoint.

The production entry point: ``python -m workers.app [worker] segmentation|embedding|query`` (the worker image's
ENTRYPOINT, and how the embedded stack starts its workers). It imports the product only, never ``workers.local``
(developer tooling) and never torch: tests/unit/test_app_imports.py checks what it loads.
"""

from __future__ import annotations

import logging
import threading
import sys
from typing import Callable, Sequence

from workers.runtime import metrics as m
from workers.runtime.kafka_io import ensure_topics, make_consumer, make_producer
from workers.runtime.logs import setup_logging
from workers.runtime.worker import Worker
from workers.runtime.settings import Settings

log = logging.getLogger(__name__)


def build_stage(kind: str, s: Settings):
    from workers.adapters.triton_client import TritonModels

    triton = TritonModels(s.triton_url, segformer_model=s.segformer_model, embed_model=s.embed_model,
                          timeout_s=s.triton_timeout_s, ssl=s.triton_ssl)
    if kind == "segmentation":
        from workers.stages.segmentation import SegmentationStage

        return SegmentationStage(s, triton)
    if kind == "query" and s.defer_pandas:
        from workers.runtime.lazy_imports import defer_pandas

        defer_pandas()  # it only searches: pymilvus's pandas (~35 MB of RSS) stays out until something calls it
    from workers.adapters.milvus_index import GarmentIndex
    from workers.adapters.product_state import MetadataCache

    if kind == "embedding":
        from workers.stages.embedding import EmbeddingStage

        return EmbeddingStage(s, triton, GarmentIndex(s, triton.embedder), MetadataCache(s))
    if kind == "query":
        from workers.stages.query import QueryStage

        return QueryStage(s, triton, GarmentIndex(s, triton.embedder), MetadataCache(s))
    raise ValueError(f"unknown worker kind {kind!r}; expected segmentation, embedding or query")


class Readiness:
    """Evaluates the readiness checks every few seconds in the background; /readyz answers from cache."""

    def __init__(self, worker: str, checks: dict[str, Callable[[], bool]], every_s: float = 2.0):
        self.worker, self.checks, self.every_s = worker, checks, every_s
        self.state: dict[str, bool] = {k: False for k in checks}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="readiness", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.every_s)

    def refresh(self) -> dict[str, bool]:
        for name, check in self.checks.items():
            try:
                ok = bool(check())
            except Exception:
                ok = False
            self.state[name] = ok
            m.DEPENDENCY_UP.labels(self.worker, name).set(1 if ok else 0)
        m.WORKER_READY.labels(self.worker).set(1 if all(self.state.values()) else 0)
        return dict(self.state)

    def start(self) -> Readiness:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


def run_worker(kind: str, s: Settings | None = None) -> None:
    s = s or Settings()
    setup_logging(s.log_level, s.log_json, worker=kind)
    stage = build_stage(kind, s)
    ensure_topics(s)
    group = f"{s.group_id_prefix}-{kind}"
    worker = Worker(stage, s, make_consumer(s, group, [stage.input_topic]), make_producer(s), group)
    readiness = Readiness(kind, {"kafka": worker.assigned, **stage.ready_checks()}).start()
    health = m.HealthServer(s.metrics_host, s.metrics_port, kind, lambda: dict(readiness.state)).start()
    log.info("%s worker started; settings: %s", kind, s.redacted())
    worker.install_signal_handlers()
    try:
        worker.run()
    finally:
        readiness.stop()
        health.stop()


KINDS = ("segmentation", "embedding", "query")
USAGE = "usage: python -m workers.app [worker] segmentation|embedding|query"


def main(argv: Sequence[str] | None = None) -> int:
    """``[worker] KIND``: the leading ``worker`` keeps the image's arguments those of ``lookstream worker KIND``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["worker"]:
        args = args[1:]
    if args in ([], ["-h"], ["--help"]):
        print(USAGE)
        return 0
    if len(args) != 1 or args[0] not in KINDS:
        print(USAGE, file=sys.stderr)
        return 2
    run_worker(args[0])
    return 0

if __name__ == "__main__":
    sys.exit(main())
