"""The Unix socket listener's file mode (default 0600: only the sidecar's user may connect)
and group, as configured under `server.unix_socket`."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import grpc
import pytest

from generated.integration.v1 import cache_pb2, cache_pb2_grpc
from sidecar.config import ConfigError, parse_config
from sidecar.server import ServerStartError, start_server


async def _socket_stat(path: Path, yaml: str = "") -> os.stat_result:
    """Start on `unix:path` with `yaml`, check a call gets through, return the file's stat."""
    running = await start_server(parse_config(yaml), listen=f"unix:{path}")
    try:
        async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
            await cache_pb2_grpc.CacheServiceStub(channel).Get(cache_pb2.GetRequest(key="k"))
        return os.stat(path)
    finally:
        await running.stop(grace=0)


async def test_the_socket_is_owner_only_by_default(tmp_path: Path) -> None:
    info = await _socket_stat(tmp_path / "default.sock")
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600


async def test_mode_and_group_are_applied(tmp_path: Path) -> None:
    group = grp.getgrgid(1).gr_name  # any group other than the test's own (root's is 0)
    yaml = f"server:\n  unix_socket: {{mode: 0660, group: {group}}}\n"
    info = await _socket_stat(tmp_path / "shared.sock", yaml)
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o660, 1)


async def test_a_quoted_octal_mode_and_a_numeric_group_work(tmp_path: Path) -> None:
    yaml = "server:\n  unix_socket: {mode: '0640', group: 1}\n"
    info = await _socket_stat(tmp_path / "quoted.sock", yaml)
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, 1)


async def test_an_unknown_group_stops_start_up(tmp_path: Path) -> None:
    config = parse_config("server:\n  unix_socket: {group: no-such-group-here}\n")
    with pytest.raises(ServerStartError, match="no group named 'no-such-group-here'"):
        await start_server(config, listen=f"unix:{tmp_path / 'x.sock'}")


@pytest.mark.parametrize("mode", ["0999", "01777", "rw-"])
def test_a_mode_outside_0000_0777_is_refused(mode: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.unix_socket\.mode"):
        parse_config(f"server:\n  unix_socket: {{mode: '{mode}'}}\n")
