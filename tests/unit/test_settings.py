"""LOOKSTREAM_* settings: list parsing, derived values, secrets never printed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts.models import DEFAULT_NON_GARMENT_LABELS, LABEL_IDS, LABELS
from workers.runtime.settings import Settings, load_settings, redact_url


def settings(**kw) -> Settings:
    return Settings(_env_file=None, **kw)


def test_defaults():
    s = settings()
    assert s.non_garment_labels == list(DEFAULT_NON_GARMENT_LABELS)
    assert s.allowed_image_formats == ["JPEG", "PNG", "WEBP"]
    assert s.batch_size == 16 and s.image_root is None


def test_csv_env_lists(monkeypatch):
    monkeypatch.setenv("LOOKSTREAM_NON_GARMENT_LABELS", " Background, Hair ,,Face ")
    monkeypatch.setenv("LOOKSTREAM_ALLOWED_IMAGE_FORMATS", "JPEG,PNG")
    s = settings()
    assert s.non_garment_labels == ["Background", "Hair", "Face"]
    assert s.allowed_image_formats == ["JPEG", "PNG"]


def test_json_env_lists(monkeypatch):
    monkeypatch.setenv("LOOKSTREAM_NON_GARMENT_LABELS", '["Background", "Bag"]')
    monkeypatch.setenv("LOOKSTREAM_ALLOWED_IMAGE_FORMATS", ' ["WEBP"] ')
    s = settings()
    assert s.non_garment_labels == ["Background", "Bag"]
    assert s.allowed_image_formats == ["WEBP"]


def test_single_value_and_empty_env_lists(monkeypatch):
    monkeypatch.setenv("LOOKSTREAM_ALLOWED_IMAGE_FORMATS", "PNG")
    monkeypatch.setenv("LOOKSTREAM_NON_GARMENT_LABELS", "")
    s = settings()
    assert s.allowed_image_formats == ["PNG"]
    assert s.non_garment_labels == []
    assert s.garment_label_ids == frozenset(range(len(LABELS)))


def test_lists_from_keyword_arguments():
    assert settings(allowed_image_formats="JPEG, BMP").allowed_image_formats == ["JPEG", "BMP"]
    assert settings(allowed_image_formats='["GIF"]').allowed_image_formats == ["GIF"]
    assert settings(non_garment_labels=["Hat"]).non_garment_labels == ["Hat"]
    assert load_settings(allowed_image_formats="PNG").allowed_image_formats == ["PNG"]


def test_dotenv_file_lists_and_values(tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text("LOOKSTREAM_ALLOWED_IMAGE_FORMATS=JPEG,WEBP\nLOOKSTREAM_BATCH_SIZE=5\n"
                   "LOOKSTREAM_IMAGE_ROOT=/data/images\nOTHER_THING=1\n")
    s = Settings(_env_file=env)
    assert s.allowed_image_formats == ["JPEG", "WEBP"]
    assert s.batch_size == 5
    assert s.image_root == Path("/data/images")
    monkeypatch.setenv("LOOKSTREAM_BATCH_SIZE", "7")  # the environment beats .env
    assert Settings(_env_file=env).batch_size == 7


def test_scalar_env_values_are_typed_and_checked(monkeypatch):
    monkeypatch.setenv("LOOKSTREAM_BATCH_SIZE", "32")
    monkeypatch.setenv("LOOKSTREAM_BACKOFF_INITIAL_S", "0.25")
    monkeypatch.setenv("LOOKSTREAM_BLANK_BACKGROUND", "true")
    monkeypatch.setenv("LOOKSTREAM_SECURITY_PROTOCOL", "SASL_SSL")
    s = settings()
    assert (s.batch_size, s.backoff_initial_s, s.blank_background, s.security_protocol) == (32, 0.25, True, "SASL_SSL")
    monkeypatch.setenv("LOOKSTREAM_BATCH_SIZE", "0")
    with pytest.raises(ValidationError, match="batch_size"):
        settings()
    monkeypatch.setenv("LOOKSTREAM_BATCH_SIZE", "8")
    monkeypatch.setenv("LOOKSTREAM_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ValidationError, match="security_protocol"):
        settings()


def test_garment_label_ids_exclude_body_parts():
    ids = settings().garment_label_ids
    names = {LABELS[i] for i in ids}
    assert names == {"Hat", "Sunglasses", "Upper-clothes", "Skirt", "Pants", "Dress", "Belt", "Left-shoe",
                     "Right-shoe", "Bag", "Scarf"}
    for body in ("Background", "Hair", "Face", "Left-leg", "Right-leg", "Left-arm", "Right-arm"):
        assert LABEL_IDS[body] not in ids
    custom = settings(non_garment_labels="Background,Bag").garment_label_ids
    assert LABEL_IDS["Bag"] not in custom and LABEL_IDS["Hair"] in custom and len(custom) == len(LABELS) - 2


def test_redacted_masks_secrets_and_url_passwords():
    s = settings(sasl_mechanism="PLAIN", sasl_username="svc", sasl_password="kafka-pw-123",
                 milvus_token="root:milvus-tok-456", redis_password="redis-pw-789",
                 redis_url="redis://user:secret-in-url@cache.internal:6379/0",
                 milvus_uri="https://admin:milvus-url-pw@milvus.internal:19530",
                 image_root="/data/img")
    r = s.redacted()
    assert r["sasl_password"] == "**********"
    assert r["milvus_token"] == "**********"
    assert r["redis_password"] == "**********"
    assert r["redis_url"] == "redis://user:**********@cache.internal:6379/0"
    assert r["milvus_uri"] == "https://admin:**********@milvus.internal:19530"
    assert r["sasl_username"] == "svc"
    assert r["image_root"] == "/data/img"
    text = json.dumps(r)  # printable as JSON: no SecretStr or Path objects left
    for secret in ("kafka-pw-123", "milvus-tok-456", "redis-pw-789", "secret-in-url", "milvus-url-pw"):
        assert secret not in text
    for secret in ("kafka-pw-123", "milvus-tok-456", "redis-pw-789"):  # SecretStr fields: masked in repr too
        assert secret not in repr(s) and secret not in str(s)


def test_redacted_unset_secrets():
    r = settings().redacted()
    assert r["sasl_password"] is None and r["milvus_token"] is None and r["redis_password"] is None
    assert r["redis_url"] == "redis://127.0.0.1:6379/0"
    assert settings(redis_password="").redacted()["redis_password"] == ""


@pytest.mark.parametrize("url,want", [
    ("redis://user:secret@host:6379/0", "redis://user:**********@host:6379/0"),
    ("redis://:secret@host", "redis://:**********@host"),
    ("rediss://u:p%40ss@h/1", "rediss://u:**********@h/1"),
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("redis://user@host", "redis://user@host"),
    ("http://127.0.0.1:19530", "http://127.0.0.1:19530"),
    ("a://x:1@h b://y:2@k", "a://x:**********@h b://y:**********@k"),
])
def test_redact_url(url, want):
    assert redact_url(url) == want


def test_kafka_common_plain():
    conf = settings(bootstrap_servers="b1:9092,b2:9092").kafka_common()
    assert conf == {"bootstrap_servers": ["b1:9092", "b2:9092"], "security_protocol": "PLAINTEXT"}


def test_kafka_common_with_sasl_and_ssl():
    conf = settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="svc",
                    sasl_password="pw", ssl_cafile="/etc/ca.pem").kafka_common()
    assert conf == {
        "bootstrap_servers": ["127.0.0.1:9092"], "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "svc", "sasl_plain_password": "pw",
        "ssl_cafile": "/etc/ca.pem",
    }


def test_kafka_common_sasl_from_env(monkeypatch):
    monkeypatch.setenv("LOOKSTREAM_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("LOOKSTREAM_SASL_USERNAME", "u")
    monkeypatch.setenv("LOOKSTREAM_SASL_PASSWORD", "env-pw")
    conf = settings().kafka_common()
    assert (conf["sasl_mechanism"], conf["sasl_plain_username"], conf["sasl_plain_password"]) == ("PLAIN", "u", "env-pw")
    assert settings(sasl_mechanism="PLAIN").kafka_common()["sasl_plain_password"] == "env-pw"


def test_every_list_setting_reads_csv_and_json_from_the_environment(monkeypatch):
    from workers.runtime.settings import Settings

    monkeypatch.setenv("LOOKSTREAM_FETCH_ALLOWED_HOSTS", "cdn.example.com, *.shop.example")
    monkeypatch.setenv("LOOKSTREAM_FETCH_ALLOW_HTTP_HOSTS", '["127.0.0.1"]')
    s = Settings()
    assert s.fetch_allowed_hosts == ["cdn.example.com", "*.shop.example"]
    assert s.fetch_allow_http_hosts == ["127.0.0.1"]


def test_load_precedence_environment_then_dotenv_then_stack_env(tmp_path, monkeypatch):
    """One load path (README "Commands"): environment > .env > the stack.env `stack up` wrote > defaults."""
    monkeypatch.chdir(tmp_path)
    stack_env = tmp_path / "stack.env"
    stack_env.write_text("# written by 'lookstream stack up'\nLOOKSTREAM_BOOTSTRAP_SERVERS=127.0.0.1:1111\n"
                         "LOOKSTREAM_REDIS_URL=redis://127.0.0.1:2222/0\nLOOKSTREAM_MILVUS_URI=http://127.0.0.1:3333\n"
                         "LOOKSTREAM_QUERY_METRICS_URL=http://127.0.0.1:4444\n")
    (tmp_path / ".env").write_text("LOOKSTREAM_REDIS_URL=redis://127.0.0.1:5555/0\n"
                                   "LOOKSTREAM_MILVUS_URI=http://127.0.0.1:6666\n")
    monkeypatch.setenv("LOOKSTREAM_MILVUS_URI", "http://127.0.0.1:7777")
    s = load_settings(stack_env=stack_env)
    assert s.bootstrap_servers == "127.0.0.1:1111"  # only the stack says it
    assert s.redis_url == "redis://127.0.0.1:5555/0"  # .env beats the stack
    assert s.milvus_uri == "http://127.0.0.1:7777"  # the environment beats both
    assert load_settings(stack_env=stack_env, milvus_uri="http://x:1").milvus_uri == "http://x:1"  # then overrides
    assert "LOOKSTREAM_BOOTSTRAP_SERVERS" not in os.environ  # read through sources, never written to the environment
    assert load_settings().bootstrap_servers == Settings.model_fields["bootstrap_servers"].default  # no stack: defaults
    assert load_settings(stack_env=tmp_path / "missing.env").redis_url == "redis://127.0.0.1:5555/0"


def test_kafka_client_kwargs_are_the_common_settings_without_servers():
    s = Settings(_env_file=None, bootstrap_servers="a:1,b:2", security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
                 sasl_username="u", sasl_password="p")
    assert s.kafka_client_kwargs() == {k: v for k, v in s.kafka_common().items() if k != "bootstrap_servers"}
    assert "bootstrap_servers" not in s.kafka_client_kwargs() and s.kafka_client_kwargs()["sasl_plain_password"] == "p"


def test_producers_are_idempotent_unless_the_broker_needs_at_least_once(monkeypatch):
    from workers.runtime.kafka_io import producer_conf

    on = producer_conf(settings())
    assert on["enable_idempotence"] is True and on["acks"] == "all"
    monkeypatch.setenv("LOOKSTREAM_PRODUCER_IDEMPOTENCE", "false")
    off = producer_conf(settings())
    assert off["enable_idempotence"] is False and off["acks"] == "all"
    assert off["max_in_flight_requests_per_connection"] == 1  # retries may duplicate, never reorder
