"""The real sidecar as a separate process (`python -m sidecar serve`), for tests that look at
what an operator sees: its stderr, its exit code, its behaviour after a signal.

Usage:
    async with sidecar_process(tmp_path, "services: {}") as sidecar:
        ... grpc.aio.insecure_channel(sidecar.address) ...
    entries = sidecar.log_entries()  # every stderr line, parsed as JSON
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class SidecarProcess:
    """A started sidecar process; its stderr goes to a file (a pipe could fill and block it)."""

    process: asyncio.subprocess.Process
    address: str
    stderr_path: Path

    def stderr_lines(self) -> list[str]:
        return self.stderr_path.read_text().splitlines()

    def log_entries(self) -> list[dict[str, Any]]:
        """Every stderr line as a JSON object (fails on a line that is not JSON)."""
        entries = []
        for line in self.stderr_lines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise AssertionError(f"stderr line is not JSON: {line!r}") from exc
        return entries

    async def stop(self, within: float = 15.0) -> int:
        """SIGTERM, then the exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), within)


async def wait_until_serving(address: str, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 20.0
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.returncode is not None:
                raise AssertionError(f"the sidecar exited with {process.returncode}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.05)


@asynccontextmanager
async def sidecar_process(
    tmp_path: Path, config: str = "", *, listen: str | None = None
) -> AsyncIterator[SidecarProcess]:
    """Start `python -m sidecar serve` with `config` (YAML text) on `listen` (default a free
    loopback port), wait until it serves, and kill it afterwards if it still runs."""
    config_path = tmp_path / "sidecar.yaml"
    config_path.write_text(config or "{}\n")
    address = listen or free_address()
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sidecar",
            "serve",
            "--config",
            str(config_path),
            "--listen",
            address,
            stderr=stderr,
        )
    running = SidecarProcess(process, address, stderr_path)
    try:
        await wait_until_serving(address, process)
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
