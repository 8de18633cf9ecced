"""One typed settings object per process, from ``LOOKSTREAM_*`` environment variables (and ``.env``).

Secrets are ``SecretStr`` (or URLs whose password is masked) so printing the settings never leaks them.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, DotEnvSettingsSource, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from contracts import topics
from contracts.models import DEFAULT_NON_GARMENT_LABELS, MAX_RECORD_BYTES  # noqa: F401  (workers import it from here)


def _csv(v: object) -> object:
    """List settings accept ``a,b,c`` as well as a JSON list."""
    if isinstance(v, str):
        v = v.strip()
        if v.startswith("["):
            return json.loads(v)
        return [x.strip() for x in v.split(",") if x.strip()]
    return v


CsvList = Annotated[list[str], NoDecode]
_CSV_FIELDS = ("non_garment_labels", "allowed_image_formats", "fetch_allowed_hosts", "fetch_allow_http_hosts")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOKSTREAM_", env_file=".env", extra="ignore")

    # --- Kafka
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    topic_products: str = topics.PRODUCTS
    topic_garments: str = topics.GARMENTS
    topic_indexed: str = topics.INDEXED
    topic_look_requests: str = topics.LOOK_REQUESTS
    reply_topic_prefix: str = topics.LOOK_REPLIES_PREFIX
    topic_partitions: int = 4
    group_id_prefix: str = "lookstream"  # consumer group = <prefix>-<worker kind>
    # Tansu holds a join for ~session/2: 6000/1000 gives ~3 s joins and ~9 s fail-over (docs/local-services.md).
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    max_poll_interval_ms: int = 300_000

    # --- Batching and retries (the worker runtime)
    batch_size: int = Field(16, ge=1, le=1024, description="max records polled and processed as one batch")
    poll_timeout_ms: int = 200
    # How long the broker may hold a fetch that has no data. kafka-python's default (500) added ~125 ms p50 per
    # hop on Tansu (a record arriving meanwhile waits for the timeout); 20 ms: ~8 ms p50. A look's queueing +
    # delivery went from 259 to 25 ms (bench/RESULTS.md, fastpath).
    fetch_max_wait_ms: int = Field(20, ge=1, le=500)
    # Off only for a broker whose idempotent producer loses records: Tansu 0.6.0 on S3, after kill -9, answers a
    # retried batch it never stored as already written (bench/broker_acks.py). Off = at-least-once, one request in
    # flight per connection (order kept); the pipeline's keyed, idempotent writes absorb the duplicates.
    producer_idempotence: bool = Field(True, description="idempotent producers (off: at-least-once, see bench/broker_acks.py)")
    item_attempts: int = Field(3, ge=1, description="tries for an item whose error may be transient, then DLQ")
    batch_retry_budget_s: float = Field(
        60.0, gt=0, description="time the item-by-item retry of one batch may take; kept below max_poll_interval_ms")
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0

    # --- Triton
    triton_url: str = "127.0.0.1:8001"
    triton_timeout_s: float = 60.0
    triton_ssl: bool = False
    segformer_model: str = "segformer"
    # The Triton embedding model (resnet50 | efficientnet_lite0); its dimension and identity come from the server.
    embed_model: str = "resnet50"
    # S the stack renders the segmenter at (the workers letterbox to the S in the served model config).
    segformer_size: int = 512
    crop_size: int = 256
    embed_batch: int = 32
    # The embedded stack's tritonserver (workers/local/model_repo.py render_repository): what the CPU instances run.
    model_runtime: Literal["auto", "torch", "onnxruntime", "openvino"] = Field(
        "auto", description="auto = each model's measured fastest runtime on its ONNX file (torch without one)")
    model_threads: int = Field(1, ge=1, le=64, description="intra-op threads per model instance (1 on 2 cores)")
    model_instances: int = Field(1, ge=1, le=16, description="instances per model")
    embedder_int8: bool = Field(False, description="serve the embedder's dynamic INT8 ONNX variant (costs recall)")

    # --- Garments
    non_garment_labels: CsvList = Field(default_factory=lambda: list(DEFAULT_NON_GARMENT_LABELS))
    min_mask_fraction: float = Field(0.005, ge=0, le=1, description="garment area / image area below which it is noise")
    mask_open_fraction: float = Field(
        0.02, ge=0, le=0.2, description="open garment masks with a square of this fraction of the shorter side (0 = off)")
    blank_background: bool = Field(False, description="grey out pixels outside the garment mask in the crop")
    # How a label's pixels become one garment object (workers.media.garments.GarmentRules; chosen on bench relevance).
    garment_rule: Literal["components", "label_sum"] = Field(
        "components", description="components: the largest connected region and those near it; label_sum: the seed")
    garment_merge_gap_fraction: float = Field(
        0.02, ge=0, le=1, description="regions this close (fraction of the shorter side) to a garment join it")
    garment_min_region_fraction: float = Field(
        0.0005, ge=0, le=1, description="connected regions smaller than this (of the image area) are specks")
    small_garment_min_fraction: float = Field(
        0.003, ge=0, le=1, description="min_mask_fraction for small garments (hats, bags, sunglasses, shoes...)")

    # --- Images
    max_image_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    min_image_side: int = 16
    allowed_image_formats: CsvList = Field(default_factory=lambda: ["JPEG", "PNG", "WEBP"])
    image_root: Path | None = Field(None, description="file:// image URIs must resolve under this folder")
    # Remote images (workers/media/fetch.py): https only, to these hosts ("*.cdn.example" = any subdomain), public IPs.
    fetch_allowed_hosts: CsvList = Field(default_factory=list, description="empty = https/s3 fetching disabled")
    fetch_timeout_s: float = Field(10.0, gt=0, description="total time for one image, redirects included")
    fetch_max_redirects: int = Field(3, ge=0, le=10)
    fetch_s3_endpoint: str | None = Field(None, description="s3://b/k -> <endpoint>/b/k over https; unset = s3 off")
    fetch_ca_file: str | None = Field(None, description="extra CA bundle for image hosts (default: system CAs)")
    # Test-only: plain http for these hosts, and loopback addresses. Never set them in production.
    fetch_allow_http_hosts: CsvList = Field(default_factory=list)
    fetch_allow_loopback: bool = False

    # --- Milvus
    milvus_uri: str = "http://127.0.0.1:19530"
    milvus_token: SecretStr | None = None
    # Base name: the collection used is <base>__<embed model>_v<version>_<weights id> (vectors of two models never mix)
    milvus_collection: str = "garments"
    # Full Milvus: tenant is the partition key. Milvus Lite 2.5 rejects filters on a partition key.
    milvus_partition_key: bool = False
    milvus_index: Literal["FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX"] = "FLAT"
    milvus_nlist: int = 128
    milvus_nprobe: int = 16
    milvus_hnsw_ef: int = 128
    # Searches do not wait for the server's time tick (Strong: ~200 ms on a Milvus server, Bounded ~2 ms);
    # deleted products are kept out of replies by the product states in Redis (workers/adapters/product_state.py).
    milvus_search_consistency: Literal["Strong", "Bounded", "Session", "Eventually"] = "Bounded"
    # Every Milvus call's deadline: a frozen or stalled server is an outage (retried with backoff, partitions
    # paused), never a worker blocked inside one call past the consumer's poll interval.
    milvus_timeout_s: float = Field(10.0, gt=0)

    # --- Redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: SecretStr | None = None
    redis_timeout_s: float = 2.0
    # How long a delete tombstone keeps older events (a DLQ replay, a late retry) from bringing a product back.
    tombstone_retention_s: int = Field(7 * 24 * 3600, ge=60)

    # --- Process
    metrics_port: int = Field(0, description="/metrics, /healthz, /readyz; 0 = pick a free port")
    metrics_host: str = "127.0.0.1"
    log_json: bool = False
    log_level: str = "INFO"
    state_dir: Path = Path(".lookstream")
    defer_pandas: bool = Field(True, description="query worker: import pandas (pymilvus's) only on first use (-35 MB)")

    @model_validator(mode="after")
    def _retry_budget_below_poll_interval(self) -> "Settings":
        if self.batch_retry_budget_s * 1000 >= self.max_poll_interval_ms / 2:
            raise ValueError(f"batch_retry_budget_s ({self.batch_retry_budget_s:g} s) must stay below half of "
                             f"max_poll_interval_ms ({self.max_poll_interval_ms} ms)")
        return self

    @field_validator("non_garment_labels", "allowed_image_formats", "fetch_allowed_hosts", "fetch_allow_http_hosts",
                     mode="before")
    @classmethod
    def _lists(cls, v: object) -> object:
        return _csv(v)

    # --- derived
    @cached_property
    def garment_label_ids(self) -> frozenset[int]:
        from contracts.models import LABELS

        skip = set(self.non_garment_labels)
        return frozenset(i for i, name in enumerate(LABELS) if name not in skip)

    @property
    def garment_rules(self):
        from workers.media.garments import GarmentRules

        return GarmentRules(mode=self.garment_rule, min_region_fraction=self.garment_min_region_fraction,
                            merge_gap_fraction=self.garment_merge_gap_fraction,
                            small_min_fraction=self.small_garment_min_fraction)

    def kafka_common(self) -> dict:
        """Connection settings shared by producers, consumers and admin clients."""
        conf: dict = {"bootstrap_servers": self.bootstrap_servers.split(","), "security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            conf.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password.get_secret_value() if self.sasl_password else None,
            )
        if self.ssl_cafile:
            conf["ssl_cafile"] = self.ssl_cafile
        return conf

    def kafka_client_kwargs(self) -> dict:
        """``kafka_common`` without the servers: what the contracts' clients take beside ``bootstrap_servers``."""
        return {k: v for k, v in self.kafka_common().items() if k != "bootstrap_servers"}

    def redacted(self) -> dict:
        """The effective settings with secrets masked, for printing and logs."""
        out = {}
        for k, v in self.model_dump().items():
            if isinstance(v, SecretStr):
                v = "**********" if v.get_secret_value() else ""
            elif isinstance(v, str):
                v = redact_url(v)
            elif isinstance(v, Path):
                v = str(v)
            out[k] = v
        return out


def redact_url(s: str) -> str:
    """Mask the password in ``scheme://user:password@host`` strings."""
    return re.sub(r"(://[^:/@\s]*:)[^@/\s]+@", r"\1**********@", s)


def load_settings(stack_env: Path | None = None, **overrides) -> Settings:
    """The one load path, through pydantic-settings' own sources. Precedence: ``overrides`` > the environment >
    ``.env`` > ``stack_env`` (the endpoints file ``lookstream stack up`` wrote, when given) > the defaults."""
    if stack_env is None:
        return Settings(**overrides)
    return _with_stack_env(Path(stack_env))(**overrides)


def _with_stack_env(stack_env: Path) -> type[Settings]:
    class StackSettings(Settings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                       file_secret_settings):
            return (init_settings, env_settings, dotenv_settings,
                    DotEnvSettingsSource(settings_cls, env_file=stack_env), file_secret_settings)

    return StackSettings
