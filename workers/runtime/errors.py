"""Whose fault is it? Three tiers, each handled its own way by the runtime (workers/runtime/retry.py):

- ``DependencyError``: a service is down; the batch is retried forever, partitions paused, nothing dead-lettered.
- ``TransientError``: this item may pass on a retry (an image host timing out); retried ``item_attempts`` times
  within the batch's retry budget, then dead-lettered. An error of no tier (a bug) is treated the same way.
- ``PoisonError``: the input itself is bad; dead-lettered at once.
"""


class DependencyError(RuntimeError):
    """A dependency (Triton, Milvus, Redis, broker) is unreachable or failing: not the input's fault."""

    def __init__(self, dependency: str, message: str = ""):
        super().__init__(message or f"{dependency} unavailable")
        self.dependency = dependency


class TransientError(RuntimeError):
    """This item failed for a reason that may pass (a remote host timing out): a bounded number of retries."""


class PoisonError(ValueError):
    """The input itself is bad; retrying will not help. ``category`` is a bounded metrics label."""

    def __init__(self, message: str, category: str = "invalid_input", attempts: int = 1, public: str | None = None):
        super().__init__(message)
        self.category = category
        self.attempts = attempts
        # What the sender may read (an error reply): never a server path or internal detail. The full
        # message goes to the dead letter and the logs, which only operators read.
        self.public = public if public is not None else message
