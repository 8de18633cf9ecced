"""Whose fault is it? The runtime retries a DependencyError forever and dead-letters a PoisonError."""


class DependencyError(RuntimeError):
    """A dependency (Triton, Milvus, Redis, broker) is unreachable or failing: not the input's fault."""

    def __init__(self, dependency: str, message: str = ""):
        super().__init__(message or f"{dependency} unavailable")
        self.dependency = dependency


class PoisonError(ValueError):
    """The input itself is bad; retrying will not help. ``category`` is a bounded metrics label."""

    def __init__(self, message: str, category: str = "invalid_input", attempts: int = 1, public: str | None = None):
        super().__init__(message)
        self.category = category
        self.attempts = attempts
        # What the sender may read (an error reply): never a server path or internal detail. The full
        # message goes to the dead letter and the logs, which only operators read.
        self.public = public if public is not None else message
