"""Fixtures for the SQL tests: a real PostgreSQL, a fresh database per test module, and the
real sidecar serving SqlService in front of it.

PostgreSQL: the tests use the server at 127.0.0.1:5432 (user `postgres`, trust auth), as on
the CI machines; `SIDECAR_TEST_PG_HOST`, `SIDECAR_TEST_PG_PORT` and `SIDECAR_TEST_PG_USER`
point them elsewhere. When nothing answers there, the session starts its own throwaway
cluster: `initdb` (trust auth) into a temporary directory and `pg_ctl start` on that port,
run as the `postgres` OS user when the tests run as root (PostgreSQL refuses root), and
stopped at the end. That needs the PostgreSQL server binaries (`initdb`, `pg_ctl`) on PATH
or under /usr/lib/postgresql/*/bin; without them the PostgreSQL tests are skipped with a
message saying so.

Isolation: every test module gets its own database `sidecar_test_<random>` (dropped at the
end), and tests name their tables with `table` (random per test), so no test sees
another's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from support import error_info

from generated.integration.v1 import sql_pb2_grpc
from sidecar.server import RunningServer
from sidecar.testing import serve_for_test

PG_HOST = os.environ.get("SIDECAR_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SIDECAR_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("SIDECAR_TEST_PG_USER", "postgres")


@dataclass(frozen=True)
class Postgres:
    """Where the test PostgreSQL listens."""

    host: str
    port: int
    user: str

    def dsn(self, database: str, *, host: str | None = None, port: int | None = None) -> str:
        return f"postgresql://{self.user}@{host or self.host}:{port or self.port}/{database}"


def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@contextlib.contextmanager
def _throwaway_cluster(port: int) -> Iterator[None]:
    """initdb + pg_ctl start on `port` in a temp dir (as `postgres` when we are root)."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip(
            f"no PostgreSQL at {PG_HOST}:{port} and no initdb/pg_ctl to start one: install "
            "the PostgreSQL server or set SIDECAR_TEST_PG_HOST / SIDECAR_TEST_PG_PORT"
        )
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="sidecar-pg-"))
    data = root / "data"
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    run = [*as_postgres]
    subprocess.run(
        [*run, initdb, "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses={PG_HOST} -c fsync=off"
    subprocess.run(
        [*run, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield
    finally:
        subprocess.run(
            [*run, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A reachable PostgreSQL: the running one, or a throwaway cluster started for the run."""
    server = Postgres(PG_HOST, PG_PORT, PG_USER)
    if _answers(PG_HOST, PG_PORT):
        yield server
        return
    with _throwaway_cluster(PG_PORT):
        deadline = time.monotonic() + 30
        while not _answers(PG_HOST, PG_PORT):
            if time.monotonic() > deadline:
                raise RuntimeError("the throwaway PostgreSQL did not start")
            time.sleep(0.1)
        yield server


async def _admin(server: Postgres, *statements: str) -> None:
    conn = await asyncpg.connect(server.dsn("postgres"))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def pg_database(postgres: Postgres) -> Iterator[str]:
    """A fresh database for this test module; yields its name."""
    name = f"sidecar_test_{secrets.token_hex(5)}"
    asyncio.run(_admin(postgres, f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        asyncio.run(_admin(postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_dsn(postgres: Postgres, pg_database: str) -> str:
    return postgres.dsn(pg_database)


@pytest.fixture
def table() -> str:
    """A table name no other test uses."""
    return f"t_{secrets.token_hex(5)}"


@pytest.fixture
async def pg() -> AsyncIterator[Callable[[str], Awaitable[asyncpg.Connection]]]:
    """Open direct asyncpg connections (closed at the end): `conn = await pg(dsn)`."""
    opened: list[asyncpg.Connection] = []

    async def connect(dsn: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(dsn)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        await conn.close()


def sql_config(dsn: str, *, name: str = "db", **settings: Any) -> str:
    """YAML for a sidecar with one postgres `sql` service; no retries unless overridden."""
    lines = [
        "server: {access_log: false}",
        "services:",
        f"  {name}:",
        "    type: sql",
        "    backend: postgres",
        f"    dsn: {dsn}",
    ]
    settings.setdefault("retry_policy", "{max_retries: 0}")
    lines += [f"    {key}: {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def config_for() -> Callable[..., str]:
    """`config_for(dsn, **settings)`: YAML for one postgres service named `db` at `dsn`."""
    return sql_config


@pytest.fixture
def make_config(pg_dsn: str) -> Callable[..., str]:
    """`make_config(**settings)`: YAML for one postgres service named `db` on this module's
    database; values are YAML text (`read_only="true"`)."""

    def make(**settings: Any) -> str:
        return sql_config(pg_dsn, **settings)

    return make


@pytest.fixture
async def pg_sidecar(make_config: Callable[..., str]) -> AsyncIterator[RunningServer]:
    async with serve_for_test(make_config()) as running:
        yield running


@pytest.fixture
async def sql(pg_sidecar: RunningServer) -> AsyncIterator[sql_pb2_grpc.SqlServiceStub]:
    """A SqlService stub on a sidecar whose default `sql` target is this module's database."""
    async with grpc.aio.insecure_channel(pg_sidecar.address) as channel:
        yield sql_pb2_grpc.SqlServiceStub(channel)


@pytest.fixture
def expect_error() -> Callable[..., Awaitable[grpc.aio.AioRpcError]]:
    """`await expect_error(call, code, reason, **metadata)`: the call fails with that status
    code and an ErrorInfo with that reason (domain integration.v1) and metadata entries."""

    async def check(
        call: Awaitable[Any], code: grpc.StatusCode, reason: str, **metadata: str
    ) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        error = caught.value
        assert error.code() is code, (error.code(), error.details())
        info = error_info(error)
        assert (info.reason, info.domain) == (reason, "integration.v1"), info
        for key, value in metadata.items():
            assert info.metadata.get(key) == value, (key, dict(info.metadata))
        return error

    return check
