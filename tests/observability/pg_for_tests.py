"""A PostgreSQL DSN for the observability tests: the shared server on 127.0.0.1:5432 (trust
auth, as on the CI machines; `SIDECAR_TEST_PG_*` point elsewhere), else a cluster the
session starts itself (`OwnedPostgres`). The tests only run `SELECT` on the `postgres`
database: nothing to isolate or clean up."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from owned_postgres import OwnedPostgres

__all__ = ["postgres_dsn"]

_HOST = os.environ.get("SIDECAR_TEST_PG_HOST", "127.0.0.1")
_PORT = int(os.environ.get("SIDECAR_TEST_PG_PORT", "5432"))
_USER = os.environ.get("SIDECAR_TEST_PG_USER", "postgres")


def _answers() -> bool:
    try:
        with socket.create_connection((_HOST, _PORT), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    if _answers():
        yield f"postgresql://{_USER}@{_HOST}:{_PORT}/postgres"
        return
    with OwnedPostgres() as server:
        yield f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
