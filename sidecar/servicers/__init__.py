"""One thin servicer per proto service: validate, pick the integration, map proto <-> domain."""

from sidecar.servicers.admin import AdminServicer
from sidecar.servicers.cache import CacheServicer
from sidecar.servicers.pubsub import PubSubServicer

__all__ = ["AdminServicer", "CacheServicer", "PubSubServicer"]
