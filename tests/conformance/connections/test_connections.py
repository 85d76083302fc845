"""Conformance suite of the connection types: every type answers a health ping, closes in
order, reports a refused upstream as UNAVAILABLE and a black-holed one as
DEADLINE_EXCEEDED, and speaks TLS and mutual TLS as configured.

Connections are built as the sidecar builds them: from a `connections:` section, through
`build_connections`. The table maps each type to how its section names an endpoint."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aws_server import FAKE_KEY, FAKE_SECRET, MotoServer
from faultproxy import FaultProxy
from http_server import HttpServer, server_context
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
    network: bool = True
    """False: the type has no network (an embedded database), so the refused, black-holed
    and TLS tests do not apply to it; they report it as not applicable."""


# ==== the connection types: one row each ====================================================
TYPES = (
    ConnectionType(
        "redis", lambda host, port, extra: f"{{type: redis, host: {host}, port: {port}{extra}}}"
    ),
    ConnectionType(
        "http",
        lambda host, port, extra: (
            f"{{type: http, base_url: '{'https' if 'tls:' in extra else 'http'}://{host}:{port}'"
            f", health_path: /health{extra}}}"
        ),
    ),
    ConnectionType(
        "aws",
        lambda host, port, extra: (
            f"{{type: aws, region: us-east-1"
            f", endpoint_url: {'https' if 'tls:' in extra else 'http'}://{host}:{port}"
            f", credentials: {{access_key_id: {FAKE_KEY}, secret_access_key: {FAKE_SECRET}}}"
            f"{extra}}}"
        ),
    ),
    ConnectionType(
        "postgres",
        lambda host, port, extra: (
            f"{{type: postgres, host: {host}, port: {port}, username: postgres"
            f", database: postgres{extra}}}"
        ),
    ),
    ConnectionType(
        "sqlite", lambda path, _, extra: f"{{type: sqlite, path: '{path}'{extra}}}", network=False
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


def not_applicable_without_network(kind: ConnectionType) -> None:
    """Report a network test as not applicable to a type the table marks `network=False`."""
    if not kind.network:
        pytest.skip(f"not applicable: {kind.name} has no network (TYPES: network=False)")


async def test_a_refused_upstream_is_unavailable(
    kind: ConnectionType, open_connection: Callable[[str], Connection]
) -> None:
    not_applicable_without_network(kind)
    connection = open_connection(kind.section("127.0.0.1", free_port(), FAST))
    with pytest.raises(Unavailable) as raised:
        await connection.ping()
    assert raised.value.metadata["target"] == "up"


async def test_a_black_holed_upstream_is_deadline_exceeded_and_recovers(
    kind: ConnectionType,
    live_endpoint: tuple[str, int],
    open_connection: Callable[[str], Connection],
) -> None:
    not_applicable_without_network(kind)
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


@pytest.fixture(scope="module")
def http_tls_address(tls_files: TlsFiles) -> Iterator[tuple[str, int]]:
    """An HTTPS server requiring a client certificate its CA signed."""
    folder = tls_files.ca.parent
    context = server_context(
        str(folder / "server.pem"), str(folder / "server.key"), client_ca=str(tls_files.ca)
    )
    server = HttpServer(context).start()
    yield ("127.0.0.1", server.port)
    server.stop()


@pytest.fixture(scope="module")
def aws_tls_address(tls_files: TlsFiles) -> Iterator[tuple[str, int]]:
    """moto over HTTPS, requiring a client certificate its CA signed."""
    folder = tls_files.ca.parent
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(folder / "server.pem"), str(folder / "server.key"))
    context.load_verify_locations(str(tls_files.ca))
    context.verify_mode = ssl.CERT_REQUIRED
    server = MotoServer(ssl_context=context).start()
    yield (server.host, server.port)
    server.stop()


@pytest.fixture
def tls_endpoint(kind: ConnectionType, request: pytest.FixtureRequest) -> tuple[str, int]:
    not_applicable_without_network(kind)
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
    from sidecar.connections.aws import AwsConnection
    from sidecar.connections.http.connection import HttpConnection
    from sidecar.connections.postgres import PostgresConnection
    from sidecar.connections.redis import RedisConnection

    if isinstance(connection, AwsConnection):
        s3 = await connection.client("s3")  # a second client (and pool) of the connection
        assert "Buckets" in await s3.list_buckets()

    if isinstance(connection, PostgresConnection):  # every pooled connection speaks TLS
        conns = [await connection.acquire() for _ in range(2)]
        try:
            for conn in conns:
                query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                assert await conn.fetchval(query) is True
        finally:
            for conn in conns:
                await connection.release(conn)

    if isinstance(connection, HttpConnection):
        response = await connection.client.get("/health")  # the pooled client, shared
        assert (response.status_code, response.content) == (200, b"ok")

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
