"""The nats connection type against the local NATS (127.0.0.1:4222, JetStream on): config,
opening, ping, error mapping and close; and how globs become NATS subjects."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from sidecar.backends.pubsub.nats import check_subject, nats_subject
from sidecar.config import ConfigError, TimeoutsConfig, parse_config
from sidecar.config.nats import NatsEndpoint
from sidecar.connections.nats import NatsConnection
from sidecar.errors import InvalidArgument, Unavailable


def connection(**fields: object) -> NatsConnection:
    return NatsConnection("bus", NatsEndpoint(**fields), TimeoutsConfig(connect=1.0))  # type: ignore[arg-type]


async def test_ping_connects_and_close_is_idempotent() -> None:
    bus = connection()
    await bus.ping()
    assert bus.connected
    assert (await bus.jetstream()) is (await bus.jetstream())
    await bus.close()
    await bus.close()
    with pytest.raises(Unavailable) as closed:
        await bus.ping()
    assert closed.value.reason == "BACKEND_CLOSED"


async def test_an_unreachable_server_is_unavailable() -> None:
    bus = connection(url="nats://127.0.0.1:1")
    with pytest.raises(Unavailable) as raised:
        await bus.ping()
    assert (raised.value.reason, raised.value.metadata["target"]) == ("UPSTREAM_UNAVAILABLE", "bus")
    await bus.close()


def test_an_inline_url_makes_a_connection_of_the_service_own() -> None:
    config = parse_config(
        """
services:
  metrics: {type: pubsub, backend: nats, url: "nats://a:4222, nats://b:4222"}
"""
    )
    assert config.connection_of("metrics") == "metrics"
    assert NatsEndpoint(url=config.services["metrics"].url).servers() == [  # type: ignore[union-attr]
        "nats://a:4222",
        "nats://b:4222",
    ]


@pytest.mark.parametrize(
    ("yaml", "problem"),
    [
        ("connections: {bus: {type: nats, url: 'amqp://x'}}", "must be a nats:// or tls://"),
        ("connections: {bus: {type: nats, username: u}}", "username and password go together"),
        (
            "connections: {bus: {type: nats, username: u, password: p, token: t}}",
            "set username/password or token, not both",
        ),
        (
            "services: {p: {type: pubsub, backend: nats, host: h}}",
            "host is only for backend: redis",
        ),
        (
            "services: {p: {type: pubsub, url: 'nats://h'}}",
            "url is only for a broker backend (rabbitmq, nats",
        ),
        (
            "services: {p: {type: pubsub, reliable_topics: [a]}}",
            "backend memory has no reliable topics",
        ),
    ],
)
def test_bad_settings_are_refused_at_load(yaml: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(yaml)
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    ("glob", "subject"),
    [
        ("orders.*", "orders.>"),
        ("orders.eu", "orders.eu"),
        ("*.eu", ">"),
        ("a.b?.c", "a.>"),
        ("a..b", "a.>"),
    ],
)
def test_a_glob_subscribes_a_subject_matching_at_least_what_it_matches(
    glob: str, subject: str
) -> None:
    assert nats_subject(True, glob) == subject


@pytest.mark.parametrize("channel", ["a b", "a..b", "a.*", ">", ""])
def test_a_channel_that_is_not_a_publishable_subject_is_invalid(channel: str) -> None:
    with pytest.raises(InvalidArgument):
        check_subject(channel, "channel")


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A nats-server of the test's own speaking TLS only, with a trustme CA: (port, CA file)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tls = ["--tls", "--tlscert", str(cert_file), "--tlskey", str(key_file)]
    server = subprocess.Popen(
        ["nats-server", "-a", "127.0.0.1", "-p", str(port), *tls],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.05)
        yield port, ca_file
    finally:
        server.kill()
        server.wait(10)


async def test_a_tls_url_verifies_the_server_against_the_configured_ca(
    tls_nats: tuple[int, Path],
) -> None:
    port, ca_file = tls_nats
    bus = connection(url=f"tls://127.0.0.1:{port}", tls={"ca_file": str(ca_file)})
    await bus.ping()
    await bus.close()
    untrusting = connection(url=f"tls://127.0.0.1:{port}")  # the system's CAs: not this one
    with pytest.raises(Unavailable):
        await untrusting.ping()
    await untrusting.close()
