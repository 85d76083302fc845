"""The object-store section of `make bench`: one large object (50 MB) put and got through the
sidecar (ObjectStoreService on `backend: s3`) and with aiobotocore used directly, against
the same moto server.

Three processes: moto in server mode (`python -m moto.server`), the sidecar (one
`type: objectstore, backend: s3` service on an aws connection to moto, default part_size
8 MiB and max_concurrent_parts 2), and this one, which drives both clients in turn:

- sidecar PutObject: 1 MiB data messages; sidecar GetObject: the stream of 256 KiB chunks;
- direct put: what an app would write with aiobotocore, a multipart upload of 8 MiB parts with
  2 in flight (the sidecar's settings); direct get: GetObject, the body read in 256 KiB reads.

Each case runs over two links to moto: loopback, where moto serves a download at ~1 GB/s,
faster than any gRPC stream on this machine (the "gRPC floor" case: a bare grpc.aio server
process streaming the same bytes in the same chunks, read by the same client), so no
sidecar can reach 0.8 of direct there; and an S3-like link, a TCP proxy pacing each
connection to BENCH_LINK_MBPS (default 40 MB/s, one S3 stream's order of magnitude and below
what the proxy itself can carry), which both clients go through: what an app sees against a
real object store.

Cases run interleaved, BENCH_REPEATS times (default 3); reported are the medians in MB/s,
the sidecar's throughput as a share of direct (target: at least 0.8) and of the floor, the
sidecar's CPU per transfer, and its peak RSS (VmHWM) after start-up and after every transfer.

Usage: make bench, or python -m bench.objectstore  (BENCH_REPEATS, BENCH_OBJECT_MB,
BENCH_LINK_MBPS)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.__main__ import Server, cpu_seconds, free_port, serve_command, start
from bench.results import record
from tests.faultproxy import FaultProxy

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
OBJECT_MB = int(os.environ.get("BENCH_OBJECT_MB", "50"))
LINK_MBPS = float(os.environ.get("BENCH_LINK_MBPS", "40"))
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
  moto-link:
    type: aws
    region: us-east-1
    endpoint_url: {link}
    addressing_style: path
    credentials: {{access_key_id: {key}, secret_access_key: {secret}}}
services:
  files: {{type: objectstore, backend: s3, connection: moto, bucket: {bucket}}}
  files-link: {{type: objectstore, backend: s3, connection: moto-link, bucket: {bucket}}}
"""
LABELS = {
    "sidecar_put": "sidecar PutObject",
    "direct_put": "aiobotocore multipart direct",
    "sidecar_get": "sidecar GetObject",
    "direct_get": "aiobotocore get_object direct",
    "floor_get": "gRPC floor (bare stream)",
}
DIRECT = {"sidecar_put": "direct_put", "sidecar_get": "direct_get"}
FLOOR_SERVER = """
import asyncio, os, sys
import grpc
from generated.integration.v1 import objectstore_pb2 as pb, objectstore_pb2_grpc as rpc

SIZE, CHUNK = int(sys.argv[2]), int(sys.argv[3])


class Floor(rpc.ObjectStoreServiceServicer):
    block = os.urandom(CHUNK)

    async def GetObject(self, request, context):
        await context.write(pb.GetObjectResponse(head=pb.GetObjectHead(range_length=SIZE)))
        for _ in range(SIZE // CHUNK):
            await context.write(pb.GetObjectResponse(data=self.block))


async def main():
    server = grpc.aio.server()
    rpc.add_ObjectStoreServiceServicer_to_server(Floor(), server)
    server.add_insecure_port(sys.argv[1])
    await server.start()
    await server.wait_for_termination()

asyncio.run(main())
"""


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Link:
    """One way to reach moto: the sidecar's service on it and a direct client of it."""

    def __init__(self, name: str, target: str, s3: Any) -> None:
        self.name = name
        self.target = target
        self.s3 = s3


class Clients:
    """The gRPC stubs (sidecar, floor) and the payload; each case takes the link it runs on."""

    def __init__(self, stub: Any, floor: Any) -> None:
        self.stub = stub
        self.floor = floor
        self.block = os.urandom(MiB)
        digest = hashlib.sha256()
        for _ in range(SIZE // MiB):
            digest.update(self.block)
        self.sha256 = digest.hexdigest()
        self.payload = self.block * (SIZE // MiB)  # what the direct client uploads

    async def sidecar_put(self, link: Link) -> None:
        from generated.integration.v1 import objectstore_pb2 as pb

        async def requests() -> AsyncIterator[Any]:
            header = pb.PutObjectHeader(key="bench/sidecar", sha256=self.sha256)
            yield pb.PutObjectRequest(target=link.target, header=header)
            for _ in range(SIZE // MiB):
                yield pb.PutObjectRequest(data=self.block)

        answer = await self.stub.PutObject(requests())
        assert answer.info.size == SIZE

    async def sidecar_get(self, link: Link) -> None:
        await self._grpc_get(self.stub, link.target)

    async def floor_get(self, link: Link) -> None:
        await self._grpc_get(self.floor, link.target)

    async def _grpc_get(self, stub: Any, target: str) -> None:
        from generated.integration.v1 import objectstore_pb2 as pb

        received = 0
        request = pb.GetObjectRequest(target=target, key="bench/sidecar")
        async for message in stub.GetObject(request):
            received += len(message.data)
        assert received == SIZE

    async def direct_put(self, link: Link) -> None:
        s3, key = link.s3, "bench/direct"
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

    async def direct_get(self, link: Link) -> None:
        answer = await link.s3.get_object(Bucket=BUCKET, Key="bench/direct")
        body = answer["Body"]
        received = 0
        while chunk := await body.read(READ):
            received += len(chunk)
        assert received == SIZE


async def _run(moto_url: str, link_url: str, sidecar: Server, floor: Server) -> None:
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
        session.create_client(
            "s3", region_name="us-east-1", endpoint_url=link_url, config=config
        ) as s3_link,
        grpc.aio.insecure_channel(sidecar.address) as channel,
        grpc.aio.insecure_channel(floor.address) as floor_channel,
    ):
        clients = Clients(
            objectstore_pb2_grpc.ObjectStoreServiceStub(channel),
            objectstore_pb2_grpc.ObjectStoreServiceStub(floor_channel),
        )
        links = (
            Link("loopback", "files", s3),
            Link(f"an S3-like link paced to {LINK_MBPS:.0f} MB/s", "files-link", s3_link),
        )
        pid = sidecar.process.pid
        started_rss = peak_rss_mb(pid)
        cases: dict[str, Callable[[Link], Awaitable[None]]] = {
            "sidecar_put": clients.sidecar_put,
            "direct_put": clients.direct_put,
            "sidecar_get": clients.sidecar_get,
            "direct_get": clients.direct_get,
            "floor_get": clients.floor_get,
        }
        for run in cases.values():  # warm-up: clients made, connections open, objects there
            await run(links[0])
        warm_rss = peak_rss_mb(pid)
        for link in links:
            # the floor reaches no upstream: it is measured once, beside the loopback cases
            names = [name for name in cases if name != "floor_get" or link is links[0]]
            rates: dict[str, list[float]] = {name: [] for name in names}
            cpu: dict[str, list[float]] = {name: [] for name in names}
            for _ in range(REPEATS):
                for name in names:
                    run = cases[name]
                    before_cpu = cpu_seconds(pid)
                    began = time.perf_counter()
                    await run(link)
                    elapsed = time.perf_counter() - began
                    rates[name].append(SIZE / MiB / elapsed)
                    cpu[name].append(cpu_seconds(pid) - before_cpu)
            _report(link.name, rates, cpu)
        final_rss = peak_rss_mb(pid)
        record("objectstore", "sidecar peak RSS", peak_rss_mb=final_rss)
        print(
            f"  -> sidecar peak RSS (VmHWM): {started_rss:.0f} MB after start-up, "
            f"{warm_rss:.0f} MB after the warm-up transfers, {final_rss:.0f} MB at the end "
            f"(+{final_rss - started_rss:.0f} MB while streaming)"
        )


def _report(link: str, rates: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    print(
        f"\n# object store over {link}: one {OBJECT_MB} MB object per transfer (moto server, "
        f"S3 API), {REPEATS} interleaved repeats, medians"
    )
    print(f"{'case':<32}{'MB/s':>8}{'range':>15}{'sidecar cpu s':>15}{'vs direct':>11}")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, values in rates.items():
        spread = f"{min(values):.0f}-{max(values):.0f}"
        used = f"{statistics.median(cpu[name]):.2f}" if name in DIRECT else "-"
        versus = f"{medians[name] / medians[DIRECT[name]]:.2f}" if name in DIRECT else ""
        print(f"{LABELS[name]:<32}{medians[name]:>8.0f}{spread:>15}{used:>15}{versus:>11}")
        record(
            "objectstore",
            f"{LABELS[name]} over {link}",
            mb_per_s=medians[name],
            server_cpu_s=statistics.median(cpu[name]) if name in DIRECT else None,
            vs_direct=medians[name] / medians[DIRECT[name]] if name in DIRECT else None,
        )
    for name, direct in DIRECT.items():
        ratio = medians[name] / medians[direct]
        verdict = "met" if ratio >= 0.8 else "MISSED"
        print(f"  -> {LABELS[name]}: {ratio:.2f}x direct (target >= 0.80: {verdict})")
    if "floor_get" in medians:
        floor = medians["sidecar_get"] / medians["floor_get"]
        print(f"  -> {LABELS['sidecar_get']}: {floor:.2f}x the gRPC floor")


def _paced_proxy(port: int) -> FaultProxy:
    """A proxy to moto pacing each connection to LINK_MBPS, on a thread of its own so that
    neither client's event loop carries it."""
    proxy = FaultProxy("127.0.0.1", port)
    proxy.rate = LINK_MBPS * 1_000_000
    ready = threading.Event()

    def serve() -> None:
        async def run() -> None:
            await proxy.start_accepting()
            ready.set()
            await asyncio.Event().wait()  # until the process exits (a daemon thread)

        asyncio.run(run())

    threading.Thread(target=serve, name="paced-link", daemon=True).start()
    ready.wait(10)
    return proxy


def main() -> int:
    moto_address = f"127.0.0.1:{free_port()}"
    sidecar_address = f"127.0.0.1:{free_port()}"
    floor_address = f"127.0.0.1:{free_port()}"
    host, port = moto_address.rsplit(":", 1)
    moto = start(
        "moto",
        [sys.executable, "-m", "moto.server", "-H", host, "-p", port],
        moto_address,
    )
    moto_url = f"http://{moto_address}"
    link_url = f"http://{_paced_proxy(int(port)).address}"
    floor = start(
        "gRPC floor",
        [sys.executable, "-c", FLOOR_SERVER, floor_address, str(SIZE), str(256 * 1024)],
        floor_address,
    )
    try:
        _create_bucket(moto_url)
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "sidecar.yaml"
            config.write_text(
                CONFIG.format(
                    endpoint=moto_url, link=link_url, key=KEY, secret=SECRET, bucket=BUCKET
                )
            )
            sidecar = start(
                "sidecar",
                serve_command(config, sidecar_address),
                sidecar_address,
            )
            try:
                asyncio.run(_run(moto_url, link_url, sidecar, floor))
            finally:
                sidecar.process.terminate()
                sidecar.process.wait(10)
    finally:
        for process in (floor.process, moto.process):
            process.terminate()
            process.wait(10)
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
