"""AI load generator, run as its own process: N concurrent streamed completions for a fixed
time, either with the `openai` SDK directly against the upstream or through the sidecar's
StreamComplete; prints one JSON line.

Chunks are counted as upstream chunks in every mode (the fake upstream sends one word per
chunk), so a sidecar message carrying several chunks, when the client falls behind, counts
as what it carries; `messages` counts gRPC messages separately. `all_chunks` counts the
chunks of the whole run, warm-up and the answers finishing after the window included: what
a server's CPU over the whole run is divided by.

Modes: `direct` (the openai SDK against the upstream), `sidecar` (StreamComplete on the
merging service), `exact` (on the `coalesce_chunks: false` one), `paced` (on the
`coalesce_chunks: false` one whose upstream is paced), `floor` (the bare grpc.aio stream of
`bench/ai.py --floor`: WORDS messages per call, one every DELAY seconds).

Usage: python -m bench.ai_load MODE ADDRESS STREAMS SECONDS WARMUP [WORDS DELAY]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

PROMPT = [{"role": "user", "content": "Count for the benchmark, please."}]
FLOOR_METHOD = "/bench.AIFloor/Stream"
TARGETS = {"sidecar": "bench", "exact": "bench-exact", "paced": "bench-paced"}


class Tally:
    """What the measured window saw."""

    def __init__(self) -> None:
        self.measuring = False
        self.ttfts: list[float] = []
        self.chunks = 0
        self.messages = 0
        self.all_chunks = 0

    def first(self, seconds: float, started_measuring: bool) -> None:
        if started_measuring:
            self.ttfts.append(seconds)

    def add(self, chunks: int) -> None:
        self.all_chunks += chunks
        if self.measuring:
            self.chunks += chunks
            self.messages += 1


def _direct(address: str, tally: Tally) -> Callable[[], Awaitable[None]]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"http://{address}/v1", api_key="bench", max_retries=0)

    async def one() -> None:
        measured = tally.measuring
        started = time.perf_counter()
        first = True
        stream = await client.chat.completions.create(
            model="bench-model",
            messages=PROMPT,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                if first:
                    tally.first(time.perf_counter() - started, measured)
                    first = False
                tally.add(1)

    return one


def _sidecar(
    address: str, tally: Tally, target: str, floor: str | None = None
) -> Callable[[], Awaitable[None]]:
    """StreamComplete calls on `target`; or, given `floor` (its request), calls of the bare
    floor stream, read by the same code."""
    import grpc

    from generated.integration.v1 import ai_pb2, ai_pb2_grpc

    channel = grpc.aio.insecure_channel(address)
    if floor is None:
        stub = ai_pb2_grpc.AIServiceStub(channel)
        request = ai_pb2.StreamCompleteRequest(
            target=target,
            messages=[ai_pb2.ChatMessage(role=ai_pb2.ROLE_USER, content=PROMPT[0]["content"])],
        )

        def call() -> Any:
            return stub.StreamComplete(request)
    else:
        method = channel.unary_stream(
            FLOOR_METHOD, response_deserializer=ai_pb2.StreamCompleteResponse.FromString
        )

        def call() -> Any:
            return method(floor.encode())

    async def one() -> None:
        measured = tally.measuring
        started = time.perf_counter()
        first = True
        async for message in call():
            content = message.content
            if content:
                if first:
                    tally.first(time.perf_counter() - started, measured)
                    first = False
                tally.add(content.count(" ") + (not content.endswith(" ")))

    return one


async def run(
    mode: str, address: str, streams: int, seconds: float, warmup: float, floor: str
) -> None:
    tally = Tally()
    if mode == "direct":
        one = _direct(address, tally)
    elif mode == "floor":
        one = _sidecar(address, tally, "", floor)
    else:
        one = _sidecar(address, tally, TARGETS[mode])
    stop_at = time.perf_counter() + warmup + seconds

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            await one()

    tasks = [asyncio.create_task(worker()) for _ in range(streams)]
    await asyncio.sleep(warmup)
    tally.measuring = True
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    tally.measuring = False
    elapsed = time.perf_counter() - started
    await asyncio.gather(*tasks)
    result: dict[str, Any] = {
        "ttft_p50_ms": statistics.median(tally.ttfts) * 1e3 if tally.ttfts else 0.0,
        "chunks_per_s": tally.chunks / elapsed,
        "messages_per_s": tally.messages / elapsed,
        "chunks": tally.chunks,
        "all_chunks": tally.all_chunks,
        "streams": len(tally.ttfts),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    mode, address, streams, seconds, warmup = sys.argv[1:6]
    floor = " ".join(sys.argv[6:8])  # the floor's request: "WORDS DELAY"
    asyncio.run(run(mode, address, int(streams), float(seconds), float(warmup), floor))
