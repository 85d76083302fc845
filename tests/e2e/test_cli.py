"""The command line: check-config reports every problem by path; serve refuses a taken port."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BAD = """
server:
  listen: "nowhere"
integration:
  retry_policy:
    base_delay: soon
services:
  cache:
    type: cache
    max_keys: 0
  broken:
    type: cachez
"""


async def run(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_check_config_lists_every_problem_by_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    code, _, err = await run("check-config", str(path))
    assert code == 2
    for expected in (
        "server.listen",
        "integration.retry_policy.base_delay",
        "services.cache.max_keys: must be >= 1",
        "services.broken.type",
    ):
        assert expected in err
    assert "Traceback" not in err


async def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text("services:\n  cache: {type: cache}\n")
    code, out, _ = await run("check-config", str(path))
    assert (code, "ok" in out) == (0, True)


async def test_serve_on_a_taken_port_fails_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = await run("serve", "--listen", f"127.0.0.1:{port}")
    assert code == 1
    assert "cannot listen" in err
    assert "Traceback" not in err
