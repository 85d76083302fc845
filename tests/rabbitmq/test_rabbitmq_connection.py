"""The rabbitmq connection type against the local RabbitMQ (127.0.0.1:5672): config,
opening, ping, error mapping and close; and how globs become AMQP binding keys."""

from __future__ import annotations

import pytest

from sidecar.backends.pubsub._rabbitmq_reliable import RabbitMqReliable
from sidecar.backends.pubsub.rabbitmq import binding_key
from sidecar.backends.pubsub.reliable import ReliableOptions
from sidecar.config import ConfigError, TimeoutsConfig, parse_config
from sidecar.config.rabbitmq import RabbitMqEndpoint
from sidecar.connections.rabbitmq import RabbitMqConnection
from sidecar.errors import InvalidArgument, Unauthenticated, Unavailable


def connection(**fields: object) -> RabbitMqConnection:
    return RabbitMqConnection("mq", RabbitMqEndpoint(**fields), TimeoutsConfig(connect=2.0))  # type: ignore[arg-type]


async def test_ping_opens_the_connection_and_close_is_idempotent() -> None:
    mq = connection()
    await mq.ping()
    assert mq.connected
    await mq.close()
    await mq.close()
    with pytest.raises(Unavailable) as closed:
        await mq.ping()
    assert closed.value.reason == "BACKEND_CLOSED"


async def test_an_unreachable_broker_is_unavailable() -> None:
    mq = connection(url="amqp://127.0.0.1:1/")
    with pytest.raises(Unavailable) as raised:
        await mq.ping()
    assert (raised.value.reason, raised.value.metadata["target"]) == ("UPSTREAM_UNAVAILABLE", "mq")
    await mq.close()


async def test_refused_credentials_are_unauthenticated() -> None:
    mq = connection(password="not-the-password")
    with pytest.raises(Unauthenticated) as raised:
        await mq.ping()
    assert raised.value.reason == "UPSTREAM_AUTH_FAILED"
    assert "not-the-password" not in str(raised.value)
    await mq.close()


def test_a_named_connection_is_shared_and_its_backend_inferred() -> None:
    config = parse_config(
        """
connections:
  events: {type: rabbitmq, url: "amqps://mq.internal/prod", password: secret, tls: true}
services:
  orders: {type: pubsub, connection: events, reliable_topics: ["orders.*"]}
  audit: {type: pubsub, connection: events}
"""
    )
    assert [config.services[name].backend for name in ("orders", "audit")] == ["rabbitmq"] * 2  # type: ignore[union-attr]
    assert config.connection_of("orders") == config.connection_of("audit") == "events"
    assert "secret" not in repr(config.connections["events"])


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ("url: http://mq/", "must be a amqp:// or amqps:// URL"),
        ("url: amqp://guest:guest@mq/", "must not carry credentials"),
        ("url: 'amqp://mq/?heartbeat=1'", "without query or fragment"),
        ("url: amqp://mq/, tls: true", "tls: is on exactly when the url is amqps://"),
        (
            "url: amqps://10.0.0.5/, tls: {server_name: mq.internal}",
            "tls.server_name is not supported",
        ),
    ],
)
def test_a_bad_endpoint_is_refused_at_load(fields: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(f"connections:\n  events: {{type: rabbitmq, {fields}}}\n")
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    ("glob", "key"),
    [
        ("orders.*", "orders.#"),
        ("orders.eu", "orders.eu"),
        ("*.eu", "#.eu"),
        ("a*.b.c?", "#.b.#"),
        ("*.*", "#"),
        ("h[ae]llo", "#"),
    ],
)
def test_a_glob_binds_a_key_matching_at_least_what_it_matches(glob: str, key: str) -> None:
    assert binding_key(True, glob) == key


def test_an_exact_channel_binds_itself() -> None:
    assert binding_key(False, "orders.*") == "orders.*"


async def test_a_topic_too_long_for_its_queue_names_is_invalid_before_any_io() -> None:
    mq = connection(url="amqp://127.0.0.1:1/")  # never reached: refused before any I/O
    reliable = RabbitMqReliable(mq, ReliableOptions("events", key_prefix="app."))
    with pytest.raises(InvalidArgument) as raised:
        await reliable.publish_reliable("t" * 245, b"x")  # 4 + 245 + len(".unclaimed") > 255
    assert raised.value.metadata["field"] == "topic"
    with pytest.raises(InvalidArgument):
        await reliable.consume(["orders"], "g" * 240, None, max_in_flight=1)
    with pytest.raises(InvalidArgument):
        await reliable.publish_reliable("orders.dlq", b"x")
    await reliable.close()
    await mq.close()
