"""The table of object-store backends the conformance suite runs against, and their fixtures.

Every backend is built the way the sidecar builds it: settings validated by the config model,
then its spec in the registry. A row names the backend and how it is set up:

- `local`: a folder of the test's own (pytest's tmp_path);
- `s3`: an S3 backend on an aws connection to moto in server mode (`tests/aws_server.py`),
  in a bucket of the test's own.

A backend registered in `sidecar.config.backends` without a row runs with its defaults and no
connection. A test marked `needs("presign")` runs only on backends whose spec lists it.
`make_store(**settings)` builds one more store of the row with other settings (a small
`max_object_size`, ...); `store` is the row's store with default settings.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from aws_server import FAKE_KEY, FAKE_SECRET, MotoServer, aws_address, moto_server

from sidecar.backends.objectstore import ObjectStoreBackend
from sidecar.backends.registry import build_backend, spec_for
from sidecar.backends.spec import BuildContext
from sidecar.config import parse_config
from sidecar.config.backends import backend_names
from sidecar.connections import Connection
from sidecar.connections.aws import open_connection
from sidecar.testing import FakeClock

__all__ = ["aws_address", "moto_server"]

StoreMaker = Callable[..., ObjectStoreBackend]
_buckets = itertools.count()


@dataclass(frozen=True)
class Row:
    """One backend set up one way."""

    id: str
    backend: str
    folder: bool = False
    """Keeps its objects in a folder of the test's own (`root:`)."""
    moto: bool = False
    """Runs against the moto server, on an aws connection, in a bucket of the test's own."""

    @property
    def features(self) -> frozenset[str]:
        return spec_for("objectstore", self.backend).features


# ==== the backends: one row per way of running one ==========================================
TABLE = (
    Row("local", "local", folder=True),
    Row("s3", "s3", moto=True),
)
# ==== end of the backends ===================================================================


def rows() -> list[Row]:
    """The table, and a default row for every registered backend it does not name."""
    named = {row.backend for row in TABLE}
    return [
        *TABLE,
        *(Row(name, name) for name in backend_names("objectstore") if name not in named),
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_row" not in metafunc.fixturenames:
        return
    needs = {need for marker in metafunc.definition.iter_markers("needs") for need in marker.args}
    eligible = [row for row in rows() if needs <= row.features]
    metafunc.parametrize("store_row", eligible, ids=[row.id for row in eligible])


def _moto_section(server: MotoServer) -> str:
    return (
        f"{{type: aws, region: us-east-1, endpoint_url: {server.url}, addressing_style: path, "
        f"credentials: {{access_key_id: {FAKE_KEY}, secret_access_key: {FAKE_SECRET}}}}}"
    )


@pytest.fixture
async def make_store(
    store_row: Row, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[StoreMaker]:
    """`make_store(**settings)`: a store of the row, with these settings over the row's."""
    made: list[ObjectStoreBackend] = []
    connection: Connection | None = None
    connections = ""
    base: dict[str, Any] = {"type": "objectstore", "backend": store_row.backend}
    if store_row.folder:
        base["root"] = str(tmp_path / "objects")
    if store_row.moto:
        server: MotoServer = request.getfixturevalue("moto_server")
        connections = f"connections:\n  moto: {_moto_section(server)}\n"
        config = parse_config(connections)
        pool, timeouts = config.connection_policies("moto")
        endpoint: Any = config.connections["moto"]
        connection = open_connection("moto", endpoint, pool, timeouts)
        bucket = f"conformance-{os.getpid()}-{next(_buckets)}"
        s3: Any = await connection.client("s3")  # type: ignore[attr-defined]
        await s3.create_bucket(Bucket=bucket)
        base.update(connection="moto", bucket=bucket)

    def make(**settings: object) -> ObjectStoreBackend:
        fields = {**base, **settings}
        inline = ", ".join(f"{name}: {value}" for name, value in fields.items())
        config = parse_config(f"{connections}services:\n  files: {{{inline}}}\n")
        model: Any = config.services["files"]
        context = BuildContext(
            "files", model, config.policies_for("files"), connection, FakeClock()
        )
        built = build_backend(context)
        assert built.features == store_row.features
        store = cast(ObjectStoreBackend, built.backend)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
    if connection is not None:
        await connection.close()


@pytest.fixture
def store(make_store: StoreMaker) -> ObjectStoreBackend:
    return make_store()
