"""docker-compose.yml and .env.example: Compose v2 validates them, secrets, pinned images, wiring, settings."""

from __future__ import annotations

import os
import re

import pytest
import yaml
from support.deploy import ROOT, COMPOSE_FILE, ENV_EXAMPLE, K8S, WORKERS, _env_example, _k8s_docs, _image_pinned

from contracts import topics
from workers.runtime.settings import Settings


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
