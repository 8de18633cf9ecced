"""Prometheus (promtool config, rules, rule tests, scrapes, alerts) and the Grafana dashboard and provisioning."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from support.deploy import ROOT, COMPOSE_FILE, PROM, GRAFANA, WORKERS, _dashboard_exprs, _alert_rules, _promtool, _check_metric_names


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


def test_alert_metrics_are_exported():
    _check_metric_names([r["expr"] for r in _alert_rules()], "alerts.yml")


def test_metric_name_check_can_fail():
    with pytest.raises(AssertionError, match="lookstream_messages_processed_total"):
        _check_metric_names(["rate(lookstream_messages_processed_total[5m])"], "a typo")
    with pytest.raises(AssertionError, match="nv_gpu_util"):
        _check_metric_names(["nv_gpu_util"], "a typo")


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
