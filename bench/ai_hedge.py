"""The hedging case of `make bench`: time to first chunk, p50 and p99, of an alias with two
deployments whose first chunk has a long tail, without a hedge and with two kinds of hedge.

Both deployments are local fake OpenAI-compatible servers (tests/ai/fake_llm.py, real HTTP
and SSE) whose first chunk comes after 50 ms x Pareto(alpha 1.5), capped at 3 s (median
about 80 ms, p99 about 1.1 s), each delay drawn from a seeded RNG: every case meets the
same sequence of delays. The fakes and the load generator share this process; the sidecar
is its own process. Calls arrive at a steady RATE (independent callers, not a closed loop
that would measure the queue for the CPU), for BENCH_SECONDS per repeat, the cases
interleaved, BENCH_REPEATS times; figures are the medians of the repeats.

Cases: `no hedge` (the alias as before hedging), `hedge after 200ms`, `hedge after p95`
(the primary's recent times to first chunk). The floor is the primary's own scripted
first-chunk delays over the same calls (what a client calling it directly would see): no
hedge cannot beat it; a hedge can, by also asking the backup. Reported per case: p50 and
p99 in ms, the p99 as a share of no hedge's, and the extra upstream requests per call
(what the hedge costs the upstreams).

Usage: make bench, or python -m bench.ai_hedge  (BENCH_SECONDS, BENCH_REPEATS,
BENCH_HEDGE_RATE calls per second)
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench.__main__ import free_port
from bench.results import record
from generated.integration.v1 import ai_pb2, ai_pb2_grpc

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
RATE = float(os.environ.get("BENCH_HEDGE_RATE", "100"))
ROOT = Path(__file__).resolve().parent.parent
SCALE, ALPHA, CAP = 0.05, 1.5, 3.0
"""First-chunk delay: SCALE x Pareto(ALPHA) seconds, at most CAP."""
CASES = {"plain": "no hedge", "hedged": "hedge after 200ms", "hedged-p95": "hedge after p95"}
MODEL = """\
  {name}:
    type: ai_model
    provider: openai
    endpoint: http://127.0.0.1:{port}/v1
    auth: {{type: bearer, token: bench}}
    model: bench-model
    retry_policy: {{max_retries: 0}}
"""
ALIAS = """\
  {name}:
    type: ai_alias
    retry_policy: {{max_retries: 0}}
    deployments: [primary, backup]
{hedge}"""
HEDGES = {
    "plain": "",
    "hedged": "    hedge: {after: 200ms}\n",
    "hedged-p95": "    hedge: {after: p95}\n",
}


def _delays(seed: int, count: int) -> list[float]:
    rng = random.Random(seed)
    return [min(CAP, SCALE * rng.paretovariate(ALPHA)) for _ in range(count)]


def _percentile(values: list[float], percent: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


async def _serving(address: str, process: asyncio.subprocess.Process) -> None:
    """Wait until the sidecar accepts connections (without blocking the fakes' loop: the
    sidecar asks them for their models as it starts)."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + 30
    while True:
        try:
            _, writer = await asyncio.open_connection(host, int(port))
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline or process.returncode is not None:
                raise RuntimeError("sidecar did not start") from None
            await asyncio.sleep(0.05)


async def _run(target: str, stub: ai_pb2_grpc.AIServiceStub, calls: int) -> list[float]:
    """`calls` streamed completions on `target`, one every 1/RATE s: each time to first
    chunk in seconds."""
    request = ai_pb2.StreamCompleteRequest(
        target=target,
        messages=[ai_pb2.ChatMessage(role=ai_pb2.ROLE_USER, content="hi")],
    )

    async def one(index: int) -> float:
        await asyncio.sleep(index / RATE)
        started = time.perf_counter()
        first = 0.0
        async for _ in stub.StreamComplete(request, timeout=30):
            first = first or time.perf_counter() - started
        return first

    return await asyncio.gather(*(one(i) for i in range(calls)))


async def _bench() -> None:
    sys.path.insert(0, str(ROOT / "tests"))  # the fake upstream is the tests' own
    from ai.fake_llm import FakeLLM, Step

    primary, backup = await FakeLLM().start(), await FakeLLM().start()
    for fake in (primary, backup):
        fake.models = ["bench-model"]  # what the sidecar checks its configured model against
    address = f"127.0.0.1:{free_port()}"
    services = MODEL.format(name="primary", port=primary.http.port) + MODEL.format(
        name="backup", port=backup.http.port
    )
    services += "".join(ALIAS.format(name=name, hedge=HEDGES[name]) for name in CASES)
    calls = max(1, int(SECONDS * RATE))
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sidecar.yaml"
        config.write_text(f"server:\n  access_log: false\nservices:\n{services}")
        command = [sys.executable, "-m", "sidecar", "serve", "--config", str(config)]
        process = await asyncio.create_subprocess_exec(
            *command,
            "--listen",
            address,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        try:
            await _serving(address, process)
            async with grpc.aio.insecure_channel(address) as channel:
                stub = ai_pb2_grpc.AIServiceStub(channel)
                await _run("plain", stub, 50)  # warm-up: connections open
                figures: dict[str, list[tuple[float, float, float]]] = {c: [] for c in CASES}
                floors: list[tuple[float, float]] = []
                for repeat in range(REPEATS):
                    delays = _delays(repeat, calls)
                    floors.append((_percentile(delays, 50), _percentile(delays, 99)))
                    for case in CASES:
                        # Each case meets the same delays, in order of arrival.
                        for fake, seed in ((primary, repeat), (backup, 1000 + repeat)):
                            fake.script.clear()
                            fake.then(*(Step(first_delay=d) for d in _delays(seed, calls)))
                        extra_before = len(backup.completions)
                        firsts = await _run(case, stub, calls)
                        extra = (len(backup.completions) - extra_before) / calls
                        p50, p99 = _percentile(firsts, 50), _percentile(firsts, 99)
                        figures[case].append((p50, p99, extra))
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 10)
            await primary.close()
            await backup.close()
    _report(figures, floors, calls)


def _report(
    figures: dict[str, list[tuple[float, float, float]]],
    floors: list[tuple[float, float]],
    calls: int,
) -> None:
    print(
        f"\n# AI hedged first chunk: first chunk after {SCALE * 1000:.0f} ms x Pareto({ALPHA}) "
        f"(cap {CAP:.0f} s) on both deployments, {RATE:.0f} calls/s, {calls} calls x "
        f"{REPEATS} interleaved repeats, medians"
    )
    print(
        f"{'case':<26}{'TTFT p50 ms':>13}{'TTFT p99 ms':>13}{'p99 vs no hedge':>17}"
        f"{'extra/call':>12}"
    )
    floor50 = statistics.median(f[0] for f in floors) * 1000
    floor99 = statistics.median(f[1] for f in floors) * 1000
    print(f"{'upstream alone (floor)':<26}{floor50:>13.0f}{floor99:>13.0f}{'':>17}{'-':>12}")
    record("ai_hedge", "upstream alone (floor)", ttft_p50_ms=floor50, ttft_p99_ms=floor99)
    medians = {
        case: [statistics.median(run[i] for run in runs) for i in range(3)]
        for case, runs in figures.items()
    }
    plain99 = medians["plain"][1]
    for case, (p50, p99, extra) in medians.items():
        print(
            f"{CASES[case]:<26}{p50 * 1000:>13.0f}{p99 * 1000:>13.0f}{p99 / plain99:>16.2f}x"
            f"{extra:>12.2f}"
        )
        record(
            "ai_hedge",
            CASES[case],
            ttft_p50_ms=p50 * 1000,
            ttft_p99_ms=p99 * 1000,
            p99_vs_no_hedge=p99 / plain99,
            extra_requests_per_call=extra,
        )


def main() -> int:
    asyncio.run(_bench())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
