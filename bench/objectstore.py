"""The object-store section of `make bench`: one large object (50 MB) put and got through the
sidecar (ObjectStoreService on `backend: s3`) and with aiobotocore used directly, against
the same moto server.

Three processes: moto in server mode (`python -m moto.server`), the sidecar (one
`type: objectstore, backend: s3` service on an aws connection to moto, default part_size
8 MiB and max_concurrent_parts 2), and this one, which drives both clients in turn:

- sidecar PutObject: 1 MiB data messages; sidecar GetObject: the stream of 256 KiB chunks;
- direct put: what an app would write with aiobotocore, a multipart upload of 8 MiB parts with
  2 in flight (the sidecar's settings); direct get: GetObject, the body read in 256 KiB reads.

Cases run interleaved, BENCH_REPEATS times (default 3); reported are the medians in MB/s,
the sidecar's throughput as a share of direct (target: at least 0.8), the sidecar's CPU per
transfer, and its peak RSS (VmHWM) after start-up and after every transfer. moto, a Python
server, is the bottleneck of every case here: the ratios say what the sidecar adds on top
of it, not what S3 would give.

Usage: make bench, or python -m bench.objectstore  (BENCH_REPEATS, BENCH_OBJECT_MB)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.__main__ import Server, cpu_seconds, free_port, start

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
OBJECT_MB = int(os.environ.get("BENCH_OBJECT_MB", "50"))
MiB = 1024 * 1024
SIZE = OBJECT_MB * MiB
PART = 8 * MiB
IN_FLIGHT = 2
READ = 256 * 1024
BUCKET = "sidecar-bench"
KEY, SECRET = "AKIABENCHKEY00000001", "bench-secret"
ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
server: {{access_log: false}}
connections:
  moto:
    type: aws
    region: us-east-1
    endpoint_url: {endpoint}
    addressing_style: path
    credentials: {{access_key_id: {key}, secret_access_key: {secret}}}
services:
  files: {{type: objectstore, backend: s3, connection: moto, bucket: {bucket}}}
"""
LABELS = {
    "sidecar_put": "sidecar PutObject",
    "direct_put": "aiobotocore multipart direct",
    "sidecar_get": "sidecar GetObject",
    "direct_get": "aiobotocore get_object direct",
}
DIRECT = {"sidecar_put": "direct_put", "sidecar_get": "direct_get"}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Clients:
    """The gRPC stub of the sidecar and the aiobotocore client of moto, and the payload."""

    def __init__(self, stub: Any, s3: Any) -> None:
        self.stub = stub
        self.s3 = s3
        self.block = os.urandom(MiB)
        digest = hashlib.sha256()
        for _ in range(SIZE // MiB):
            digest.update(self.block)
        self.sha256 = digest.hexdigest()
        self.payload = self.block * (SIZE // MiB)  # what the direct client uploads

    async def sidecar_put(self) -> None:
        from generated.integration.v1 import objectstore_pb2 as pb

        async def requests() -> AsyncIterator[Any]:
            header = pb.PutObjectHeader(key="bench/sidecar", sha256=self.sha256)
            yield pb.PutObjectRequest(target="files", header=header)
            for _ in range(SIZE // MiB):
                yield pb.PutObjectRequest(data=self.block)

        answer = await self.stub.PutObject(requests())
        assert answer.info.size == SIZE

    async def sidecar_get(self) -> None:
        from generated.integration.v1 import objectstore_pb2 as pb

        received = 0
        request = pb.GetObjectRequest(target="files", key="bench/sidecar")
        async for message in self.stub.GetObject(request):
            received += len(message.data)
        assert received == SIZE

    async def direct_put(self) -> None:
        s3, key = self.s3, "bench/direct"
        upload = (await s3.create_multipart_upload(Bucket=BUCKET, Key=key))["UploadId"]
        slots = asyncio.Semaphore(IN_FLIGHT)
        view = memoryview(self.payload)

        async def part(number: int, start: int) -> dict[str, Any]:
            async with slots:
                body = bytes(view[start : start + PART])
                answer = await s3.upload_part(
                    Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=number, Body=body
                )
                return {"ETag": answer["ETag"], "PartNumber": number}

        parts = await asyncio.gather(
            *(part(i + 1, start) for i, start in enumerate(range(0, SIZE, PART)))
        )
        await s3.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": list(parts)}
        )

    async def direct_get(self) -> None:
        answer = await self.s3.get_object(Bucket=BUCKET, Key="bench/direct")
        body = answer["Body"]
        received = 0
        while chunk := await body.read(READ):
            received += len(chunk)
        assert received == SIZE


async def _run(moto_url: str, sidecar: Server) -> None:
    import grpc
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession

    from generated.integration.v1 import objectstore_pb2_grpc

    session = AioSession()
    session.set_credentials(KEY, SECRET)
    config = AioConfig(
        retries={"total_max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": "path"},
        max_pool_connections=10,
    )
    async with (
        session.create_client(
            "s3", region_name="us-east-1", endpoint_url=moto_url, config=config
        ) as s3,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        clients = Clients(objectstore_pb2_grpc.ObjectStoreServiceStub(channel), s3)
        pid = sidecar.process.pid
        started_rss = peak_rss_mb(pid)
        cases: dict[str, Callable[[], Awaitable[None]]] = {
            "sidecar_put": clients.sidecar_put,
            "direct_put": clients.direct_put,
            "sidecar_get": clients.sidecar_get,
            "direct_get": clients.direct_get,
        }
        for run in cases.values():  # warm-up: clients made, connections open, objects there
            await run()
        warm_rss = peak_rss_mb(pid)
        rates: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(REPEATS):
            for name, run in cases.items():
                before_cpu = cpu_seconds(pid)
                began = time.perf_counter()
                await run()
                elapsed = time.perf_counter() - began
                rates[name].append(SIZE / MiB / elapsed)
                cpu[name].append(cpu_seconds(pid) - before_cpu)
        _report(rates, cpu, started_rss, warm_rss, peak_rss_mb(pid))


def _report(
    rates: dict[str, list[float]],
    cpu: dict[str, list[float]],
    started_rss: float,
    warm_rss: float,
    final_rss: float,
) -> None:
    print(
        f"\n# object store, one {OBJECT_MB} MB object per transfer (moto server, S3 API), "
        f"{REPEATS} interleaved repeats, medians"
    )
    print(f"{'case':<32}{'MB/s':>8}{'range':>15}{'sidecar cpu s':>15}{'vs direct':>11}")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, values in rates.items():
        spread = f"{min(values):.0f}-{max(values):.0f}"
        used = f"{statistics.median(cpu[name]):.2f}" if name in DIRECT else "-"
        versus = f"{medians[name] / medians[DIRECT[name]]:.2f}" if name in DIRECT else ""
        print(f"{LABELS[name]:<32}{medians[name]:>8.0f}{spread:>15}{used:>15}{versus:>11}")
    for name, direct in DIRECT.items():
        ratio = medians[name] / medians[direct]
        verdict = "met" if ratio >= 0.8 else "MISSED"
        print(f"  -> {LABELS[name]}: {ratio:.2f}x direct (target >= 0.80: {verdict})")
    print(
        f"  -> sidecar peak RSS (VmHWM): {started_rss:.0f} MB after start-up, {warm_rss:.0f} MB "
        f"after the warm-up transfers, {final_rss:.0f} MB at the end "
        f"(+{final_rss - started_rss:.0f} MB while streaming)"
    )


def main() -> int:
    moto_address = f"127.0.0.1:{free_port()}"
    sidecar_address = f"127.0.0.1:{free_port()}"
    host, port = moto_address.rsplit(":", 1)
    moto = start(
        "moto",
        [sys.executable, "-m", "moto.server", "-H", host, "-p", port],
        moto_address,
    )
    moto_url = f"http://{moto_address}"
    try:
        _create_bucket(moto_url)
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "sidecar.yaml"
            config.write_text(
                CONFIG.format(endpoint=moto_url, key=KEY, secret=SECRET, bucket=BUCKET)
            )
            sidecar = start(
                "sidecar",
                [
                    sys.executable,
                    "-m",
                    "sidecar",
                    "serve",
                    "--config",
                    str(config),
                    "--listen",
                    sidecar_address,
                ],
                sidecar_address,
            )
            try:
                asyncio.run(_run(moto_url, sidecar))
            finally:
                sidecar.process.terminate()
                sidecar.process.wait(10)
    finally:
        moto.process.terminate()
        moto.process.wait(10)
    return 0


def _create_bucket(moto_url: str) -> None:
    async def create() -> None:
        from aiobotocore.session import AioSession

        session = AioSession()
        session.set_credentials(KEY, SECRET)
        async with session.create_client(
            "s3", region_name="us-east-1", endpoint_url=moto_url
        ) as s3:
            await s3.create_bucket(Bucket=BUCKET)

    asyncio.run(create())


if __name__ == "__main__":
    raise SystemExit(main())
