"""The pub/sub capability: the `PubSubBackend` protocol, its domain types, and its backends.

Reliable topics (at-least-once, consumer groups, dead letters) are the optional
`ReliablePubSub` protocol of `reliable.py`; `redis_streams.py` implements it and is imported
only where Redis is configured.
"""

from sidecar.backends.pubsub.base import (
    Dropped,
    Gap,
    GlobPattern,
    Message,
    PubSubBackend,
    Subscription,
    SubscriptionEvent,
    compile_glob,
    glob_match,
)
from sidecar.backends.pubsub.memory import MemoryBroker
from sidecar.backends.pubsub.reliable import (
    DeadLetter,
    ReliableMessage,
    ReliablePubSub,
    ReliableSubscription,
    Replayed,
    ReplayOutcome,
)

__all__ = [
    "DeadLetter",
    "Dropped",
    "Gap",
    "GlobPattern",
    "MemoryBroker",
    "Message",
    "PubSubBackend",
    "ReliableMessage",
    "ReliablePubSub",
    "ReliableSubscription",
    "ReplayOutcome",
    "Replayed",
    "Subscription",
    "SubscriptionEvent",
    "compile_glob",
    "glob_match",
]
