"""Redis product states: the version of the last applied event per ``tenant:product_id``, its garment ids
and metadata, or a delete tombstone (see milvus_index.py for why they make the fast paths safe)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from contracts.models import ProductMetadata

from workers.adapters.garment_rows import Hit
from workers.runtime.errors import DependencyError
from workers.runtime.settings import Settings

log = logging.getLogger(__name__)

# Redis error codes (the first word of an error reply) that mean the server cannot serve now: failover to a
# read-only replica, out of memory (noeviction), loading its dataset, busy in a script, persistence failure,
# cluster states. redis-py maps some to classes (ReadOnlyError, OutOfMemoryError, BusyLoadingError, ...) and
# strips the code from the message; the others stay plain ResponseErrors that start with their code.
REDIS_OUTAGE_CODES = frozenset({"READONLY", "OOM", "LOADING", "BUSY", "MISCONF", "MASTERDOWN", "CLUSTERDOWN",
                                "TRYAGAIN", "NOREPLICAS"})


def is_redis_outage(e: BaseException) -> bool:
    import redis.exceptions as rx

    if isinstance(e, (rx.ConnectionError, rx.TimeoutError, OSError)):  # incl. BusyLoadingError, auth failures
        return True
    if isinstance(e, (rx.ReadOnlyError, rx.OutOfMemoryError, rx.ClusterDownError, rx.TryAgainError,
                      rx.NoPermissionError)):  # a missing ACL is the operator's to fix, not the input's
        return True
    if type(e) is rx.ResponseError and e.args:
        return str(e.args[0]).split(" ", 1)[0] in REDIS_OUTAGE_CODES
    return False


# --------------------------------------------------------------------------- product states (Redis)


@dataclass(frozen=True)
class ProductState:
    """What the last applied event left: its version, the product's garment ids and metadata, or a tombstone.

    ``garment_ids is None`` marks an entry written by an older lookstream (plain metadata, no version)."""

    version: str
    deleted: bool = False
    garment_ids: tuple[str, ...] | None = ()
    metadata: ProductMetadata | None = None

    def to_json(self) -> str:
        return json.dumps({"v": self.version, "deleted": self.deleted, "ids": list(self.garment_ids or ()),
                           "md": self.metadata.model_dump(mode="json") if self.metadata else None})

    @classmethod
    def from_json(cls, raw: bytes | str) -> ProductState:
        d = json.loads(raw)
        if "v" not in d:  # an older entry: the product's metadata alone
            return cls(version="", garment_ids=None, metadata=ProductMetadata.model_validate(d))
        md = ProductMetadata.model_validate(d["md"]) if d.get("md") else None
        return cls(version=str(d["v"]), deleted=bool(d.get("deleted")), garment_ids=tuple(d.get("ids") or ()),
                   metadata=md)

    def vouches_for(self, hit: Hit) -> bool:
        """Is this Milvus hit part of the product as this state knows it?"""
        if hit.version > self.version:  # written by a newer event whose state is on its way
            return True
        if self.deleted:
            return False
        return self.garment_ids is None or hit.id in self.garment_ids


class MetadataCache:
    """Product states per ``tenant:product_id`` in Redis: written by the embedding worker, read at query time."""

    PREFIX = "lookstream:product:"

    def __init__(self, s: Settings):
        import redis

        self.s = s
        self.redis = redis.Redis.from_url(
            s.redis_url, password=s.redis_password.get_secret_value() if s.redis_password else None,
            socket_timeout=s.redis_timeout_s, socket_connect_timeout=s.redis_timeout_s,
        )

    def key(self, tenant: str, product_id: str) -> str:
        return f"{self.PREFIX}{tenant}:{product_id}"

    def _call(self, what: str, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except Exception as e:
            if is_redis_outage(e):
                raise DependencyError("redis", f"{what}: {type(e).__name__}: {e}") from e
            raise

    # --- states
    def get_states(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], ProductState]:
        """The states found (one MGET); an unreadable entry counts as missing. DependencyError on an outage."""
        if not keys:
            return {}
        raw = self._call("mget", self.redis.mget, [self.key(t, p) for t, p in keys])
        out = {}
        for k, val in zip(keys, raw):
            if val is not None:
                try:
                    out[k] = ProductState.from_json(val)
                except (ValueError, KeyError, TypeError):
                    log.warning("unreadable product state for %s:%s; treated as unknown", *k)
        return out

    def put_states(self, states: dict[tuple[str, str], ProductState]) -> None:
        """All states in one pipelined round trip; tombstones expire after the retention."""
        if not states:
            return
        pipe = self.redis.pipeline(transaction=False)
        for (t, p), st in states.items():
            pipe.set(self.key(t, p), st.to_json(), ex=self.s.tombstone_retention_s if st.deleted else None)
        self._call("set", pipe.execute)

    # --- metadata views (tests, tools)
    def get_many(self, tenant: str, product_ids: list[str]) -> dict[str, ProductMetadata]:
        """Metadata of the live products among these ids; raises DependencyError when Redis is down."""
        states = self.get_states([(tenant, p) for p in product_ids])
        return {p: st.metadata for (_t, p), st in states.items() if not st.deleted and st.metadata is not None}

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except Exception:
            return False


# --------------------------------------------------------------------------- the query worker's filter


def live_hits(hits: list[Hit], states: dict[str, ProductState], confirmed: set[str]) -> list[Hit]:
    """The hits a reply may show: vouched for by their product's state, or (product unknown to Redis)
    confirmed to exist by a Strong read (``confirmed`` row ids)."""
    out = []
    for h in hits:
        st = states.get(h.product_id)
        if (st.vouches_for(h) if st is not None else h.id in confirmed):
            out.append(h)
    return out


def cached_metadata(states: dict[str, ProductState] | None, hit: Hit) -> ProductMetadata | None:
    """The metadata Redis holds for this hit's product, when it is at least as new as the hit's row."""
    st = states.get(hit.product_id) if states else None
    return st.metadata if st is not None and not st.deleted and st.version >= hit.version else None
