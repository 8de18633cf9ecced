"""Ingest runs through ``lookstream ingest``'s own ``ingest()``: wall time, first outcome, garments per image."""

from __future__ import annotations

import sys
import time

import numpy as np

from bench.harness import Namespace, catalog
from contracts.models import DeadLetter, IndexedEvent
from workers.local.ingest import ingest


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_ingest(ns: Namespace, entries, tenant: str, timeout: float = 3600, progress: bool = True) -> dict:
    """``lookstream ingest``'s own ``ingest()``: publish ``entries``, wait for every outcome; wall time, first
    outcome, garments."""
    t0 = time.monotonic()
    last = [-1.0]

    def show(done: int) -> None:
        if progress and (done == len(entries) or time.monotonic() - last[0] > 5):
            last[0] = time.monotonic()
            log(f"    {done}/{len(entries)} outcomes after {time.monotonic() - t0:.0f} s")

    rep = ingest(ns.settings, entries, tenant, timeout=timeout, progress=show)
    outs = list(rep.outcomes.values())
    times = sorted(rep.arrival_s.values())
    indexed = [o for o in outs if isinstance(o, IndexedEvent)]
    garments = sum(len(o.labels) for o in indexed)
    wall = times[-1] if times else float("nan")
    return {
        "images": rep.published, "tenant": tenant, "publish_s": rep.publish_seconds, "wall_s": wall,
        "first_outcome_s": times[0] if times else None,
        "images_per_s": len(times) / wall if times else 0.0,
        "indexed": rep.indexed,
        "no_garments": rep.no_garments,
        "dead_letters": sum(1 for o in outs if isinstance(o, DeadLetter)),
        "missing": len(rep.missing),
        "garments": garments, "garments_per_image": garments / max(1, len(indexed)),
        "latency_ms_p50": float(np.percentile([o.latency_ms for o in indexed], 50)) if indexed else None,
    }


def warm_up(ns: Namespace, n: int) -> None:
    if n > 0:
        r = run_ingest(ns, catalog(n, seed=99, tenant="warm"), "warm", timeout=600, progress=False)
        log(f"  warm-up: {r['images']} images in {r['wall_s']:.1f} s")
