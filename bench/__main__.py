"""Run the benchmarks and print medians and ratios.

Every figure is a median of interleaved repeats; the floor (a no-op grpc.aio server with
the same client) runs in the same invocation, because this machine drifts between runs.
Server CPU per call comes from /proc/<pid>/stat (utime + stime).

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

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
CALLERS = (1, 16, 64)
CLK_TCK = os.sysconf("SC_CLK_TCK")
SIDECAR_CONFIG = """
server:
  access_log: false
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    address: str


def start(name: str, command: list[str], address: str) -> Server:
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


def measure(server: Server, workload: str, callers: int) -> dict[str, float]:
    before = cpu_seconds(server.process.pid)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.load",
            server.address,
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
    used = cpu_seconds(server.process.pid) - before
    result["server_cpu_us"] = used / max(result["calls"], 1) * 1e6
    return result


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sidecar.yaml"
        config.write_text(SIDECAR_CONFIG)
        noop_address = f"127.0.0.1:{free_port()}"
        sidecar_address = f"127.0.0.1:{free_port()}"
        noop = start(
            "noop", [sys.executable, "-m", "bench.noop_server", noop_address], noop_address
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
            print(f"# unary round trips, {SECONDS:.0f}s x {REPEATS} interleaved repeats, medians")
            print(
                f"{'case':<28}{'callers':>8}{'ops/s':>10}{'p50 us':>9}{'p99 us':>9}"
                f"{'srv cpu us':>12}{'vs floor':>10}"
            )
            cases = [(noop, "noop"), (sidecar, "cache_get"), (sidecar, "cache_set")]
            for callers in CALLERS:
                runs: dict[str, list[dict[str, float]]] = {w: [] for _, w in cases}
                for _ in range(REPEATS):
                    for server, workload in cases:
                        runs[workload].append(measure(server, workload, callers))
                floor = statistics.median(r["ops"] for r in runs["noop"])
                for _, workload in cases:
                    ops = statistics.median(r["ops"] for r in runs[workload])
                    p50 = statistics.median(r["p50_us"] for r in runs[workload])
                    p99 = statistics.median(r["p99_us"] for r in runs[workload])
                    cpu = statistics.median(r["server_cpu_us"] for r in runs[workload])
                    label = (
                        "grpc.aio no-op (floor)"
                        if workload == "noop"
                        else (f"sidecar {workload.replace('_', '.')} (memory)")
                    )
                    print(
                        f"{label:<28}{callers:>8}{ops:>10.0f}{p50:>9.0f}{p99:>9.0f}"
                        f"{cpu:>12.0f}{ops / floor:>10.2f}"
                    )
        finally:
            for server in (noop, sidecar):
                server.process.terminate()
                server.process.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
