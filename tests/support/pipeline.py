"""The session's real services and one isolated pipeline (a ``stack.Namespace``) per test on them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from workers.local import stack
from workers.runtime.settings import Settings

# Short sessions: Tansu holds a join for ~session/2 (docs/local-services.md).
FAST_GROUP = {"LOOKSTREAM_SESSION_TIMEOUT_MS": "2000", "LOOKSTREAM_HEARTBEAT_INTERVAL_MS": "500"}


@dataclass
class Services:
    state: Path
    env: dict[str, str]
    services: dict[str, stack.Service]
    models_src: Path

    def settings(self, **overrides) -> Settings:
        return stack.settings_from_env(self.env, **overrides)


def start_services(state: Path, models_src: Path) -> Services:
    """Broker, redis-server, Milvus Lite and tritonserver on free ports (all stopped again if one fails)."""
    port = stack.free_port
    svcs = {
        "broker": stack.broker_service(state, port()),
        "redis": stack.redis_service(state, port()),
        "milvus": stack.milvus_service(state, port()),
        "triton": stack.triton_service(state, port(), port(), port(), models_src=models_src),
    }
    env = {**FAST_GROUP, **stack.start_services(svcs.values())}
    return Services(state, env, svcs, models_src)


class Pipeline(stack.Namespace):
    """A ``stack.Namespace`` on the session's services; ``services`` lets a test reach a service's process."""

    def __init__(self, services: Services, ns: str, env: dict[str, str]):
        super().__init__(ns, env, services.state)
        self.services = services


def new_pipeline(services: Services) -> Pipeline:
    """A fresh namespace: unique topics, groups and collection."""
    from workers.runtime.kafka_io import ensure_topics

    ns = f"t{uuid.uuid4().hex[:8]}"
    p = Pipeline(services, ns, stack.namespace_env(services.env, ns, LOOKSTREAM_BATCH_SIZE="8",
                                                   LOOKSTREAM_LOG_LEVEL="INFO"))
    ensure_topics(p.settings)
    return p
