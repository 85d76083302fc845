"""Map a service's configured `type` and `backend` to the factory that builds it.

Factories import their client library lazily, so start-up time and memory depend only on
the backends actually configured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sidecar.errors import FailedPrecondition

__all__ = ["create_backend", "registered_backends"]


def _memory_cache(settings: Any) -> Any:
    from sidecar.backends.cache.memory import MemoryCache

    return MemoryCache(max_keys=settings.max_keys)


def _memory_broker(settings: Any) -> Any:
    from sidecar.backends.pubsub.memory import MemoryBroker

    return MemoryBroker()


_FACTORIES: dict[tuple[str, str], Callable[[Any], Any]] = {
    ("cache", "memory"): _memory_cache,
    ("pubsub", "memory"): _memory_broker,
}


def registered_backends() -> list[tuple[str, str]]:
    """Every (type, backend) pair the sidecar can build."""
    return sorted(_FACTORIES)


def create_backend(settings: Any) -> Any:
    """Build the backend for one service's settings (which carry `type` and `backend`)."""
    factory = _FACTORIES.get((settings.type, settings.backend))
    if factory is None:
        raise FailedPrecondition(
            f"no backend {settings.backend!r} for service type {settings.type!r}",
            reason="UNSUPPORTED_BACKEND",
        )
    return factory(settings)
