"""One thin servicer per proto service: validate, pick the integration, map proto <-> domain."""

from sidecar.services.admin import AdminServicer
from sidecar.services.cache import CacheServicer
from sidecar.services.pubsub import PubSubServicer

__all__ = ["AdminServicer", "CacheServicer", "PubSubServicer"]
