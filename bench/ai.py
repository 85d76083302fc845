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

Usage: make bench, or python -m bench.ai  (BENCH_SECONDS, BENCH_REPEATS, BENCH_AI_WORDS)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.__main__ import CLK_TCK, Server, cpu_seconds, free_port, serve_command, start
from bench.results import record

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
WORDS = int(os.environ.get("BENCH_AI_WORDS", "200"))
STREAMS = (1, 32)
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
"""
LABELS = {
    "direct": "openai SDK direct",
    "sidecar": "sidecar StreamComplete",
    "exact": "sidecar, 1 msg per chunk",
}


def measure(mode: str, address: str, streams: int, sidecar: Server) -> dict[str, float]:
    """One run; the sidecar's CPU per chunk when it serves the run."""
    before = cpu_seconds(sidecar.process.pid)
    out = subprocess.run(
        [sys.executable, "-m", "bench.ai_load", mode, address, str(streams), str(SECONDS), "0.5"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    result: dict[str, float] = json.loads(out)
    used = cpu_seconds(sidecar.process.pid) - before
    result["sidecar_cpu_us"] = used / max(result["chunks"], 1) * 1e6 if mode != "direct" else 0.0
    return result


def main() -> int:
    upstream_address = f"127.0.0.1:{free_port()}"
    sidecar_address = f"127.0.0.1:{free_port()}"
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    upstream_process = subprocess.Popen(
        [sys.executable, "-m", "ai.fake_llm", upstream_address, str(WORDS)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
        cwd=ROOT,
    )
    upstream = start("fake upstream", [], upstream_address, upstream_process)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sidecar.yaml"
        config.write_text(CONFIG.format(upstream=upstream_address))
        sidecar = start(
            "sidecar",
            serve_command(config, sidecar_address),
            sidecar_address,
        )
        try:
            _report(upstream_address, sidecar_address, sidecar)
        finally:
            for server in (sidecar, upstream):
                server.process.terminate()
                server.process.wait(10)
    return 0


def _report(upstream: str, sidecar_address: str, sidecar: Server) -> None:
    print(
        f"\n# AI streaming, {WORDS} chunks per answer (OpenAI SSE format, local server), "
        f"{SECONDS:.0f}s x {REPEATS} interleaved repeats, medians (clock tick {CLK_TCK}/s)"
    )
    print(
        f"{'case':<26}{'streams':>8}{'TTFT p50 ms':>13}{'chunks/s':>10}{'msgs/s':>9}"
        f"{'sidecar cpu us/chunk':>22}"
    )
    addresses = {"direct": upstream, "sidecar": sidecar_address, "exact": sidecar_address}
    for streams in STREAMS:
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in LABELS}
        for _ in range(REPEATS):
            for mode, results in runs.items():
                results.append(measure(mode, addresses[mode], streams, sidecar))
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


if __name__ == "__main__":
    raise SystemExit(main())
