"""A Unix-socket listener never takes over a live sidecar's socket (gRPC would unlink it and
bind its own, leaving the first sidecar running but unreachable); a stale socket file left
by a killed process is reused."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.config import load_config
from sidecar.server import ServerStartError, start_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def socket_path() -> Iterator[Path]:
    # Socket paths are limited to ~107 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sidecar-") as directory:
        yield Path(directory) / "sidecar.sock"


def inode(path: Path) -> int:
    return path.stat().st_ino


async def serving(address: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_second_sidecar_refuses_a_live_sidecars_socket(socket_path: Path) -> None:
    address = f"unix:{socket_path}"
    first = await start_server(load_config(None), listen=address)
    try:
        first_inode = inode(socket_path)
        with pytest.raises(ServerStartError, match=f"cannot listen on {address}"):
            await start_server(load_config(None), listen=address)
        assert inode(socket_path) == first_inode  # still the first sidecar's socket
        assert await serving(address)
    finally:
        await first.stop(grace=1.0)


async def test_a_stale_socket_file_is_reused(socket_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as killed:
        killed.bind(str(socket_path))  # closed without unlinking, as by SIGKILL
    address = f"unix:{socket_path}"
    running = await start_server(load_config(None), listen=address)
    try:
        assert await serving(address)
    finally:
        await running.stop(grace=1.0)
