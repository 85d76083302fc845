"""Run the benchmarks and print medians and ratios.

Every figure is a median of interleaved repeats; the floor (a no-op grpc.aio server with
the same client) runs in the same invocation, because this machine drifts between runs. The
sidecar runs on uvloop: the ratios are to the bare floor on asyncio's own loop, and a second
no-op on uvloop is measured beside it to show what the loop alone gives.
Server CPU per call comes from /proc/<pid>/stat (utime + stime).

The Redis cases run Cache.Get/Set through the sidecar against a `backend: redis` cache, and
the same GET/SET with redis-py used directly (what an app without the sidecar would do):
"vs floor" compares with the no-op gRPC server (medians; "range" is the lowest and highest
ratio of one repeat to the floor measured beside it), "vs direct" with the direct client. Get
runs twice: every call a Redis round trip, and on a cache with `near_cache` enabled, where
repeated Gets of the (unchanging) key are answered locally. The Redis is the one on
127.0.0.1:6379, or a redis-server started for the run.

`cache.get, traced` runs the memory cache's Get on a second sidecar with `tracing:`
configured (ratio 0, an OTLP endpoint nothing listens on: nothing is exported), each call
carrying a caller's traceparent that is not sampled; a third sidecar with the same services
and no `tracing:` gets the same calls, traceparent included. The difference of their server
CPU per call is what tracing costs a sampled-out call (printed after the table; target
under 10 µs): both parse the same metadata, so only the tracing work differs. On a busy
machine that difference drowns in noise, so `bench/tracing.py` also times the per-call
tracing hooks alone, in-process CPU time.

The SQL case runs a one-row SqlService.Query through the sidecar against PostgreSQL, and the
same query on an asyncpg pool used directly ("vs direct"). It runs when PostgreSQL answers
at BENCH_PG_DSN (default postgresql://postgres@127.0.0.1:5432/postgres).

The AI section (`bench/ai.py`, also `python -m bench.ai` alone) streams completions through
the sidecar and with the openai SDK directly from the same local SSE server;
`bench/ai_hedge.py` (`python -m bench.ai_hedge`) times first chunks with and without a hedge;
`bench/ai_budget.py` (`python -m bench.ai_budget`) what a token budget on Redis costs a call.
The other sections, each also runnable alone as `python -m bench.<name>`: `startup` (start to
SERVING and idle RSS), `sql_stream` (a 100,000-row QueryStream), `http`, `objectstore`,
`pubsub` (delivery to one subscriber, batched against the one-message stream floor, and
latency at 1,000 msg/s), `brokers` and `kafka`. The unary table also runs a Batch of 100 Gets.

Every figure printed is also written to bench/results.json (`bench/results.py`).

Usage: make bench  (BENCH_SECONDS, BENCH_REPEATS to change the run length)
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.results import record, write

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
CALLERS = (1, 16, 64)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PG_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SIDECAR_CONFIG = """
server:
  access_log: false
services:
  cache: {{type: cache}}
  pubsub: {{type: pubsub}}
  redis: {{type: cache, backend: redis, host: {host}, port: {port}, key_prefix: "sidecar-bench:"}}
  redis-near:
    type: cache
    backend: redis
    host: {host}
    port: {port}
    key_prefix: "sidecar-bench:"
    near_cache: {{enabled: true}}
  sql-bench: {{type: sql, backend: postgres, dsn: "{pg_dsn}"}}
"""
UNTRACED_CONFIG = """
server:
  access_log: false
services:
  cache: {{type: cache}}
"""
TRACED_CONFIG = (
    UNTRACED_CONFIG
    + """
integration:
  tracing:
    sampling_ratio: 0.0
    otlp: {{endpoint: "http://127.0.0.1:{port}"}}
"""
)
LABELS = {
    "noop": "grpc.aio no-op (floor)",
    "noop_uvloop": "grpc.aio no-op on uvloop",
    "cache_get": "sidecar cache.get (memory)",
    "cache_set": "sidecar cache.set (memory)",
    "cache_get_traced": "  ... traced, sampled out",
    "cache_get_traceparent": "  ... untraced, same metadata",
    "redis_get": "sidecar cache.get (redis)",
    "redis_near_get": "  ... with near_cache",
    "redis_set": "sidecar cache.set (redis)",
    "redispy_get": "redis-py GET direct",
    "redispy_set": "redis-py SET direct",
    "sql_query": "sidecar sql.query (postgres)",
    "cache_batch": "sidecar batch of 100 (memory)",
    "redis_batch": "sidecar batch of 100 (redis)",
    "asyncpg_query": "asyncpg query direct",
}
# Each sidecar case and the client used directly that it is compared with.
DIRECT = {
    "redis_get": "redispy_get",
    "redis_near_get": "redispy_get",
    "redis_set": "redispy_set",
    "sql_query": "asyncpg_query",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(config: Path | None, address: str) -> list[str]:
    """The command serving the sidecar on `config` (None: the embedded defaults) at `address`."""
    command = [sys.executable, "-m", "sidecar", "serve", "--listen", address]
    return command if config is None else [*command, "--config", str(config)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    address: str


def start(
    name: str, command: list[str], address: str, process: subprocess.Popen[bytes] | None = None
) -> Server:
    """Start `command` (unless `process` is already running) and wait until it listens."""
    if process is None:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{name} did not start") from None
            time.sleep(0.05)
    return Server(name, process, address)


def measure(server: Server | None, address: str, workload: str, callers: int) -> dict[str, float]:
    """One run of `workload`; server CPU per call when a server process serves it."""
    before = cpu_seconds(server.process.pid) if server else 0.0
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.load",
            address,
            workload,
            str(callers),
            str(SECONDS),
            "0.5",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    if server is not None:
        used = cpu_seconds(server.process.pid) - before
        result["server_cpu_us"] = used / max(result["calls"], 1) * 1e6
    return result


def redis_address() -> tuple[str, int, subprocess.Popen[bytes] | None]:
    """The Redis on 127.0.0.1:6379 if it answers, else a redis-server started here."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(16).startswith(b"+PONG"):
                return "127.0.0.1", 6379, None
    except OSError:
        pass
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    start("redis", [], f"127.0.0.1:{port}", process)
    return "127.0.0.1", port, process


def postgres_answers(dsn: str) -> bool:
    """Whether something listens at the DSN's host and port."""
    from urllib.parse import urlsplit

    parts = urlsplit(dsn)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 0.5).close()
    except OSError:
        return False
    return True


def report(
    cases: list[tuple[Server | None, str, str]],
    runs: dict[str, list[dict[str, float]]],
    callers: int,
) -> None:
    """Print (and record for results.json) each case's medians at `callers`."""
    ops = {w: statistics.median(r["ops"] for r in runs[w]) for w in runs}
    # Each repeat's ratio to the floor measured next to it: the machine drifts between
    # repeats, so the range shows how far one figure can be trusted.
    paired = {
        w: sorted(r["ops"] / f["ops"] for r, f in zip(runs[w], runs["noop"], strict=True))
        for w in runs
    }
    for server, _, workload in cases:
        p50 = statistics.median(r["p50_us"] for r in runs[workload])
        p99 = statistics.median(r["p99_us"] for r in runs[workload])
        cpu = statistics.median(r["server_cpu_us"] for r in runs[workload]) if server else None
        direct = DIRECT.get(workload)
        versus = ops[workload] / ops[direct] if direct else None
        spread = f"{paired[workload][0]:.2f}-{paired[workload][-1]:.2f}"
        print(
            f"{LABELS[workload]:<28}{callers:>8}{ops[workload]:>10.0f}{p50:>9.0f}{p99:>9.0f}"
            f"{f'{cpu:.0f}' if cpu is not None else '-':>12}"
            f"{ops[workload] / ops['noop']:>10.2f}{spread:>11}"
            f"{f'{versus:.2f}' if versus is not None else '':>11}"
        )
        record(
            "unary",
            LABELS[workload].strip(" ."),
            callers=callers,
            ops_per_s=ops[workload],
            p50_us=p50,
            p99_us=p99,
            server_cpu_us=cpu,
            vs_floor=ops[workload] / ops["noop"],
            vs_direct=versus,
        )


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def launch(tmp: str, host: str, port: int) -> tuple[dict[str, Server], list[Server]]:
    """The floors and the sidecars, each serving on a free port, by name; and all of them,
    for stopping. Every process starts before any is waited for, and a failed start stops
    them all."""
    configs = {
        "sidecar": SIDECAR_CONFIG.format(host=host, port=port, pg_dsn=PG_DSN),
        "traced": TRACED_CONFIG.format(port=free_port()),
        "untraced": UNTRACED_CONFIG.format(),
    }
    commands: dict[str, list[str]] = {
        "noop": ["-m", "bench.noop_server", "{address}", "asyncio"],
        "noop_uvloop": ["-m", "bench.noop_server", "{address}", "uvloop"],
    }
    for name, text in configs.items():
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(text)
        commands[name] = ["-m", "sidecar", "serve", "--config", str(path), "--listen", "{address}"]
    launched: list[Server] = []
    for name, command in commands.items():
        address = f"127.0.0.1:{free_port()}"
        process = subprocess.Popen(
            [sys.executable, *(part.format(address=address) for part in command)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        launched.append(Server(name, process, address))
    try:
        return {s.name: start(s.name, [], s.address, s.process) for s in launched}, launched
    except RuntimeError:
        for server in launched:
            server.process.kill()
        raise


def main() -> int:
    host, port, own_redis = redis_address()
    with tempfile.TemporaryDirectory() as tmp:
        servers, launched = launch(tmp, host, port)
        noop, noop_uvloop = servers["noop"], servers["noop_uvloop"]
        sidecar, traced, untraced = servers["sidecar"], servers["traced"], servers["untraced"]
        noop_address, noop_uvloop_address = noop.address, noop_uvloop.address
        sidecar_address, traced_address = sidecar.address, traced.address
        untraced_address = untraced.address
        redis_direct = f"{host}:{port}"
        cases: list[tuple[Server | None, str, str]] = [
            (noop, noop_address, "noop"),
            (noop_uvloop, noop_uvloop_address, "noop_uvloop"),
            (sidecar, sidecar_address, "cache_get"),
            (traced, traced_address, "cache_get_traced"),
            (untraced, untraced_address, "cache_get_traceparent"),
            (sidecar, sidecar_address, "cache_set"),
            (sidecar, sidecar_address, "redis_get"),
            (sidecar, sidecar_address, "redis_near_get"),
            (None, redis_direct, "redispy_get"),
            (sidecar, sidecar_address, "redis_set"),
            (None, redis_direct, "redispy_set"),
            (sidecar, sidecar_address, "cache_batch"),
            (sidecar, sidecar_address, "redis_batch"),
        ]
        if postgres_answers(PG_DSN):
            cases += [(sidecar, sidecar_address, "sql_query"), (None, PG_DSN, "asyncpg_query")]
        try:
            print(f"# unary round trips, {SECONDS:.0f}s x {REPEATS} interleaved repeats, medians")
            print(
                f"{'case':<28}{'callers':>8}{'ops/s':>10}{'p50 us':>9}{'p99 us':>9}"
                f"{'srv cpu us':>12}{'vs floor':>10}{'range':>11}{'vs direct':>11}"
            )
            for callers in CALLERS:
                runs: dict[str, list[dict[str, float]]] = {w: [] for _, _, w in cases}
                for _ in range(REPEATS):
                    for server, address, workload in cases:
                        runs[workload].append(measure(server, address, workload, callers))
                report(cases, runs, callers)
                cost = statistics.median(
                    t["server_cpu_us"] - p["server_cpu_us"]
                    for t, p in zip(
                        runs["cache_get_traced"], runs["cache_get_traceparent"], strict=True
                    )
                )
                print(f"  tracing, sampled out: {cost:+.1f} us of server CPU per call (< 10)")
            for server in launched:
                record(
                    "unary",
                    f"peak RSS of {server.name}",
                    peak_rss_mb=peak_rss_mb(server.process.pid),
                )
        finally:
            for server in launched:
                server.process.terminate()
                server.process.wait(10)
            if own_redis is not None:
                own_redis.terminate()
                own_redis.wait(10)
    from bench import (
        ai,  # streamed AI completions: sidecar vs the openai SDK direct
        ai_budget,  # an AI token budget's reserve + reconcile per call: local vs Redis
        ai_hedge,  # time to first chunk with and without a hedge, on a long-tailed upstream
        brokers,  # reliable topics on RabbitMQ and NATS: sidecar vs aio-pika / nats-py direct
        http,  # REST calls: HttpService.Call vs httpx direct
        kafka,  # Kafka-protocol topics (Tansu): sidecar vs aiokafka direct
        objectstore,  # a 50 MB object: ObjectStoreService on S3 vs aiobotocore direct
        pubsub,  # delivery to one subscriber, batched vs the one-message stream; latency
        sql_stream,  # a 100,000-row QueryStream: sidecar vs an asyncpg cursor direct
        startup,  # start to SERVING and idle RSS: embedded defaults and every backend
        tracing,  # the per-call tracing hooks in-process, sampled out vs untraced
    )

    sections = (
        tracing,
        startup,
        sql_stream,
        ai,
        ai_hedge,
        ai_budget,
        http,
        objectstore,
        pubsub,
        brokers,
        kafka,
    )
    for section in sections:
        if section.main():
            return 1
    write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
