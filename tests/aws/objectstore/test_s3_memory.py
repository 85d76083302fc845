"""The S3 object store's memory bound, seen from outside: streaming 200 MB into a real sidecar
process (`python -m sidecar serve`) and back out raises its peak RSS (VmHWM) by less than
64 MB. moto runs in the test process.

The service has the defaults, part_size 8 MiB and max_concurrent_parts 2, so its parts
hold at most (2 + 1) x 8 MiB = 24 MiB; the rest of the growth is the gRPC receive path
(HTTP/2 window and message copies). The sidecar runs with glibc's mmap threshold fixed at
its default (128 KiB, `MALLOC_MMAP_THRESHOLD_`), so each 1 MiB message is mapped and
unmapped and the figure is live memory: left dynamic, glibc raises the threshold after the
first free and serves later messages from a heap it keeps, which added 10-30 MB depending
on timing (44-52 MB measured alone, 65 MB once on a loaded machine, against 34-38 MB
fixed)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from aws.objectstore.s3_helpers import MiB, connection_section
from aws_server import MotoServer
from sidecar_process import sidecar_process

from generated.integration.v1 import objectstore_pb2 as pb
from generated.integration.v1 import objectstore_pb2_grpc

TOTAL = 200 * MiB
LIMIT = 64 * MiB


def peak_rss(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


async def stream_through(
    stub: objectstore_pb2_grpc.ObjectStoreServiceStub, key: str, size: int
) -> None:
    """Put `size` bytes (1 MiB messages of one repeated random block) and read them back;
    the digests must match."""
    block = os.urandom(MiB)
    sent = hashlib.sha256()

    async def requests() -> AsyncIterator[pb.PutObjectRequest]:
        yield pb.PutObjectRequest(header=pb.PutObjectHeader(key=key))
        for _ in range(size // MiB):
            sent.update(block)
            yield pb.PutObjectRequest(data=block)

    put = await stub.PutObject(requests())
    assert put.info.size == size
    received = hashlib.sha256()
    async for message in stub.GetObject(pb.GetObjectRequest(key=key)):
        if not message.HasField("head"):
            received.update(message.data)
    assert received.hexdigest() == sent.hexdigest() == put.info.sha256


async def test_streaming_200_mb_in_and_out_raises_peak_rss_by_less_than_64_mb(
    tmp_path: Path, moto_server: MotoServer, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))  # for the sidecar process
    bucket = f"objectstore-rss-{os.getpid()}"
    await s3.create_bucket(Bucket=bucket)
    config = f"""
server: {{access_log: false}}
connections:
  moto: {connection_section(moto_server)}
services:
  files:
    {{type: objectstore, backend: s3, connection: moto, bucket: {bucket}}}
"""
    async with (
        sidecar_process(tmp_path, config) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        stub = objectstore_pb2_grpc.ObjectStoreServiceStub(channel)
        pid = sidecar.process.pid
        # Warm up with a small object (aiobotocore loaded, the S3 client made), so the
        # growth below is what streaming costs.
        await stream_through(stub, "warm-up", MiB)
        before = peak_rss(pid)

        await stream_through(stub, "large", TOTAL)

        grown = peak_rss(pid) - before
    assert grown < LIMIT, f"peak RSS grew by {grown / MiB:.1f} MiB"
