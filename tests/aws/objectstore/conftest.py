"""Fixtures of the S3 object-store tests: moto in server mode (this process), an aws
connection to it, a bucket of each test's own, and `S3Backend`s on it built the way the
sidecar builds them (through the backend's spec, from a settings model)."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aws.objectstore.s3_helpers import MiB, StoreMaker, connection_section
from aws_server import MotoServer, aws_address, moto_server

from sidecar.backends.objectstore.s3 import SPEC, S3Backend
from sidecar.backends.spec import BuildContext
from sidecar.config import parse_config
from sidecar.connections.aws import AwsConnection, open_connection
from sidecar.testing import FakeClock

__all__ = ["aws_address", "moto_server"]

_buckets = itertools.count()


@pytest.fixture
async def aws(moto_server: MotoServer) -> AsyncIterator[AwsConnection]:
    """An aws connection to the session's moto server, closed after the test."""
    config = parse_config(f"connections:\n  moto: {connection_section(moto_server)}\n")
    pool, timeouts = config.connection_policies("moto")
    endpoint: Any = config.connections["moto"]
    connection = open_connection("moto", endpoint, pool, timeouts)
    yield connection
    await connection.close()


@pytest.fixture
async def s3(aws: AwsConnection) -> Any:
    """The connection's S3 client, to set up and check behind the backend's back."""
    return await aws.client("s3")


@pytest.fixture
async def bucket(s3: Any) -> str:
    """A new bucket of the test's own."""
    name = f"objectstore-s3-{os.getpid()}-{next(_buckets)}"
    await s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def make_store(
    aws: AwsConnection, bucket: str, moto_server: MotoServer
) -> AsyncIterator[StoreMaker]:
    """`make_store(**settings)`: an S3 backend on the test's bucket, built through its spec
    from a loaded config (so the settings' bounds apply), closed after the test."""
    made: list[S3Backend] = []

    def make(**settings: object) -> S3Backend:
        fields = {"bucket": bucket, **settings}
        inline = ", ".join(f"{name}: {value}" for name, value in fields.items())
        config = parse_config(
            f"connections:\n  moto: {connection_section(moto_server)}\n"
            f"services:\n  files: {{type: objectstore, backend: s3, connection: moto, {inline}}}\n"
        )
        model: Any = config.services["files"]
        context = BuildContext("files", model, config.policies_for("files"), aws, FakeClock())
        store = SPEC.build(context)
        assert isinstance(store, S3Backend)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
def store(make_store: StoreMaker) -> S3Backend:
    """A backend with 5 MiB parts (S3's smallest), 3 in flight."""
    return make_store(part_size=5 * MiB, max_concurrent_parts=3)
