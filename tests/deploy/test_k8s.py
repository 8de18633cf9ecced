"""The Kubernetes manifests: kustomization, required fields, settings, schemas."""

from __future__ import annotations

import os

import pytest
import yaml
from support.deploy import ROOT, K8S, WORKERS, WORKER_INPUT, API_VERSIONS, _env_example, _k8s_docs

from workers.runtime.settings import Settings


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
