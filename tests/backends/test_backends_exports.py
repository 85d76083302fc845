"""Pin the public surface of the backend packages: servicers are written against it."""

from __future__ import annotations

import importlib

import pytest

EXPORTS = {
    "sidecar.backends.cache": [
        "CACHE_FAMILIES",
        "MISS",
        "CacheBackend",
        "CacheOp",
        "DeleteOp",
        "ExistsOp",
        "ExpireOp",
        "GetOp",
        "HashFamily",
        "IncrementOp",
        "ListEnd",
        "ListFamily",
        "MemoryCache",
        "OpResult",
        "SetCondition",
        "SetFamily",
        "SetOp",
        "check_ttl",
        "family_features",
        "hashes_of",
        "lists_of",
        "run_batch_sequentially",
        "sets_of",
    ],
    "sidecar.backends.pubsub": [
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
    ],
}


@pytest.mark.parametrize("module_name", sorted(EXPORTS))
def test_package_exports_exactly_the_pinned_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__all__ == EXPORTS[module_name]


@pytest.mark.parametrize("module_name", sorted(EXPORTS))
def test_every_exported_name_exists(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert [name for name in module.__all__ if not hasattr(module, name)] == []
