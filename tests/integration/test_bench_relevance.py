"""`python -m bench relevance --quick` runs end to end (its own embedded stack): machinery only, no quality bars."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_relevance_quick_runs_and_reports_every_part():
    results = ROOT / "bench" / "RESULTS.md"
    before = results.read_text() if results.exists() else None
    proc = subprocess.run([sys.executable, "-m", "bench", "relevance", "--quick", "--products", "12", "--looks", "6",
                           "--warm", "0"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for title in ("per garment label", "pipeline fidelity", "ranking strategies", "hard distractors", "garment rules"):
        assert f"== relevance: {title}" in proc.stdout
    out = json.loads((ROOT / "bench" / "out" / "relevance-segformer-resnet50-random-quick.json").read_text())
    d, ing = out["dataset"], out["ingest"]
    assert d["products"] == 12 and d["looks"] == 6 and d["shop_images"] >= 12
    # every product got exactly one outcome, and every look one reply
    assert ing["indexed"] + ing["garment_not_found"] + ing["no_garments"] == 12 and ing["other"] == 0
    assert sum(out["reply_status"].values()) == 6 and "no reply" not in out["reply_status"]
    assert out["models"]["dim"] > 0 and out["models"]["embedder"] == "resnet50"
    for side in ("pipeline", "reference"):
        o = out[side]["overall"]
        assert o["garments"] == d["truth_garments"] > 0
        for k in ("det_recall", "r@1", "r@5", "r@10", "r@20", "map@10", "chance@10"):
            assert 0.0 <= o[k] <= 1.0, (side, k, o[k])
        assert o["r@1"] <= o["r@5"] <= o["r@10"] <= o["r@20"]
    assert out["reference"]["overall"]["mask_iou"] is not None
    assert set(out["strategies"]) == {"first_place_votes", "lowest_total_distance", "most_common_overall"}
    for kind, t in out["twins"].items():
        assert kind in ("colour", "pattern") and t["ahead"] <= t["listed"] <= t["garments"], (kind, t)
    assert len(out["rules"]) >= 5 and out["rules"][0]["rules"].startswith("label_sum")
    assert (results.read_text() if results.exists() else None) == before  # --quick never touches the results
