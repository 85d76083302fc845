"""A 200 MB download through CallStream flows through a real sidecar process with bounded
memory: its peak RSS (VmHWM) grows by less than 64 MB over its RSS after a warm-up call."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from api.upstream import Upstream
from sidecar_process import sidecar_process

from generated.integration.v1 import http_pb2, http_pb2_grpc

pytestmark = pytest.mark.e2e

SIZE = 200 * 1024 * 1024
GROWTH_LIMIT_MB = 64


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


async def download(stub: http_pb2_grpc.HttpServiceStub, size: int) -> int:
    head = http_pb2.HttpStreamHead(
        request=http_pb2.HttpRequest(
            path="big", query=[http_pb2.HttpQueryParameter(name="size", value=str(size))]
        )
    )
    call = stub.CallStream(iter([http_pb2.HttpServiceCallStreamRequest(head=head)]))
    received = 0
    async for message in call:
        received += len(message.chunk)
    return received


@pytest.mark.timeout(120)
async def test_a_200_mb_download_keeps_the_sidecar_memory_bounded(
    tmp_path: Path, upstream: Upstream
) -> None:
    config = (
        "server: {access_log: false}\n"
        f"services:\n  files: {{type: api, base_url: '{upstream.url}'}}\n"
    )
    async with sidecar_process(tmp_path, config) as sidecar:
        async with grpc.aio.insecure_channel(sidecar.address) as channel:
            stub = http_pb2_grpc.HttpServiceStub(channel)
            assert await download(stub, 4 * 1024 * 1024) == 4 * 1024 * 1024  # warm-up
            warm_mb = memory_kb(sidecar.process.pid, "VmRSS") / 1024
            started = time.monotonic()
            received = await download(stub, SIZE)
            elapsed = time.monotonic() - started
        peak_mb = memory_kb(sidecar.process.pid, "VmHWM") / 1024
    print(
        f"\nCallStream of {received / 2**20:.0f} MB in {elapsed:.1f}s "
        f"({received / 2**20 / elapsed:.0f} MB/s): sidecar RSS {warm_mb:.0f} MB after warm-up, "
        f"peak {peak_mb:.0f} MB (growth {peak_mb - warm_mb:.0f} MB)"
    )
    assert received == SIZE
    assert peak_mb - warm_mb < GROWTH_LIMIT_MB
