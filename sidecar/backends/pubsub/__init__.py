"""The pub/sub capability: the `PubSubBackend` protocol, its domain types, and its backends."""

from sidecar.backends.pubsub.base import (
    Dropped,
    GlobPattern,
    Message,
    PubSubBackend,
    Subscription,
    SubscriptionEvent,
    compile_glob,
    glob_match,
)
from sidecar.backends.pubsub.memory import MemoryBroker

__all__ = [
    "Dropped",
    "GlobPattern",
    "MemoryBroker",
    "Message",
    "PubSubBackend",
    "Subscription",
    "SubscriptionEvent",
    "compile_glob",
    "glob_match",
]
