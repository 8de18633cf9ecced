"""The Milvus server as the workers meet it: the client, its version, and which errors are an outage."""

from __future__ import annotations

import logging
import re

from workers.runtime.errors import DependencyError

# Partition-key routing of upsert was broken before milvus-io/milvus#30772 (issue #30607: rows upserted into
# the wrong partition, tenant-filtered reads lose them); 2.3.x after its backport still returned deleted rows
# for varchar primary keys with a partition key (#31548). 2.4.0 is the first line accepted for partition keys.
MIN_PARTITION_KEY_VERSION = (2, 4, 0)


# --------------------------------------------------------------------------- error classes


class MilvusUnsupported(DependencyError):
    """The Milvus server cannot be used as configured (version, schema). Not the input's fault: the worker
    retries (and stays not ready) until an operator fixes the server or the settings; nothing is dead-lettered."""

    def __init__(self, message: str):
        super().__init__("milvus", message)


# Milvus server error codes (pkg/util/merr) that mean "the service cannot do it now", not "this request is bad":
# not ready / unavailable / memory, request, disk, rate, quota limits / time tick delay / resources; collection or
# partition not (fully) loaded or recovering; replica, channel, segment, node not available; IO failures;
# message-queue errors; canceled / timeout. Everything else (invalid parameter 1100, bad expression 65535, ...)
# is the request's fault and propagates as is.
MILVUS_OUTAGE_CODES = frozenset({
    1, 2, 3, 4, 7, 8, 9, 11, 12, 101, 103, 106, 201, 202, 305, 401, 500, 501, 503, 504, 600, 601, 602, 604,
    901, 902, 903, 904, 905, 906, 1001, 1002, 1302, 1303, 10000, 10001,
})


def _outage_grpc_codes():
    import grpc

    return {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED}


def is_milvus_outage(e: BaseException) -> bool:
    """Classify by gRPC status and Milvus error code, never by message text."""
    import grpc
    from pymilvus.exceptions import MilvusException

    if isinstance(e, grpc.RpcError) and hasattr(e, "code"):
        return e.code() in _outage_grpc_codes()
    if isinstance(e, MilvusException):
        code = e.code
        if isinstance(code, grpc.StatusCode):  # pymilvus' retry wrapper keeps the gRPC status as the code
            return code in _outage_grpc_codes()
        return isinstance(code, int) and code in MILVUS_OUTAGE_CODES
    return isinstance(e, (ConnectionError, TimeoutError))



def _milvus_call(what: str):
    """A Milvus outage is a DependencyError; anything else propagates as is.

    After one, the client is dropped: a gRPC channel the server closed (restart, GOAWAY) stays broken, and
    a released collection is loaded again on reconnect, so the retry starts from a fresh client.
    """

    def deco(fn):
        def wrapper(self, *a, **kw):
            try:
                return fn(self, *a, **kw)
            except DependencyError:
                raise
            except Exception as e:
                if is_milvus_outage(e):
                    self.close()
                    raise DependencyError("milvus", f"{what}: {e}") from e
                raise

        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        return wrapper

    return deco


# pymilvus pings every 10 s even when idle; gRPC servers (Milvus Lite among them) answer an idle
# client that pings more often than every 5 min with GOAWAY "too_many_pings" and the channel breaks.
_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": False}


def milvus_client(uri: str, token: str = "", timeout: float = 10):
    from pymilvus import MilvusClient

    return MilvusClient(uri=uri, token=token, timeout=timeout, grpc_options=_GRPC_OPTIONS)


def server_version(client) -> str | None:
    """The server's version string ("v2.3.5-lite", "v2.5.16"), or None for Milvus Lite 2.5 (no GetVersion)."""
    import grpc

    quiet = logging.getLogger("pymilvus.decorators")  # it logs Lite's UNIMPLEMENTED as an ERROR with a traceback
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        return client.get_server_version()
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNIMPLEMENTED:
            return None
        raise
    finally:
        quiet.level = level


def parse_version(v: str) -> tuple[int, int, int] | None:
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", v or "")
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def check_server(version: str | None, partition_key: bool) -> None:
    """Refuse partition-key mode where the server mishandles it; raises MilvusUnsupported."""
    if not partition_key:
        return
    need = ".".join(map(str, MIN_PARTITION_KEY_VERSION))
    if version is None:
        raise MilvusUnsupported(
            "LOOKSTREAM_MILVUS_PARTITION_KEY=1 needs a Milvus server >= " + need + "; this is Milvus Lite, which "
            "rejects filters on a partition key: set LOOKSTREAM_MILVUS_PARTITION_KEY=0")
    parsed = parse_version(version)
    if parsed is None or parsed < MIN_PARTITION_KEY_VERSION:
        raise MilvusUnsupported(
            f"Milvus {version} routes upserts wrongly with a partition key (milvus-io/milvus#30607, fixed by "
            f"PR #30772): tenant-filtered reads would lose rows. Partition-key mode needs Milvus >= {need}; "
            "upgrade the server or set LOOKSTREAM_MILVUS_PARTITION_KEY=0 (tenant filters still isolate tenants)")

