"""RabbitMQ and NATS for tests: the shared servers at their standard loopback ports (every
machine that runs the tests has them), and cleaning up after a test: each works under a key
prefix of its own and deletes the queues and streams its backends declared."""

from __future__ import annotations

import contextlib

from sidecar.backends.pubsub import PubSubBackend
from sidecar.backends.pubsub._nats_reliable import NatsReliable
from sidecar.backends.pubsub._rabbitmq_reliable import RabbitMqReliable
from sidecar.config import TimeoutsConfig
from sidecar.config.nats import NatsEndpoint
from sidecar.config.rabbitmq import RabbitMqEndpoint
from sidecar.connections.nats import NatsConnection
from sidecar.connections.rabbitmq import RabbitMqConnection

__all__ = ["NATS", "RABBITMQ", "declared_names", "delete_broker_names", "delete_names"]

RABBITMQ = ("127.0.0.1", 5672)
NATS = ("127.0.0.1", 4222)


def declared_names(backend: object) -> tuple[str, list[str]]:
    """("rabbitmq", queues) or ("nats", streams) a backend's reliable topics declared;
    ("", []) for any other backend."""
    reliable = getattr(backend, "streams", backend)
    if isinstance(reliable, RabbitMqReliable):
        return "rabbitmq", reliable.declared_queues()
    if isinstance(reliable, NatsReliable):
        return "nats", reliable.declared_streams()
    return "", []


async def delete_names(kind: str, names: list[str]) -> None:
    """Delete queues (rabbitmq) or streams (nats) on the local server."""
    if kind == "rabbitmq" and names:
        rabbitmq = RabbitMqConnection("cleanup", RabbitMqEndpoint(), TimeoutsConfig())
        channel = await rabbitmq.channel(confirms=False)
        for name in names:
            await channel.queue_delete(name)
        await rabbitmq.close()
    elif kind == "nats" and names:
        nats = NatsConnection("cleanup", NatsEndpoint(), TimeoutsConfig())
        js = await nats.jetstream()
        for name in names:
            with contextlib.suppress(Exception):  # never made: nothing to delete
                await js.delete_stream(name)
        await nats.close()


async def delete_broker_names(backends: list[PubSubBackend]) -> None:
    """Delete what every one of `backends` declared."""
    for backend in backends:
        await delete_names(*declared_names(backend))
