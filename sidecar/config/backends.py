"""The backend table: every (service type, backend) the sidecar can build, and the module
that declares its spec (`SPEC`, a `sidecar.backends.spec.BackendSpec`, beside its code).

It is one line per backend. The config refuses a `backend:` not listed for the service's
`type` (with the valid names); `sidecar.backends.registry` imports the module of a listed
backend only when a service uses it. It lives here, below the backends, so that loading a
config never imports a client library.
"""

from __future__ import annotations

__all__ = ["BACKENDS", "BACKEND_CONNECTIONS", "backend_names"]

# ==== BACKENDS: one line per backend, (type, backend) -> the module declaring its SPEC ======
BACKENDS: dict[tuple[str, str], str] = {
    ("cache", "memory"): "sidecar.backends.cache.memory",
    ("cache", "redis"): "sidecar.backends.cache.redis",
    ("pubsub", "memory"): "sidecar.backends.pubsub.memory",
    ("pubsub", "redis"): "sidecar.backends.pubsub.redis",
    ("pubsub", "rabbitmq"): "sidecar.backends.pubsub.rabbitmq",
    ("pubsub", "nats"): "sidecar.backends.pubsub.nats",
    ("pubsub", "kafka"): "sidecar.backends.pubsub.kafka",
    ("pubsub", "mqtt"): "sidecar.backends.pubsub.mqtt",
    ("sql", "postgres"): "sidecar.backends.sql.postgres",
    ("sql", "sqlite"): "sidecar.backends.sql.sqlite",
    ("cloud", "aws"): "sidecar.backends.cloud.aws",
    ("objectstore", "local"): "sidecar.backends.objectstore.local",
    ("objectstore", "s3"): "sidecar.backends.objectstore.s3",
    ("api", "http"): "sidecar.backends.api.http",
    ("graphql", "http"): "sidecar.backends.graphql.http",
    ("websocket", "upstream"): "sidecar.backends.websocket.upstream",
    ("queue", "memory"): "sidecar.backends.queue.memory",
    ("queue", "sqs"): "sidecar.backends.queue.sqs",
}
# ==== end of BACKENDS =======================================================================

# The connection type each backend runs on (its spec's `connection_type`); a backend not
# listed talks to no shared upstream. `sidecar.connections` opens one connection of this type
# per name a service uses (its `connection:`, or its inline settings).
BACKEND_CONNECTIONS: dict[tuple[str, str], str] = {
    ("cache", "redis"): "redis",
    ("pubsub", "redis"): "redis",
    ("pubsub", "rabbitmq"): "rabbitmq",
    ("pubsub", "nats"): "nats",
    ("pubsub", "kafka"): "kafka",
    ("pubsub", "mqtt"): "mqtt",
    ("cloud", "aws"): "aws",
    ("objectstore", "s3"): "aws",
    ("api", "http"): "http",
    ("sql", "postgres"): "postgres",
    ("sql", "sqlite"): "sqlite",
    ("graphql", "http"): "http",
    ("websocket", "upstream"): "websocket",
    ("queue", "sqs"): "aws",
    # ai_model services are built by sidecar.ai (their backend is the provider); echo has
    # no upstream.
    ("ai_model", "openai"): "http",
    ("ai_model", "anthropic"): "http",
    ("ai_model", "huggingface"): "http",
}


def backend_names(type_name: str) -> tuple[str, ...]:
    """The backends of one service type, in table order."""
    return tuple(backend for kind, backend in BACKENDS if kind == type_name)
