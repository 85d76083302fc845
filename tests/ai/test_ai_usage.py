"""Exact usage on every way a stream ends: completed, cancelled by the client, deadline
passed, upstream cut mid-stream, fallen over.

The fake upstream records the answer tokens it sent (one per word). Whatever ends the
stream, the GenAI token-usage metric records that many output tokens and the deployment's
token budget is settled to the attempt's usage instead of its reservation. The upstream's
own usage (asked for with `stream_options.include_usage`) counts when the stream
completes; otherwise the prompt is the sidecar's estimate ("hi" is 8 tokens) and the
output the count of what was streamed. The budget runs on a FakeClock, so it never
refills during a test.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from ai.fake_llm import FakeLLM, Step
from ai.helpers import (
    AISidecar,
    ai_sidecar,
    config,
    model,
    read_stream,
    text_of,
    token_usage,
    user,
)
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from support import error_info

from generated.integration.v1 import ai_pb2
from sidecar.testing import FakeClock

BUDGET = 6000
PROMPT_ESTIMATE = 8  # "hi": 3 + 4 for the message + 1
WORDS = [f"w{i}" for i in range(30)]
LIMIT = "rate_limit: {tokens_per_minute: 6000}"
ALIAS = """\
  chat:
    type: ai_alias
    retry_policy: {max_retries: 0}
    deployments: [primary, backup]
"""


def _left(ai: AISidecar, target: str) -> float:
    """Tokens left in the budget of `target`'s first deployment."""
    servicer = ai.running.servicers["integration.v1.AIService"]
    tokens = servicer.router.route(target).deployments[0].tokens
    assert tokens is not None
    return tokens.snapshot().available


def _stream(ai: AISidecar, target: str = "openai", timeout: float = 10) -> object:
    request = ai_pb2.StreamCompleteRequest(target=target, messages=user("hi"), max_tokens=200)
    return ai.stub.StreamComplete(request, timeout=timeout)


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


async def test_a_completed_stream_is_settled_with_the_upstreams_usage(
    fake: FakeLLM, reader: InMemoryMetricReader
) -> None:
    service = model("openai", fake.url, extra=LIMIT)
    async with ai_sidecar(config(service), clock=FakeClock(), metric_readers=[reader]) as ai:
        messages, error = await read_stream(_stream(ai))
        usage = await token_usage(reader, "openai/fake-model")
        left = _left(ai, "openai")
    assert error is None and text_of(messages) == "Hello from the fake model."
    (exchange,) = fake.completions
    assert exchange.request.json()["stream_options"] == {"include_usage": True}
    assert usage == {"input": 4, "output": exchange.tokens_sent} == {"input": 4, "output": 5}
    assert left == BUDGET - 9


async def test_a_stream_the_client_cancels_is_settled_with_what_was_streamed(
    fake: FakeLLM, reader: InMemoryMetricReader
) -> None:
    fake.words = WORDS
    fake.then(Step(stall_after=11))  # the role chunk and 10 words, then nothing
    service = model("openai", fake.url, extra=LIMIT)
    async with ai_sidecar(config(service), clock=FakeClock(), metric_readers=[reader]) as ai:
        call = _stream(ai)
        text = ""
        async for message in call:  # type: ignore[attr-defined]
            text += message.content
            if len(text.split()) == 10:
                break
        call.cancel()  # type: ignore[attr-defined]
        usage = await token_usage(reader, "openai/fake-model")
        left = _left(ai, "openai")
        (exchange,) = fake.completions
        await asyncio.wait_for(exchange.closed.wait(), 5)
    assert exchange.tokens_sent == 10
    assert usage == {"input": PROMPT_ESTIMATE, "output": 10}
    assert left == BUDGET - PROMPT_ESTIMATE - 10


async def test_a_stream_past_its_deadline_is_settled_with_what_was_streamed(
    fake: FakeLLM, reader: InMemoryMetricReader
) -> None:
    fake.words = WORDS
    fake.then(Step(stall_after=6))  # 5 words, then nothing until the deadline
    service = model("openai", fake.url, extra=LIMIT)
    async with ai_sidecar(config(service), clock=FakeClock(), metric_readers=[reader]) as ai:
        messages, error = await read_stream(_stream(ai, timeout=0.5))
        usage = await token_usage(reader, "openai/fake-model")
        left = _left(ai, "openai")
    assert error is not None and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(text_of(messages).split()) == 5
    (exchange,) = fake.completions
    assert exchange.tokens_sent == 5
    assert usage == {"input": PROMPT_ESTIMATE, "output": 5}
    assert left == BUDGET - PROMPT_ESTIMATE - 5


async def test_a_stream_the_upstream_cuts_is_settled_with_what_was_streamed(
    fake: FakeLLM, reader: InMemoryMetricReader
) -> None:
    fake.words = WORDS
    fake.then(Step(cut_after=8))  # the role chunk and 7 words, then the connection drops
    service = model("openai", fake.url, extra=LIMIT)
    async with ai_sidecar(config(service), clock=FakeClock(), metric_readers=[reader]) as ai:
        messages, error = await read_stream(_stream(ai))
        usage = await token_usage(reader, "openai/fake-model")
        left = _left(ai, "openai")
    assert error is not None and error_info(error).reason == "STREAM_INTERRUPTED"
    assert len(text_of(messages).split()) == 7
    (exchange,) = fake.completions
    assert exchange.tokens_sent == 7
    assert usage == {"input": PROMPT_ESTIMATE, "output": 7}
    assert left == BUDGET - PROMPT_ESTIMATE - 7


@pytest.mark.parametrize(
    ("failure", "spent"),
    [
        # The upstream refused: it spent nothing, the reservation is refunded in full.
        (Step(status=503), None),
        # It accepted the request, then cut before any text: the prompt is spent.
        (Step(cut_after=1), {"input": PROMPT_ESTIMATE, "output": 0}),
    ],
    ids=["refused", "cut-before-text"],
)
async def test_a_deployment_fallen_over_is_settled_with_what_it_streamed(
    fake: FakeLLM,
    backup: FakeLLM,
    reader: InMemoryMetricReader,
    failure: Step,
    spent: dict[str, int] | None,
) -> None:
    fake.then(failure)
    services = model("primary", fake.url, extra=LIMIT) + model("backup", backup.url, extra=LIMIT)
    async with ai_sidecar(
        config(services, ALIAS), clock=FakeClock(), metric_readers=[reader]
    ) as ai:
        messages, error = await read_stream(_stream(ai, "chat"))
        backup_usage = await token_usage(reader, "backup/fake-model")
        primary_usage = await token_usage(reader, "primary/fake-model", within=0)
        primary_left, backup_left = _left(ai, "primary"), _left(ai, "backup")
    assert error is None and text_of(messages) == "Backup answer."
    assert fake.completions[0].tokens_sent == 0
    assert primary_usage == (spent or {})
    assert primary_left == BUDGET - (spent or {}).get("input", 0)
    (exchange,) = backup.completions
    assert backup_usage == {"input": 4, "output": exchange.tokens_sent} == {"input": 4, "output": 2}
    assert backup_left == BUDGET - 6
