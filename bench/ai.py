"""The AI section of `make bench`: streamed completions through the sidecar versus the
`openai` SDK used directly, against the same local OpenAI-compatible SSE server.

Three processes: the fake upstream (tests/ai/fake_llm.py, real HTTP and SSE in the exact
OpenAI chunk format, one word per chunk, as fast as the reader takes them), the sidecar
(two `ai_model` services pointing at it: the default, which merges chunks that pile up while
a write to the client is in flight, and one with `coalesce_chunks: false`, one gRPC message
per upstream chunk), and the load generator, which runs the variants interleaved, at 1 and
32 concurrent streams. Reported per variant: the median time to
first token, upstream chunks delivered per second, and (sidecar) its CPU per chunk; then
the sidecar's TTFT added over direct (target: under 1 ms) and its chunk rate as a share of
direct (target: at least 0.90).

The paced case is what real models look like: a second fake upstream sends each chunk
after 10 ms (100 tokens/s per answer, 100 words), 64 streams at once, to a
`coalesce_chunks: false` service, so every chunk is one gRPC message. Beside it, in the same
run and interleaved, a bare grpc.aio server (`--floor`, no sidecar code) streams the same
number of messages of the same size at the same pace to the same client code, and the openai
SDK reads the paced upstream directly. Reported: the sidecar's server CPU per chunk, the
floor's per message, their ratio (target: at most 1.3), and the TTFT the sidecar adds over
the floor (which waits the same 10 ms before its first message). Server CPU is each
process's whole-run CPU (/proc) over every chunk of the run.

Usage: make bench, or python -m bench.ai [paced]  (BENCH_SECONDS, BENCH_REPEATS,
BENCH_AI_WORDS; `paced` runs the paced case alone)
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc

from bench.__main__ import CLK_TCK, Server, cpu_seconds, free_port, serve_command, start
from bench.results import record

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
WORDS = int(os.environ.get("BENCH_AI_WORDS", "200"))
STREAMS = (1, 32)
PACED_STREAMS = 64
PACED_WORDS = 100
PACED_DELAY = 0.01  # seconds before each chunk: 100 tokens/s per answer
ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
server:
  access_log: false
services:
  bench:
    type: ai_model
    provider: openai
    endpoint: http://{upstream}/v1
    auth: {{type: bearer, token: bench}}
    model: bench-model
    retry_policy: {{max_retries: 0}}
  bench-exact:
    type: ai_model
    provider: openai
    endpoint: http://{upstream}/v1
    auth: {{type: bearer, token: bench}}
    model: bench-model
    retry_policy: {{max_retries: 0}}
    coalesce_chunks: false
  bench-paced:
    type: ai_model
    provider: openai
    endpoint: http://{paced}/v1
    auth: {{type: bearer, token: bench}}
    model: bench-model
    retry_policy: {{max_retries: 0}}
    coalesce_chunks: false
"""
LABELS = {
    "direct": "openai SDK direct",
    "sidecar": "sidecar StreamComplete",
    "exact": "sidecar, 1 msg per chunk",
    "paced": "sidecar, paced, 1 msg per chunk",
    "floor": "grpc.aio stream, paced (floor)",
    "paced_direct": "openai SDK direct, paced",
}


def measure(
    mode: str, address: str, streams: int, server: Server | None, *floor: str
) -> dict[str, float]:
    """One run; `server`'s CPU per chunk (over the whole run) when a server is given."""
    before = cpu_seconds(server.process.pid) if server is not None else 0.0
    load = "direct" if mode == "paced_direct" else mode
    command = [sys.executable, "-m", "bench.ai_load", load, address, str(streams)]
    out = subprocess.run(
        [*command, str(SECONDS), "0.5", *floor],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    result: dict[str, float] = json.loads(out)
    used = cpu_seconds(server.process.pid) - before if server is not None else 0.0
    result["sidecar_cpu_us"] = used / max(result["all_chunks"], 1) * 1e6
    return result


def _upstream(name: str, address: str, *arguments: str) -> Server:
    """Start a fake upstream (`tests/ai/fake_llm.py`) with `arguments`, or, when the first
    is `--paced`, the paced one of this module."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    paced = arguments[:1] == ("--paced",)
    module, flag = ("bench.ai", ["--paced"]) if paced else ("ai.fake_llm", [])
    command = [sys.executable, "-m", module, *flag, address, *arguments[len(flag) :]]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment, cwd=ROOT
    )
    return start(name, [], address, process)


def main(arguments: Sequence[str] = ()) -> int:
    paced_only = list(arguments[:1]) == ["paced"]
    servers: list[Server] = []
    try:
        upstream = _upstream("fake upstream", f"127.0.0.1:{free_port()}", str(WORDS))
        servers.append(upstream)
        paced = _upstream(
            "paced upstream",
            f"127.0.0.1:{free_port()}",
            "--paced",
            str(PACED_WORDS),
            str(PACED_DELAY),
        )
        servers.append(paced)
        floor_address = f"127.0.0.1:{free_port()}"
        floor_command = [sys.executable, "-m", "bench.ai", "--floor", floor_address]
        servers.append(start("floor", floor_command, floor_address))
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "sidecar.yaml"
            config.write_text(CONFIG.format(upstream=upstream.address, paced=paced.address))
            sidecar_address = f"127.0.0.1:{free_port()}"
            sidecar = start("sidecar", serve_command(config, sidecar_address), sidecar_address)
            servers.append(sidecar)
            if not paced_only:
                _report(upstream.address, sidecar)
            _report_paced(paced.address, sidecar, servers[2])
    finally:
        for server in reversed(servers):
            server.process.terminate()
            server.process.wait(10)
    return 0


def _report(upstream: str, sidecar: Server) -> None:
    print(
        f"\n# AI streaming, {WORDS} chunks per answer (OpenAI SSE format, local server), "
        f"{SECONDS:.0f}s x {REPEATS} interleaved repeats, medians (clock tick {CLK_TCK}/s)"
    )
    print(
        f"{'case':<26}{'streams':>8}{'TTFT p50 ms':>13}{'chunks/s':>10}{'msgs/s':>9}"
        f"{'sidecar cpu us/chunk':>22}"
    )
    addresses = {"direct": upstream, "sidecar": sidecar.address, "exact": sidecar.address}
    for streams in STREAMS:
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in addresses}
        for _ in range(REPEATS):
            for mode, results in runs.items():
                server = sidecar if mode != "direct" else None
                results.append(measure(mode, addresses[mode], streams, server))
        medians = {
            mode: {key: statistics.median(r[key] for r in results) for key in results[0]}
            for mode, results in runs.items()
        }
        for mode, figures in medians.items():
            cpu = f"{figures['sidecar_cpu_us']:.0f}" if mode != "direct" else "-"
            print(
                f"{LABELS[mode]:<26}{streams:>8}{figures['ttft_p50_ms']:>13.2f}"
                f"{figures['chunks_per_s']:>10.0f}{figures['messages_per_s']:>9.0f}{cpu:>22}"
            )
            record(
                "ai_streaming",
                LABELS[mode],
                streams=streams,
                ttft_p50_ms=figures["ttft_p50_ms"],
                chunks_per_s=figures["chunks_per_s"],
                messages_per_s=figures["messages_per_s"],
                server_cpu_us_per_chunk=figures["sidecar_cpu_us"] if mode != "direct" else None,
                vs_direct=figures["chunks_per_s"] / medians["direct"]["chunks_per_s"],
            )
        for mode in ("sidecar", "exact"):
            added = medians[mode]["ttft_p50_ms"] - medians["direct"]["ttft_p50_ms"]
            rate = medians[mode]["chunks_per_s"] / medians["direct"]["chunks_per_s"]
            verdict = (
                f" (targets: TTFT < +1 ms {'met' if added < 1 else 'MISSED'}, "
                f"chunks >= 0.90x {'met' if rate >= 0.9 else 'MISSED'})"
                if mode == "sidecar"
                else " (informational: coalescing off)"
            )
            print(
                f"  -> {LABELS[mode]}, {streams} stream(s): TTFT added {added:+.2f} ms, "
                f"chunk rate {rate:.2f}x direct{verdict}"
            )


def _report_paced(upstream: str, sidecar: Server, floor: Server) -> None:
    print(
        f"\n# AI streaming at a model's pace: {PACED_STREAMS} streams, {PACED_WORDS} chunks "
        f"per answer, one every {PACED_DELAY * 1e3:.0f} ms, one gRPC message per chunk, "
        f"{SECONDS:.0f}s x {REPEATS} interleaved repeats, medians"
    )
    print(f"{'case':<34}{'TTFT p50 ms':>13}{'chunks/s':>10}{'server cpu us/chunk':>21}")
    request = (str(PACED_WORDS), str(PACED_DELAY))
    cases: dict[str, tuple[str, Server | None, tuple[str, ...]]] = {
        "paced": (sidecar.address, sidecar, ()),
        "floor": (floor.address, floor, request),
        "paced_direct": (upstream, None, ()),
    }
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in cases}
    ratios: list[float] = []
    for _ in range(REPEATS):
        for mode, (address, server, floor_request) in cases.items():
            runs[mode].append(measure(mode, address, PACED_STREAMS, server, *floor_request))
        ratios.append(runs["paced"][-1]["sidecar_cpu_us"] / runs["floor"][-1]["sidecar_cpu_us"])
    medians = {
        mode: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for mode, results in runs.items()
    }
    for mode, figures in medians.items():
        cpu = f"{figures['sidecar_cpu_us']:.0f}" if mode != "paced_direct" else "-"
        print(
            f"{LABELS[mode]:<34}{figures['ttft_p50_ms']:>13.2f}"
            f"{figures['chunks_per_s']:>10.0f}{cpu:>21}"
        )
    ratio = medians["paced"]["sidecar_cpu_us"] / medians["floor"]["sidecar_cpu_us"]
    # Over the floor, which waits the same first 10 ms: what the HTTP hop and the sidecar
    # add (the openai SDK direct is no floor here: at 64 streams its client is CPU-bound).
    added = medians["paced"]["ttft_p50_ms"] - medians["floor"]["ttft_p50_ms"]
    print(
        f"  -> sidecar server CPU per chunk {ratio:.2f}x the floor's per message "
        f"(repeats {min(ratios):.2f}-{max(ratios):.2f}; target <= 1.3 "
        f"{'met' if ratio <= 1.3 else 'MISSED'}), TTFT added over the floor {added:+.2f} ms"
    )
    record(
        "ai_streaming_paced",
        LABELS["paced"],
        streams=PACED_STREAMS,
        ttft_p50_ms=medians["paced"]["ttft_p50_ms"],
        ttft_added_ms=added,
        chunks_per_s=medians["paced"]["chunks_per_s"],
        server_cpu_us_per_chunk=medians["paced"]["sidecar_cpu_us"],
        floor_cpu_us_per_message=medians["floor"]["sidecar_cpu_us"],
        vs_floor=ratio,
        vs_floor_min=min(ratios),
        vs_floor_max=max(ratios),
    )
    for mode in ("floor", "paced_direct"):
        record(
            "ai_streaming_paced",
            LABELS[mode],
            streams=PACED_STREAMS,
            ttft_p50_ms=medians[mode]["ttft_p50_ms"],
            chunks_per_s=medians[mode]["chunks_per_s"],
            server_cpu_us_per_chunk=medians[mode]["sidecar_cpu_us"] if mode == "floor" else None,
        )


# -- the processes this module runs besides the report ---------------------------------------


async def _floor_stream(request: bytes, _context: object) -> AsyncIterator[bytes]:
    """WORDS pre-serialized one-word StreamCompleteResponses, one every DELAY seconds: what
    the sidecar writes for the paced upstream, with no sidecar code."""
    from generated.integration.v1 import ai_pb2

    words, delay = request.split()
    frames = [
        ai_pb2.StreamCompleteResponse(content=f"w{i} ").SerializeToString()
        for i in range(int(words))
    ]
    pause = float(delay)
    for frame in frames:
        await asyncio.sleep(pause)
        yield frame


async def _serve_floor(address: str) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_stream_rpc_method_handler(_floor_stream)  # type: ignore[arg-type]
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.AIFloor", {"Stream": handler}),)
    )
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


async def _serve_paced(address: str, words: int, delay: float) -> None:
    """The fake upstream, every answer paced: `delay` seconds before each chunk."""
    from ai.fake_llm import FakeLLM, Step  # tests/ on PYTHONPATH (see `_upstream`)

    fake = FakeLLM([f"w{i}" for i in range(words)])
    fake.default = Step(delay=delay)
    await fake.start(port=int(address.rsplit(":", 1)[1]))
    await asyncio.Event().wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--floor"]:
        asyncio.run(_serve_floor(sys.argv[2]))
    elif sys.argv[1:2] == ["--paced"]:
        asyncio.run(_serve_paced(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    else:
        raise SystemExit(main(sys.argv[1:]))
