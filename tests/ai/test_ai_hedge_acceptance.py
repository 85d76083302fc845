"""Issue #17's hedging acceptance, at full size, on the system clock: deployment A sends its
first chunk 2 s late on 20% of calls (which ones is drawn from a seeded RNG), B always at
50 ms; 200 calls through the real gRPC stub, one every 10 ms, at most 20 at a time.

With `hedge: {after: 300ms}`, the p99 time to first chunk is at most `after` + 100 ms,
every hedged loser's upstream request is closed at once (the fake counts open requests),
and no answer mixes the two deployments' texts (each fake has its own words).

The sidecar runs as its own process, as deployed: in the test's process it would share one
event loop and one garbage collector with the client and both fakes, and a full collection
of everything pytest has loaded (over 100 ms) would be measured as the sidecar's latency.
Calls arrive at a steady rate (as independent callers' calls do) rather than each slot
starting its next call the moment the last one ends: that closed loop keeps both cores
busy with fast calls, and the p99 would measure the queue for the CPU, not the hedge.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from ai.fake_llm import FakeLLM, Step
from ai.helpers import config, model, text_of, user
from prometheus_client.parser import text_string_to_metric_families
from sidecar_process import free_address, sidecar_process

from generated.integration.v1 import ai_pb2, ai_pb2_grpc

pytestmark = pytest.mark.e2e

CALLS, CONCURRENCY, SPACING, SLOW_SHARE = 200, 20, 0.01, 0.2
AFTER, MARGIN = 0.3, 0.1
SLOW, PROMPT = 2.0, 0.05
PRIMARY_TEXT = "Hello from the fake model."  # the `fake` fixture's words
BACKUP_TEXT = "Backup answer."  # the `backup` fixture's words
ALIAS = f"""\
  chat:
    type: ai_alias
    retry_policy: {{max_retries: 0}}
    deployments: [primary, backup]
    hedge: {{after: {AFTER * 1000:.0f}ms}}
"""


def _p99(values: list[float]) -> float:
    """Nearest-rank 99th percentile."""
    ordered = sorted(values)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


async def _outcomes(metrics: str) -> dict[tuple[str, str], float]:
    """`integration_ai_requests_total` by deployment and outcome, scraped from /metrics."""

    def get() -> str:
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as response:
            body: bytes = response.read()
        return body.decode()

    return {
        (sample.labels["deployment"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(await asyncio.to_thread(get))
        for sample in family.samples
        if sample.name == "integration_ai_requests_total"
    }


async def test_hedging_cuts_a_2s_tail_to_after_plus_100ms_closing_every_loser(
    fake: FakeLLM, backup: FakeLLM, tmp_path: Path
) -> None:
    slow = set(random.Random(17).sample(range(CALLS), int(CALLS * SLOW_SHARE)))
    # Requests take script steps in arrival order, so `fake.completions[i]` took step i.
    fake.then(*(Step(first_delay=SLOW) if i in slow else Step() for i in range(CALLS)))
    backup.default = Step(first_delay=PROMPT)
    metrics = free_address()
    services = config(model("primary", fake.url) + model("backup", backup.url), ALIAS)
    yaml_text = f'integration:\n  metrics: {{prometheus_listen: "{metrics}"}}\n{services}'
    async with (
        sidecar_process(tmp_path, yaml_text) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        stub = ai_pb2_grpc.AIServiceStub(channel)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(index: int) -> tuple[float, str, list[str]]:
            await asyncio.sleep(index * SPACING)
            async with gate:
                request = ai_pb2.StreamCompleteRequest(target="chat", messages=user("hi"))
                messages: list[ai_pb2.StreamCompleteResponse] = []
                first_chunk = 0.0
                started = time.perf_counter()
                async for message in stub.StreamComplete(request, timeout=20):
                    first_chunk = first_chunk or time.perf_counter() - started
                    messages.append(message)
            ends = [m.end.deployment for m in messages if m.HasField("end")]
            return first_chunk, text_of(messages), ends

        results = await asyncio.gather(*(one(i) for i in range(CALLS)))
        exchanges = [*fake.completions, *backup.completions]
        await asyncio.wait_for(asyncio.gather(*(e.closed.wait() for e in exchanges)), 5)
        outcomes = await _outcomes(metrics)

    firsts = [first for first, _, _ in results]
    slowest = sorted((round(first * 1000), i, ends) for i, (first, _, ends) in enumerate(results))
    assert _p99(firsts) <= AFTER + MARGIN, f"slowest first chunks (ms, call, by): {slowest[-5:]}"
    # One deployment per answer: its whole text, and the end naming it.
    answers = {PRIMARY_TEXT: ["primary/fake-model"], BACKUP_TEXT: ["backup/fake-model"]}
    assert all(answers.get(text) == ends for _, text, ends in results)
    assert sum(text == BACKUP_TEXT for _, text, _ in results) == len(slow)
    # Exactly the slow requests lost their hedge, each closed by the sidecar long before
    # its 2 s first chunk; every other request finished; none is left open.
    assert len(fake.completions) == CALLS and len(backup.completions) == len(slow)
    lost = {i for i, e in enumerate(fake.completions) if e.finished is None}
    assert lost == slow
    for i in lost:
        closed = fake.completions[i].client_closed
        assert closed is not None and closed - fake.completions[i].started < SLOW / 2
    assert all(e.finished is not None for e in backup.completions)
    assert fake.open_requests == 0 and backup.open_requests == 0
    # Each loser was settled as such, each hedge answered.
    assert outcomes[("primary/fake-model", "HEDGE_LOST")] == len(slow)
    assert outcomes[("primary/fake-model", "OK")] == CALLS - len(slow)
    assert outcomes[("backup/fake-model", "OK")] == len(slow)
