"""Topic names in one place. Every input topic has a dead-letter twin: ``<topic>.dlq``."""

PRODUCTS = "catalog.products"
GARMENTS = "catalog.garments"
INDEXED = "catalog.indexed"
LOOK_REQUESTS = "looks.requests"
# Replies go to a topic the client names; it must start with this prefix (the query worker
# refuses anything else, so a request cannot make it write into an internal topic).
LOOK_REPLIES_PREFIX = "looks.replies"
DEFAULT_LOOK_REPLIES = LOOK_REPLIES_PREFIX

DLQ_SUFFIX = ".dlq"


def dlq(topic: str) -> str:
    return topic + DLQ_SUFFIX


INTERNAL_TOPICS = (PRODUCTS, GARMENTS, INDEXED, LOOK_REQUESTS)
ALL_TOPICS = (*INTERNAL_TOPICS, DEFAULT_LOOK_REPLIES, *(dlq(t) for t in (PRODUCTS, GARMENTS, LOOK_REQUESTS)))
