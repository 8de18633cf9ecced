"""Paths, constants and parsers shared by the deployment checks in tests/deploy/."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from contracts import topics
from workers.runtime.metrics import EXPORTED_METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROM = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
WORKERS = ("segmentation", "embedding", "query")
# input topic and consumer group of each worker (KEDA triggers must agree)
WORKER_INPUT = {
    "segmentation": (topics.PRODUCTS, "TOPIC_PARTITIONS_PRODUCTS"),
    "embedding": (topics.GARMENTS, "TOPIC_PARTITIONS_GARMENTS"),
    "query": (topics.LOOK_REQUESTS, "TOPIC_PARTITIONS_REQUESTS"),
}
# Metrics of other exporters that the alerts / dashboard may use (a typo in one of them must fail too).
TRITON_METRICS = frozenset({
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count", "nv_inference_exec_count",
    "nv_inference_request_duration_us", "nv_inference_queue_duration_us", "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us", "nv_inference_compute_output_duration_us",
    "nv_inference_pending_request_count", "nv_gpu_utilization", "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes", "nv_gpu_power_usage", "nv_gpu_power_limit", "nv_energy_consumption",
    "nv_cpu_utilization", "nv_cpu_memory_total_bytes", "nv_cpu_memory_used_bytes",
})
KAFKA_EXPORTER_METRICS = frozenset({
    "kafka_consumergroup_lag", "kafka_consumergroup_lag_sum", "kafka_consumergroup_current_offset",
    "kafka_topic_partition_current_offset", "kafka_brokers",
})




def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v
    return out


def _k8s_docs() -> list[tuple[Path, dict]]:
    docs = []
    for f in sorted(K8S.glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d is not None:
                docs.append((f, d))
    return docs


def _image_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.rsplit(":", 1)[1]
    return bool(tag) and tag != "latest" and "$" not in tag


def _promql_metric_names(expr: str) -> set[str]:
    return set(re.findall(r"(?<![A-Za-z0-9_:])((?:lookstream|nv|kafka)_[A-Za-z0-9_]+)", expr))


def _dashboard_exprs(dash: dict) -> list[str]:
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if var.get("type") == "query" and q:
            exprs.append(q)
    return exprs


def _alert_rules() -> list[dict]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def _promtool() -> str:
    exe = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if not exe:
        pytest.fail("promtool not found (apt-get install prometheus)")
    return exe


def _stages(dockerfile: Path) -> list[dict]:
    """FROM stages with their base, alias, USER and whether they define an entrypoint/cmd."""
    stages: list[dict] = []
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            base = parts[0]
            alias = parts[2] if len(parts) >= 3 and parts[1].lower() == "as" else None
            parent = next((s for s in stages if s["alias"] == base), None)
            stages.append({"base": base, "alias": alias, "user": parent["user"] if parent else None,
                           "runs": parent["runs"] if parent else False, "parent": parent})
        elif instr == "USER" and stages:
            stages[-1]["user"] = rest.strip()
        elif instr in ("CMD", "ENTRYPOINT") and stages:
            stages[-1]["runs"] = True
    return stages


def _check_metric_names(exprs: list[str], where: str):
    assert exprs, f"no expressions found in {where}"
    unknown = set()
    for e in exprs:
        for name in _promql_metric_names(e):
            ok = (name in EXPORTED_METRIC_NAMES if name.startswith("lookstream_")
                  else name in TRITON_METRICS if name.startswith("nv_") else name in KAFKA_EXPORTER_METRICS)
            if not ok:
                unknown.add(name)
    assert not unknown, f"{where} uses metrics nobody exports: {sorted(unknown)}"


API_VERSIONS = {
    "Namespace": "v1", "ConfigMap": "v1", "Service": "v1", "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1", "Job": "batch/v1", "PodDisruptionBudget": "policy/v1",
    "ScaledObject": "keda.sh/v1alpha1",
}
