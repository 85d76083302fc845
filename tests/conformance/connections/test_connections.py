"""Conformance suite of the connection types: every type answers a health ping, closes in
order, reports a refused upstream as UNAVAILABLE and a black-holed one as
DEADLINE_EXCEEDED, and speaks TLS and mutual TLS as configured.

Connections are built as the sidecar builds them: from a `connections:` section, through
`build_connections`. The table maps each type to how its section names an endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from faultproxy import FaultProxy
from redis_server import OwnedRedis, free_port

from sidecar.config import parse_config
from sidecar.connections import Connection, Connections, build_connections
from sidecar.errors import DeadlineExceeded, Unavailable


@dataclass(frozen=True)
class ConnectionType:
    """How to write one connection type's section for an endpoint."""

    name: str
    section: Callable[[str, int, str], str]
    """(host, port, extra YAML flow entries) -> the connection's flow mapping."""


# ==== the connection types: one row each ====================================================
TYPES = (
    ConnectionType(
        "redis", lambda host, port, extra: f"{{type: redis, host: {host}, port: {port}{extra}}}"
    ),
)
# ==== end of the connection types ===========================================================

Opener = Callable[[str], Connection]
FAST = ", timeouts: {connect: 0.5s, read: 0.5s}"


@pytest.fixture(params=TYPES, ids=lambda kind: kind.name)
def kind(request: pytest.FixtureRequest) -> ConnectionType:
    chosen: ConnectionType = request.param
    return chosen


@pytest.fixture
async def open_connection() -> AsyncIterator[Callable[[str], Connection]]:
    """`open_connection(section)`: the connection named `up` built from `section`; every
    one is closed after the test."""
    made: list[Connections] = []

    def open_connection(section: str) -> Connection:
        connections = build_connections(parse_config(f"connections:\n  up: {section}\n"))
        made.append(connections)
        return connections.get("up")

    yield open_connection
    for connections in made:
        await connections.close()


@pytest.fixture
def live_endpoint(kind: ConnectionType, request: pytest.FixtureRequest) -> tuple[str, int]:
    address: tuple[str, int] = request.getfixturevalue(f"{kind.name}_address")
    return address


async def test_ping_answers_on_a_live_upstream(
    kind: ConnectionType,
    live_endpoint: tuple[str, int],
    open_connection: Callable[[str], Connection],
) -> None:
    connection = open_connection(kind.section(*live_endpoint, ""))
    assert (connection.name, connection.type) == ("up", kind.name)
    await connection.ping()


async def test_close_is_idempotent_and_a_closed_connection_answers_unavailable(
    kind: ConnectionType,
    live_endpoint: tuple[str, int],
    open_connection: Callable[[str], Connection],
) -> None:
    connection = open_connection(kind.section(*live_endpoint, ""))
    await connection.ping()
    await connection.close()
    await connection.close()
    with pytest.raises(Unavailable):
        await connection.ping()


async def test_a_refused_upstream_is_unavailable(
    kind: ConnectionType, open_connection: Callable[[str], Connection]
) -> None:
    connection = open_connection(kind.section("127.0.0.1", free_port(), FAST))
    with pytest.raises(Unavailable) as raised:
        await connection.ping()
    assert raised.value.metadata["target"] == "up"


async def test_a_black_holed_upstream_is_deadline_exceeded_and_recovers(
    kind: ConnectionType,
    live_endpoint: tuple[str, int],
    open_connection: Callable[[str], Connection],
) -> None:
    async with FaultProxy(*live_endpoint) as proxy:
        connection = open_connection(kind.section(proxy.host, proxy.port, FAST))
        await connection.ping()
        proxy.paused = True
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(connection.ping(), 5)
        proxy.paused = False
        for _ in range(3):  # the call in flight when the link was dropped may fail
            try:
                await connection.ping()
                break
            except Unavailable:
                continue
        else:
            pytest.fail("the connection never recovered")


# -- TLS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA that signed nothing here: trusting it alone must fail."""


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    folder = tmp_path_factory.mktemp("tls")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("sidecar-client")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    other.cert_pem.write_to_path(str(folder / "other-ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    client.private_key_pem.write_to_path(str(folder / "client.key"))
    return TlsFiles(
        folder / "ca.pem", folder / "client.pem", folder / "client.key", folder / "other-ca.pem"
    )


@pytest.fixture(scope="module")
def redis_tls_address(tls_files: TlsFiles) -> Iterator[tuple[str, int]]:
    """A Redis speaking only TLS, and requiring a client certificate its CA signed."""
    folder = tls_files.ca.parent
    port = free_port()
    server = OwnedRedis(
        port,
        *("--port", "0", "--tls-port", str(port)),
        *("--tls-cert-file", str(folder / "server.pem")),
        *("--tls-key-file", str(folder / "server.key")),
        *("--tls-ca-cert-file", str(tls_files.ca), "--tls-auth-clients", "yes"),
    )
    server.start()
    yield ("127.0.0.1", port)
    server.kill()


@pytest.fixture
def tls_endpoint(kind: ConnectionType, request: pytest.FixtureRequest) -> tuple[str, int]:
    address: tuple[str, int] = request.getfixturevalue(f"{kind.name}_tls_address")
    return address


def tls(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None, **more: str
) -> str:
    entries = {"ca_file": ca, "cert_file": cert, "key_file": key}
    text = ", ".join(f"{name}: {value}" for name, value in entries.items() if value is not None)
    text = ", ".join(filter(None, [text, *(f"{k}: {v}" for k, v in more.items())]))
    return f", tls: {{{text}}}" + FAST


async def test_mutual_tls_serves_every_link_of_the_connection(
    kind: ConnectionType,
    tls_endpoint: tuple[str, int],
    tls_files: TlsFiles,
    open_connection: Callable[[str], Connection],
) -> None:
    extra = tls(tls_files.ca, tls_files.client_cert, tls_files.client_key)
    connection = open_connection(kind.section("localhost", tls_endpoint[1], extra))
    await connection.ping()
    await exercise_every_link(connection)


async def test_an_untrusted_server_certificate_is_refused(
    kind: ConnectionType,
    tls_endpoint: tuple[str, int],
    tls_files: TlsFiles,
    open_connection: Callable[[str], Connection],
) -> None:
    extra = tls(tls_files.other_ca, tls_files.client_cert, tls_files.client_key)
    connection = open_connection(kind.section("localhost", tls_endpoint[1], extra))
    with pytest.raises(Unavailable):
        await connection.ping()


async def test_without_a_client_certificate_mutual_tls_is_refused(
    kind: ConnectionType,
    tls_endpoint: tuple[str, int],
    tls_files: TlsFiles,
    open_connection: Callable[[str], Connection],
) -> None:
    connection = open_connection(kind.section("localhost", tls_endpoint[1], tls(tls_files.ca)))
    with pytest.raises((Unavailable, DeadlineExceeded)):
        await connection.ping()


async def test_verify_false_accepts_an_untrusted_server(
    kind: ConnectionType,
    tls_endpoint: tuple[str, int],
    tls_files: TlsFiles,
    open_connection: Callable[[str], Connection],
) -> None:
    extra = tls(None, tls_files.client_cert, tls_files.client_key, verify="false")
    connection = open_connection(kind.section("127.0.0.1", tls_endpoint[1], extra))
    await connection.ping()


async def test_server_name_is_the_name_checked_instead_of_the_host(
    kind: ConnectionType,
    tls_endpoint: tuple[str, int],
    tls_files: TlsFiles,
    open_connection: Callable[[str], Connection],
) -> None:
    files = (tls_files.ca, tls_files.client_cert, tls_files.client_key)
    named = open_connection(
        kind.section("127.0.0.1", tls_endpoint[1], tls(*files, server_name="localhost"))
    )
    await named.ping()
    await exercise_every_link(named)
    # The certificate names localhost and 127.0.0.1 only: another name must fail the check.
    wrong = open_connection(
        kind.section("127.0.0.1", tls_endpoint[1], tls(*files, server_name="elsewhere.example"))
    )
    with pytest.raises(Unavailable):
        await wrong.ping()


async def exercise_every_link(connection: Connection) -> None:
    """Type-specific: every client object of the connection works over TLS."""
    from sidecar.connections.redis import RedisConnection

    if isinstance(connection, RedisConnection):
        assert await connection.client.ping()  # a pooled connection
        view = connection.subscriber.view(wanted=lambda: [(False, "tls-check")], on_message=print)
        view.start()
        for _ in range(200):
            if (False, "tls-check") in view.confirmed:
                break
            await asyncio.sleep(0.01)
        assert (False, "tls-check") in view.confirmed  # the subscriber link
        view.close()
