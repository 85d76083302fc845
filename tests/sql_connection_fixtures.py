"""Fixtures of the connection conformance suite for the SQL connection types.

- `postgres_address` / `postgres_tls_address`: one PostgreSQL the module owns
  (`OwnedPostgres`), speaking TLS with the suite's server certificate and requiring a
  client certificate its CA signed on TLS connections (`hostssl ... cert`); plain
  connections are trusted, so the non-TLS tests use the same server.
- `sqlite_address`: a database file in a temp directory, as (path, 0): SQLite has no network.

They need the suite's `tls_files` fixture (its CA, server and client certificates).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from owned_postgres import OwnedPostgres, PostgresTls

__all__ = ["owned_tls_postgres", "postgres_address", "postgres_tls_address", "sqlite_address"]


@pytest.fixture(scope="module")
def owned_tls_postgres(tls_files: Any) -> Iterator[OwnedPostgres]:
    folder = tls_files.ca.parent
    tls = PostgresTls(folder / "server.pem", folder / "server.key", tls_files.ca)
    with OwnedPostgres(tls=tls) as server:
        yield server


@pytest.fixture(scope="module")
def postgres_address(owned_tls_postgres: OwnedPostgres) -> tuple[str, int]:
    return (owned_tls_postgres.host, owned_tls_postgres.port)


@pytest.fixture(scope="module")
def postgres_tls_address(owned_tls_postgres: OwnedPostgres) -> tuple[str, int]:
    return (owned_tls_postgres.host, owned_tls_postgres.port)


@pytest.fixture(scope="module")
def sqlite_address(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    return (str(tmp_path_factory.mktemp("sqlite") / "conformance.db"), 0)
