"""The REST section of `make bench`: HttpService.Call through the sidecar versus httpx used
directly, against the same local upstream, as a ratio.

Three processes: the upstream (the tests' asyncio HTTP/1.1 server, `tests/ai/fake_http.py`,
answering every GET with a small JSON body), the sidecar (one `api` service on it), and the
load generator, which runs both variants interleaved at 1 and 16 concurrent callers, each a
loop of calls for BENCH_SECONDS. Reported per variant: calls per second, p50 and p99
latency, and (sidecar) its CPU per call; then the sidecar's calls per second as a share of
direct httpx.

Usage: make bench, or python -m bench.http  (BENCH_SECONDS, BENCH_REPEATS)
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.__main__ import CLK_TCK, Server, cpu_seconds, free_port, start
from bench.results import record

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
CALLERS = (1, 16)
ROOT = Path(__file__).resolve().parent.parent
BODY = {"id": 42, "name": "widget", "tags": ["a", "b", "c"], "price": 9.99}
CONFIG = """
server:
  access_log: false
services:
  bench:
    type: api
    base_url: http://{upstream}/v1
    auth: {{type: bearer, token: bench}}
    retry_policy: {{max_retries: 0}}
"""
LABELS = {"direct": "httpx direct", "sidecar": "sidecar HttpService.Call"}


async def _serve(address: str) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from ai.fake_http import FakeHTTPServer, Request, Responder

    async def handler(request: Request, responder: Responder) -> None:
        await responder.send_json(200, BODY)

    host, port = address.rsplit(":", 1)
    server = FakeHTTPServer(handler)
    await server.start(host, int(port))
    await asyncio.Event().wait()


async def _load(mode: str, address: str, callers: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    if mode == "direct":
        import httpx

        client = httpx.AsyncClient(
            base_url=f"http://{address}/v1", headers={"Authorization": "Bearer bench"}
        )

        async def one() -> None:
            response = await client.get("/items/42")
            assert response.status_code == 200
            response.json()

        close = client.aclose
    else:
        import grpc

        from generated.integration.v1 import http_pb2, http_pb2_grpc

        channel = grpc.aio.insecure_channel(address)
        stub = http_pb2_grpc.HttpServiceStub(channel)
        message = http_pb2.HttpServiceCallRequest(
            request=http_pb2.HttpRequest(target="bench", method="GET", path="items/42")
        )

        async def one() -> None:
            answer = await stub.Call(message)
            assert answer.status == 200
            json.loads(answer.body)

        async def close() -> None:
            await channel.close()

    async def caller() -> None:
        while (now := time.perf_counter()) < stop_at:
            await one()
            latencies.append(time.perf_counter() - now)

    for _ in range(20):  # warm-up: connections, tokens, imports
        await one()
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    await close()
    latencies.sort()
    return {
        "calls": len(latencies),
        "ops": len(latencies) / elapsed,
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99) - 1] * 1e6,
    }


def measure(mode: str, address: str, callers: int, sidecar: Server) -> dict[str, float]:
    before = cpu_seconds(sidecar.process.pid)
    out = subprocess.run(
        [sys.executable, "-m", "bench.http", "load", mode, address, str(callers), str(SECONDS)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    result: dict[str, float] = json.loads(out)
    used = cpu_seconds(sidecar.process.pid) - before
    result["cpu_us"] = used / max(result["calls"], 1) * 1e6 if mode == "sidecar" else 0.0
    return result


def main() -> int:
    upstream_address = f"127.0.0.1:{free_port()}"
    sidecar_address = f"127.0.0.1:{free_port()}"
    upstream = start(
        "upstream",
        [sys.executable, "-m", "bench.http", "upstream", upstream_address],
        upstream_address,
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sidecar.yaml"
        config.write_text(CONFIG.format(upstream=upstream_address))
        command = [sys.executable, "-m", "sidecar", "serve", "--config", str(config)]
        sidecar = start("sidecar", [*command, "--listen", sidecar_address], sidecar_address)
        try:
            _report(upstream_address, sidecar_address, sidecar)
        finally:
            for server in (sidecar, upstream):
                server.process.terminate()
                server.process.wait(10)
    return 0


def _report(upstream: str, sidecar_address: str, sidecar: Server) -> None:
    print(
        f"\n# REST: one small JSON GET (local HTTP/1.1 upstream), {SECONDS:.0f}s x {REPEATS} "
        f"interleaved repeats, medians (clock tick {CLK_TCK}/s)"
    )
    print(
        f"{'case':<28}{'callers':>8}{'ops/s':>10}{'p50 us':>9}{'p99 us':>9}"
        f"{'sidecar cpu us':>16}{'vs httpx':>10}"
    )
    addresses = {"direct": upstream, "sidecar": sidecar_address}
    for callers in CALLERS:
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in LABELS}
        for _ in range(REPEATS):
            for mode, results in runs.items():
                results.append(measure(mode, addresses[mode], callers, sidecar))
        medians = {
            mode: {key: statistics.median(r[key] for r in results) for key in results[0]}
            for mode, results in runs.items()
        }
        for mode, figures in medians.items():
            cpu = f"{figures['cpu_us']:.0f}" if mode == "sidecar" else "-"
            ratio = figures["ops"] / medians["direct"]["ops"]
            print(
                f"{LABELS[mode]:<28}{callers:>8}{figures['ops']:>10.0f}{figures['p50_us']:>9.0f}"
                f"{figures['p99_us']:>9.0f}{cpu:>16}{ratio:>10.2f}"
            )
            record(
                "http",
                LABELS[mode],
                callers=callers,
                ops_per_s=figures["ops"],
                p50_us=figures["p50_us"],
                p99_us=figures["p99_us"],
                server_cpu_us=figures["cpu_us"] if mode == "sidecar" else None,
                vs_direct=ratio,
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "upstream":
        asyncio.run(_serve(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "load":
        mode, address, callers, seconds = sys.argv[2:6]
        print(json.dumps(asyncio.run(_load(mode, address, int(callers), float(seconds)))))
    else:
        raise SystemExit(main())
